//! # reelfarm etcd
//!
//! How the coordinator and the workers reach etcd, one set of flags for both: TLS to
//! `https://` endpoints verified against `--etcd-ca-cert`, a client certificate
//! (`--etcd-cert`, `--etcd-key`) for etcd's `--client-cert-auth`, and etcd's own users
//! (`--etcd-user` with `--etcd-password-file`) for its `auth enable`. Files are read once,
//! at start; an unreadable one is an error naming its flag.

use std::path::PathBuf;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use reelfarm_proto::auth::read_flag_file;

/// The etcd security flags (flattened into the coordinator's and the worker's).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EtcdSecurity {
    /// PEM CA certificate of etcd's server certificate, for `https://` --etcd endpoints
    /// (default: the system's roots).
    #[arg(long, env = "REELFARM_ETCD_CA_CERT")]
    pub etcd_ca_cert: Option<PathBuf>,

    /// PEM client certificate for etcd's --client-cert-auth (with --etcd-key).
    #[arg(long, env = "REELFARM_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// PEM private key of --etcd-cert.
    #[arg(long, env = "REELFARM_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// etcd user (etcd's `auth enable`), with --etcd-password-file.
    #[arg(long, env = "REELFARM_ETCD_USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,

    /// A file holding --etcd-user's password (one line).
    #[arg(long, env = "REELFARM_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdSecurity {
    /// `options` with TLS (when any endpoint is `https://`) and the user, as the flags say.
    /// Certificate flags with only `http://` endpoints are an error: they would be ignored.
    pub fn apply(
        &self,
        endpoints: &[String],
        mut options: ConnectOptions,
    ) -> Result<ConnectOptions, String> {
        let https = endpoints.iter().any(|e| e.starts_with("https://"));
        let certificates = self.etcd_ca_cert.is_some() || self.etcd_cert.is_some();
        if certificates && !https {
            return Err(
                "--etcd-ca-cert/--etcd-cert are for https:// --etcd endpoints; the endpoints \
                 given are plaintext"
                    .into(),
            );
        }
        if https {
            let mut tls = TlsOptions::new();
            tls = match &self.etcd_ca_cert {
                Some(ca) => {
                    tls.ca_certificate(Certificate::from_pem(read_flag_file("--etcd-ca-cert", ca)?))
                }
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
                tls = tls.identity(Identity::from_pem(
                    read_flag_file("--etcd-cert", cert)?,
                    read_flag_file("--etcd-key", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        if let (Some(user), Some(file)) = (&self.etcd_user, &self.etcd_password_file) {
            let password = String::from_utf8(read_flag_file("--etcd-password-file", file)?)
                .map_err(|_| format!("--etcd-password-file {}: not UTF-8", file.display()))?;
            options = options.with_user(user, password.trim_end_matches(['\r', '\n']));
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_for_plaintext_endpoints_and_missing_files_are_errors() {
        let flags = EtcdSecurity {
            etcd_ca_cert: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = flags
            .apply(&["http://127.0.0.1:2379".into()], ConnectOptions::new())
            .unwrap_err();
        assert!(e.contains("https://"), "{e}");
        let e = flags
            .apply(&["https://127.0.0.1:2379".into()], ConnectOptions::new())
            .unwrap_err();
        assert!(e.starts_with("--etcd-ca-cert /nonexistent/ca.pem"), "{e}");
        assert!(EtcdSecurity::default()
            .apply(&["http://127.0.0.1:2379".into()], ConnectOptions::new())
            .is_ok());
    }
}

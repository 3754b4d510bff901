//! The client side of TLS to the coordinator, the same for workers and the CLI: an
//! `https://` address is verified against `--ca-cert` (else the system's roots), and a
//! worker may present a client certificate (`--tls-cert`, `--tls-key`) for mTLS.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::auth::read_flag_file;

/// What a client needs to speak TLS: the flags, read once. The default trusts the system's
/// roots and presents no certificate.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl Default for ClientTls {
    fn default() -> Self {
        Self {
            config: ClientTlsConfig::new().with_native_roots(),
        }
    }
}

impl ClientTls {
    /// Reads `--ca-cert` and the optional `--tls-cert`/`--tls-key` pair (both or neither).
    pub fn from_flags(
        ca_cert: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, String> {
        let mut config = ClientTlsConfig::new();
        match ca_cert {
            Some(path) => {
                let pem = read_flag_file("--ca-cert", path)?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!("--ca-cert {}: no PEM certificate", path.display()));
                }
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => config = config.with_native_roots(),
        }
        match (cert, key) {
            (Some(c), Some(k)) => {
                config = config.identity(Identity::from_pem(
                    read_flag_file("--tls-cert", c)?,
                    read_flag_file("--tls-key", k)?,
                ));
            }
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".into()),
        }
        Ok(Self { config })
    }

    /// `endpoint` (of `addr`) speaking TLS when `addr` is `https://`. A plaintext
    /// `http://` address stays plaintext: the address says which, as in every gRPC client.
    pub fn apply(&self, endpoint: Endpoint, addr: &str) -> Result<Endpoint, String> {
        if !addr.starts_with("https://") {
            return Ok(endpoint);
        }
        endpoint
            .tls_config(self.config.clone())
            .map_err(|e| format!("TLS for {addr}: {e}"))
    }
}

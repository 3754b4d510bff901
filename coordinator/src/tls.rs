//! TLS on the gRPC port and the HTTP port (rustls): `--tls-cert` and `--tls-key` (PEM),
//! reloaded when the files change, and `--client-ca` for workers' client certificates
//! (mTLS, gRPC only).
//!
//! Reloading: the certificate is served by a resolver that every new handshake asks, and a
//! task re-reads both files every [`RELOAD_CHECK`] and swaps the pair when their bytes
//! changed (Kubernetes rotates a mounted Secret by swapping a symlink, so comparing bytes
//! catches it where a file's mtime may not). Connections already open keep the session they
//! negotiated: a rotation drops no stream. A pair that does not load (a half-written file,
//! a key that is not the certificate's) is logged and counted, and the previous pair stays.
//!
//! Client certificates: with `--client-ca`, a client may present a certificate, which must
//! chain to that CA; clients without one (the CLI, with an API key) are still admitted, and
//! WorkerService decides what a certificate is worth ([`peer_worker_names`]). The CA file is
//! re-read like the pair ([`ReloadingClientCa`]), so a CA rotation (old and new CA in the
//! file for a while) needs no restart either.
//!
//! Handshakes run on their own tasks, each bounded by [`HANDSHAKE_TIMEOUT`], so a client
//! that connects and says nothing (or speaks plaintext) holds up no one else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus::IntCounterVec;
use reelfarm_proto::auth::read_flag_file;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are re-read.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of `--tls-cert`, `--tls-key` and `--client-ca`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and its key from PEM bytes; an error names what is wrong.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert: not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("--tls-cert: no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("--tls-key: not a PEM private key: {e}"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("--tls-key: {e}"))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|e| format!("--tls-key is not the key of --tls-cert: {e}"))?;
    Ok(pair)
}

/// How a [`FileBacked`] value is built from its files' bytes.
type Build<T> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync>;

/// A value built from files and rebuilt when their bytes change: the one reload mechanism
/// behind [`ReloadingCert`] and [`ReloadingClientCa`].
struct FileBacked<T> {
    /// (flag, file) pairs, read in this order and handed to `build` as such.
    files: Vec<(&'static str, PathBuf)>,
    build: Build<T>,
    current: RwLock<T>,
    /// The bytes `current` was built from.
    loaded: Mutex<Vec<Vec<u8>>>,
}

impl<T: Clone> FileBacked<T> {
    fn load(
        files: Vec<(&'static str, PathBuf)>,
        build: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let bytes = read_all(&files)?;
        let value = build(&bytes)?;
        Ok(Self {
            files,
            build: Box::new(build),
            current: RwLock::new(value),
            loaded: Mutex::new(bytes),
        })
    }

    /// Re-reads the files: `Ok(true)` when a new value is now in use, `Ok(false)` when they
    /// did not change, `Err` (the old value kept) when they changed but do not build.
    fn reload(&self) -> Result<bool, String> {
        let bytes = read_all(&self.files)?;
        let mut loaded = self.loaded.lock();
        if *loaded == bytes {
            return Ok(false);
        }
        *self.current.write() = (self.build)(&bytes)?;
        *loaded = bytes;
        Ok(true)
    }

    fn get(&self) -> T {
        self.current.read().clone()
    }
}

impl<T> std::fmt::Debug for FileBacked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBacked")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read_all(files: &[(&'static str, PathBuf)]) -> Result<Vec<Vec<u8>>, String> {
    files
        .iter()
        .map(|(flag, path)| read_flag_file(flag, path))
        .collect()
}

/// Serves the current pair to every handshake; see the module docs.
#[derive(Debug)]
pub struct ReloadingCert(FileBacked<Arc<CertifiedKey>>);

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

impl ReloadingCert {
    fn load(files: &TlsFiles) -> Result<Self, String> {
        let files = vec![
            ("--tls-cert", files.cert.clone()),
            ("--tls-key", files.key.clone()),
        ];
        FileBacked::load(files, |b| certified_key(&b[0], &b[1]).map(Arc::new)).map(Self)
    }

    /// See [`FileBacked::reload`].
    pub fn reload(&self) -> Result<bool, String> {
        self.0.reload()
    }
}

/// The verifier of workers' client certificates, rebuilt when `--client-ca` changes.
#[derive(Debug)]
pub struct ReloadingClientCa(FileBacked<Arc<dyn rustls::server::danger::ClientCertVerifier>>);

fn client_verifier(
    path: &Path,
    pem: &[u8],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pem) {
        let ca = ca.map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
        roots
            .add(ca)
            .map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--client-ca {}: no certificate", path.display()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        // Clients with API keys present no certificate; WorkerService decides what a
        // certificate (or its absence) is worth.
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("--client-ca {}: {e}", path.display()))
}

impl ReloadingClientCa {
    fn load(path: PathBuf) -> Result<Self, String> {
        let shown = path.clone();
        FileBacked::load(vec![("--client-ca", path)], move |b| {
            client_verifier(&shown, &b[0])
        })
        .map(Self)
    }

    /// See [`FileBacked::reload`].
    pub fn reload(&self) -> Result<bool, String> {
        self.0.reload()
    }

    fn inner(&self) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        self.0.get()
    }
}

impl rustls::server::danger::ClientCertVerifier for ReloadingClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // Hints are optional and the CA set may change under us: send none (a worker has
        // one certificate and presents it).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.inner()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// The coordinator's TLS: one reloading certificate (and client CA) behind the gRPC port's
/// acceptor (HTTP/2, client certificates checked against `--client-ca`) and the HTTP port's
/// (HTTP/1.1, no client certificates), so both serve the same pair and it is read once.
pub struct ServerTls {
    grpc: TlsAcceptor,
    http: TlsAcceptor,
    cert: Arc<ReloadingCert>,
    client_ca: Option<Arc<ReloadingClientCa>>,
}

impl ServerTls {
    /// Loads the files (an error names the flag and the file) and builds both acceptors.
    pub fn new(files: &TlsFiles) -> Result<Self, String> {
        let cert = Arc::new(ReloadingCert::load(files)?);
        let client_ca = files
            .client_ca
            .clone()
            .map(ReloadingClientCa::load)
            .transpose()?
            .map(Arc::new);
        let acceptor = |client_ca: Option<Arc<ReloadingClientCa>>, alpn: &[u8]| {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?;
            let builder = match client_ca {
                None => builder.with_no_client_auth(),
                Some(ca) => builder.with_client_cert_verifier(ca),
            };
            let mut config = builder.with_cert_resolver(cert.clone());
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok::<_, String>(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Self {
            grpc: acceptor(client_ca.clone(), b"h2")?,
            http: acceptor(None, b"http/1.1")?,
            cert,
            client_ca,
        })
    }

    /// Re-reads the certificate files (and `--client-ca`) every [`RELOAD_CHECK`] until
    /// `shutdown`.
    pub fn watch(&self, reloads: IntCounterVec, shutdown: CancellationToken) {
        let cert = self.cert.clone();
        let client_ca = self.client_ca.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RELOAD_CHECK) => {}
                }
                if let Some(ca) = &client_ca {
                    count_reload(&reloads, "--client-ca", ca.reload());
                }
                count_reload(&reloads, "--tls-cert/--tls-key", cert.reload());
            }
        });
    }

    /// The gRPC port's TLS connections of `listener` (see [`handshaken`]).
    pub fn grpc_incoming(
        &self,
        listener: TcpListener,
        refused: prometheus::IntCounter,
        shutdown: CancellationToken,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        handshaken(self.grpc.clone(), listener, refused, shutdown)
    }
}

/// The TLS connections of `listener`, handshaken on their own tasks; failed handshakes
/// (plaintext, a client certificate the CA did not sign, a timeout) are counted in
/// `refused` and dropped.
fn handshaken(
    acceptor: TlsAcceptor,
    listener: TcpListener,
    refused: prometheus::IntCounter,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, refused) = (acceptor.clone(), tx.clone(), refused.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        refused.inc();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        refused.inc();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Logs and counts what one re-read of `what`'s files found (unchanged: nothing).
fn count_reload(reloads: &IntCounterVec, what: &str, result: Result<bool, String>) {
    match result {
        Ok(false) => {}
        Ok(true) => {
            reloads.with_label_values(&["ok"]).inc();
            tracing::info!(files = what, "TLS files reloaded");
        }
        Err(e) => {
            reloads.with_label_values(&["error"]).inc();
            tracing::error!(files = what, error = %e,
                "TLS files changed but do not load; the previous ones stay in use");
        }
    }
}

/// A TLS listener for the HTTP port: connections handshaken as the gRPC port's are.
pub struct TlsListener {
    incoming: ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    pub fn new(
        tls: &ServerTls,
        listener: TcpListener,
        refused: prometheus::IntCounter,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            incoming: handshaken(tls.http.clone(), listener, refused, shutdown),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt as _;
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                    return (stream, peer);
                }
                Some(Err(_)) => continue,
                // The accept loop ended (shutdown): wait for the server to stop.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Whether the verified client certificate `leaf` names `worker_id` (as a DNS subject
/// alternative name): how a worker id is bound to its credential under mTLS.
pub fn certificate_names(leaf: &CertificateDer<'_>, worker_id: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(worker_id.to_ascii_lowercase()) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The DNS names a certificate carries, for error messages.
pub fn peer_worker_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(leaf)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_that_does_not_load_names_the_flag() {
        let e = certified_key(b"", b"").unwrap_err();
        assert!(e.starts_with("--tls-cert"), "{e}");
        let e = certified_key(
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            b"not a key",
        )
        .unwrap_err();
        assert!(e.contains("--tls-"), "{e}");
    }
}

//! A throwaway etcd server on free loopback ports, for benchmarks and end-to-end tests:
//! started from the `etcd` binary on PATH (Debian's etcd-server), with its data in a
//! temporary directory, killed and removed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer its health endpoint (it takes well under a second).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The files of an etcd serving TLS to its clients and requiring their certificates.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA clients' certificates must chain to (`--client-cert-auth`).
    pub client_ca: PathBuf,
}

/// A running etcd; killed on drop.
pub struct LocalEtcd {
    child: Option<Child>,
    /// Client URL, e.g. `http://127.0.0.1:23790` (`https://` with TLS).
    pub endpoint: String,
    peer_port: u16,
    /// Plain HTTP /health (and /metrics), so health is checked the same way with TLS.
    metrics_port: u16,
    tls: Option<EtcdTls>,
    data_dir: tempfile::TempDir,
    log_path: PathBuf,
}

/// A free TCP port on 127.0.0.1 for a server a test or benchmark starts.
///
/// The port comes from below the kernel's ephemeral range (`ip_local_port_range`), and no
/// port is handed out twice by one process. Asking the kernel for port 0 and releasing it
/// is not enough: the kernel hands that same port to the next outgoing connection of any
/// process (a gRPC client, etcd's own peers), and the server started on it a moment later
/// fails with "Address already in use" (seen in CI). Ports below the ephemeral range are
/// never picked for outgoing connections, so a port found free here stays free until the
/// server binds it, unless another process binds it on purpose.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = fixed_port_range();
    let span = u32::from(high - low);
    // Start each process at its own place, so test binaries run side by side (two
    // `cargo test` runs, a benchmark beside a test) rarely try the same ports.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + ((start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// Ports that the kernel does not pick for outgoing connections: those below its
/// ephemeral range (Linux default 32768-60999), down to 10000 to stay clear of the
/// well-known and registered ports services here listen on.
fn fixed_port_range() -> (u16, u16) {
    const LOW: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOW + 1_000 {
        (LOW, ephemeral_low)
    } else {
        // A kernel set to hand out nearly every port: use the top of the range, which
        // is handed out last.
        (60_000, 65_000)
    }
}

/// True when an `etcd` binary is on PATH.
pub fn available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl LocalEtcd {
    /// The etcd process id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts etcd and waits until it is healthy.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// Starts etcd serving clients over TLS only, with client certificates required.
    pub fn start_tls(tls: EtcdTls) -> anyhow::Result<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<EtcdTls>) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let (client_port, peer_port, metrics_port) = (free_port(), free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut etcd = Self {
            child: None,
            endpoint: format!("{scheme}://127.0.0.1:{client_port}"),
            peer_port,
            metrics_port,
            tls,
            log_path: data_dir.path().join("etcd.log"),
            data_dir,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let client = self.endpoint.clone();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.client_ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=reelfarm-test")
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{}",
                self.metrics_port
            ))
            .arg(format!(
                "--data-dir={}",
                self.data_dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=reelfarm-test={peer}"))
            .arg("--log-level=warn")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("starting etcd (is Debian's etcd-server installed?): {e}")
            })?;
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = format!("127.0.0.1:{}", self.metrics_port);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    anyhow::bail!("etcd exited with {status}; log: {}", self.log());
                }
            }
            if health_ok(&addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!(
            "etcd not healthy after {STARTUP_TIMEOUT:?}; log: {}",
            self.log()
        )
    }

    /// Kills etcd (SIGKILL) and starts it again on the same ports and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Kills etcd (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// etcd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// GET /health over plain HTTP/1.0 (no HTTP client dependency needed for one request).
fn health_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("loopback address"),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

//! Finding and dialing a coordinator: which address to try next, and how long to wait.
//!
//! Any coordinator replica accepts the dial, but only the leader accepts a session: a
//! follower refuses it with UNAVAILABLE and, when it knows the leader, names it in the
//! `reelfarm-leader` response metadata ([`leader_hint`]). The [`Connector`] follows such a hint
//! first; otherwise it alternates between the leader etcd names (with `--etcd`,
//! [`LeaderLookup`]) and the next `--coordinator` address, so a leader address this worker
//! cannot reach does not stop it from trying the others. Between attempts it backs off
//! exponentially from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], starting again from the bottom after
//! a session that lasted or a fresh hint.

use std::time::{Duration, Instant};

// MAX_MESSAGE_BYTES: the largest message either way on the session stream; a content check
// carries its file (up to 64 MiB), assignments and results name artifacts rather than carry them.
use reelfarm_proto::limits::MAX_MESSAGE_BYTES;
use reelfarm_proto::v1::worker_service_client::WorkerServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A session that lasted this long was healthy: the next failure backs off from the bottom.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// Connect timeout for one coordinator address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Finds the leader's address in etcd.
pub(crate) struct LeaderLookup {
    pub(crate) client: etcd_client::Client,
    /// The election whose leader value is the leader's address.
    pub(crate) election: String,
}

impl LeaderLookup {
    /// The elected leader's address; `None` when etcd does not answer or no one leads.
    async fn leader(&self) -> Option<String> {
        let mut elections = self.client.election_client();
        let resp = elections.leader(self.election.clone()).await.ok()?;
        resp.kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .filter(|a| !a.is_empty())
    }
}

/// Which coordinator to dial next and how long to wait before it (see the module docs).
pub(crate) struct Connector<'a> {
    coordinators: &'a [String],
    leader_lookup: Option<&'a LeaderLookup>,
    /// Index of the next `--coordinator` address, modulo their count.
    next: usize,
    /// The leader a follower named: dialed next, once.
    hint: Option<String>,
    /// Whether the last address came from etcd: the next one comes from the list.
    asked_etcd: bool,
    backoff: Duration,
}

impl<'a> Connector<'a> {
    /// A connector over the configured addresses (at least one) and, with `--etcd`, the
    /// election.
    pub(crate) fn new(coordinators: &'a [String], leader_lookup: Option<&'a LeaderLookup>) -> Self {
        Self {
            coordinators,
            leader_lookup,
            next: 0,
            hint: None,
            asked_etcd: false,
            backoff: BACKOFF_MIN,
        }
    }

    /// The address to dial now: the leader a follower named, else etcd's leader and the
    /// configured list in turn.
    pub(crate) async fn next_address(&mut self) -> String {
        if let Some(a) = self.hint.take() {
            return a;
        }
        let from_etcd = match (self.leader_lookup, self.asked_etcd) {
            (Some(l), false) => l.leader().await,
            _ => None,
        };
        self.asked_etcd = from_etcd.is_some();
        from_etcd.unwrap_or_else(|| {
            self.next += 1;
            self.coordinators[(self.next - 1) % self.coordinators.len()].clone()
        })
    }

    /// A session registered: the leader may have moved by the time it ends, so etcd is asked
    /// again first.
    pub(crate) fn registered(&mut self) {
        self.asked_etcd = false;
    }

    /// The session with `addr`, started at `started`, ended; `leader` is the leader a
    /// follower named, if one did.
    pub(crate) fn ended(&mut self, addr: &str, started: Instant, leader: Option<String>) {
        if started.elapsed() > STABLE_SESSION {
            self.backoff = BACKOFF_MIN;
        }
        if let Some(leader) = leader.filter(|l| *l != addr) {
            tracing::info!(leader = %leader, "following the leader");
            self.hint = Some(leader);
            self.backoff = BACKOFF_MIN;
        }
    }

    /// Sleeps the current backoff and doubles it (up to [`BACKOFF_MAX`]). Returns false,
    /// at once, when `shutdown` is cancelled meanwhile.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = shutdown.cancelled() => return false,
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        true
    }
}

/// Opens a channel to the coordinator at `addr` (a URI such as `http://host:port`). The
/// error says what failed, for the session's log line.
pub(crate) async fn dial(
    addr: &str,
    tls: &reelfarm_proto::tls::ClientTls,
) -> Result<WorkerServiceClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("bad coordinator address {addr}: {e}"))?;
    let endpoint = tls.apply(endpoint, addr)?;
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// The leader a follower named when it refused the session with `status`, if it did.
pub(crate) fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(reelfarm_proto::cluster::LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses() -> Vec<String> {
        vec!["http://a:1".into(), "http://b:2".into()]
    }

    #[tokio::test]
    async fn without_etcd_the_configured_addresses_are_tried_in_turn() {
        let coordinators = addresses();
        let mut c = Connector::new(&coordinators, None);
        let tried = [
            c.next_address().await,
            c.next_address().await,
            c.next_address().await,
        ];
        assert_eq!(
            tried,
            ["http://a:1", "http://b:2", "http://a:1"],
            "round robin over --coordinator"
        );
    }

    #[tokio::test]
    async fn a_followers_leader_hint_is_dialed_next_and_only_once() {
        let coordinators = addresses();
        let mut c = Connector::new(&coordinators, None);
        let first = c.next_address().await;
        c.ended(&first, Instant::now(), Some("http://leader:3".into()));
        assert_eq!(
            c.next_address().await,
            "http://leader:3",
            "the hint comes first"
        );
        assert_eq!(
            c.next_address().await,
            "http://b:2",
            "then the list goes on where it was"
        );
    }

    #[tokio::test]
    async fn a_hint_naming_the_refusing_address_itself_is_ignored() {
        let coordinators = addresses();
        let mut c = Connector::new(&coordinators, None);
        let first = c.next_address().await;
        c.ended(&first, Instant::now(), Some(first.clone()));
        assert_eq!(
            c.next_address().await,
            "http://b:2",
            "no loop on a replica that names itself"
        );
    }

    #[tokio::test]
    async fn backoff_doubles_stops_at_shutdown_and_restarts_after_a_hint() {
        let coordinators = addresses();
        let mut c = Connector::new(&coordinators, None);
        let running = CancellationToken::new();
        assert!(c.wait(&running).await, "no shutdown: the wait completes");
        assert_eq!(c.backoff, BACKOFF_MIN * 2, "each wait doubles the next");
        c.backoff = BACKOFF_MAX;
        let stopped = CancellationToken::new();
        stopped.cancel();
        assert!(!c.wait(&stopped).await, "shutdown cuts the wait short");
        assert_eq!(c.backoff, BACKOFF_MAX, "an interrupted wait is not doubled");
        c.ended("http://a:1", Instant::now(), Some("http://leader:3".into()));
        assert_eq!(c.backoff, BACKOFF_MIN, "a fresh hint is tried at once");
    }

    #[test]
    fn leader_hint_reads_the_leader_metadata_of_a_refusal() {
        let mut refused = tonic::Status::unavailable("this coordinator is not the leader");
        refused.metadata_mut().insert(
            reelfarm_proto::cluster::LEADER_METADATA,
            "http://leader:3".parse().expect("ASCII metadata value"),
        );
        assert_eq!(
            leader_hint(&refused).as_deref(),
            Some("http://leader:3"),
            "the follower's hint"
        );
        assert_eq!(
            leader_hint(&tonic::Status::unavailable("no leader elected yet")),
            None,
            "no metadata, no hint"
        );
    }
}

//! [`StateStore`] on etcd, for clusters.
//!
//! Keys are laid out by [`ClusterKeys`] (`reelfarm-domain`, shared with the workers, which
//! register under them); values are JSON, readable with `etcdctl get --prefix /reelfarm/`.
//!
//! Every transaction compares the term key with the caller's term, so a deposed coordinator
//! cannot write. Commits arriving together are packed into one transaction (group commit):
//! task results from many workers cost one etcd round trip, which is what lets the
//! scheduler reach tens of thousands of tasks per second on etcd.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use reelfarm_domain::ClusterKeys;
use tokio::sync::{mpsc, oneshot};

use super::{
    idempotency_scope, CreateOutcome, Snapshot, StateStore, StoreError, StoreResult, Write,
};
use crate::model::{ApiKeyRecord, JobRecord, TaskCheckpoint, TaskCompletion};

/// Keys per page when loading the state: well under etcd's and gRPC's message limits even
/// for large job records.
const LOAD_PAGE: i64 = 200;
/// How long one etcd request may take before the store reports it unavailable. etcd answers
/// in milliseconds on a healthy cluster; 5 s covers a leader election inside etcd.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes packed into one transaction at most. etcd's default `--max-txn-ops` is 128; a
/// write costs one put and at most one compare, so 100 leaves room for the term compare.
const MAX_WRITES_PER_TXN: usize = 100;

/// The value of a cordon key: which worker, since when (for `etcdctl` readers).
#[derive(serde::Serialize, serde::Deserialize)]
struct CordonRecord {
    worker_id: String,
    since_ms: u64,
}

/// Connects to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`), with TLS and a user as
/// `security` says.
pub async fn connect(
    endpoints: &[String],
    security: &reelfarm_etcd::EtcdSecurity,
) -> StoreResult<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), REQUEST_TIMEOUT);
    let options = security
        .apply(endpoints, options)
        .map_err(StoreError::Unavailable)?;
    tokio::time::timeout(
        REQUEST_TIMEOUT * 2,
        Client::connect(endpoints, Some(options)),
    )
    .await
    .map_err(|_| StoreError::Unavailable(format!("connecting to etcd at {endpoints:?} timed out")))?
    .map_err(unavailable)
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> StoreResult<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| StoreError::Unavailable("etcd request timed out".into()))?
        .map_err(unavailable)
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records are plain data")
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

struct CommitRequest {
    term: u64,
    writes: Vec<Write>,
    done: oneshot::Sender<StoreResult<()>>,
}

/// See the module docs.
pub struct EtcdStore {
    client: Client,
    keys: ClusterKeys,
    commits: mpsc::UnboundedSender<CommitRequest>,
}

/// Every key under `prefix` (which ends in '/'), read in pages of [`LOAD_PAGE`] keys (a
/// farm's history does not fit in one gRPC message), all at one revision: `at`, or the
/// first page's. Returns the key-values and that revision. Public so that tests read a
/// farm's keys the way the store does.
pub async fn get_prefix_paged(
    kv: &mut etcd_client::KvClient,
    prefix: &str,
    at: Option<i64>,
) -> StoreResult<(Vec<etcd_client::KeyValue>, i64)> {
    let mut end = prefix.as_bytes().to_vec();
    // The prefix ends in '/', so incrementing its last byte cannot overflow.
    *end.last_mut().expect("non-empty prefix") += 1;
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = at;
    let mut out = Vec::new();
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(LOAD_PAGE)
            .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
        if let Some(r) = revision {
            options = options.with_revision(r);
        }
        let mut resp = timed(kv.get(from.clone(), Some(options))).await?;
        let header_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let revision = *revision.get_or_insert(header_revision);
        let more = resp.more();
        let mut kvs = resp.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        let page_empty = kvs.is_empty();
        out.append(&mut kvs);
        if !more || page_empty {
            return Ok((out, revision));
        }
    }
}

impl EtcdStore {
    async fn get_prefix(
        &self,
        prefix: &str,
        at: Option<i64>,
    ) -> StoreResult<(Vec<etcd_client::KeyValue>, i64)> {
        get_prefix_paged(&mut self.client.kv_client(), prefix, at).await
    }

    /// A store for `cluster` on an open client; starts the group-commit task.
    pub fn new(client: Client, cluster: &str) -> Self {
        let keys = ClusterKeys::new(cluster);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(client.clone(), keys.clone(), rx));
        Self {
            client,
            keys,
            commits: tx,
        }
    }

    pub fn keys(&self) -> &ClusterKeys {
        &self.keys
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

async fn current_term(client: &Client, keys: &ClusterKeys) -> StoreResult<u64> {
    let resp = timed(client.kv_client().get(keys.term(), None)).await?;
    match resp.kvs().first() {
        None => Ok(0),
        Some(kv) => {
            String::from_utf8_lossy(kv.value())
                .parse()
                .map_err(|e: std::num::ParseIntError| StoreError::Corrupt {
                    key: keys.term(),
                    reason: e.to_string(),
                })
        }
    }
}

fn term_is(keys: &ClusterKeys, term: u64) -> Compare {
    Compare::value(keys.term(), CompareOp::Equal, term.to_string())
}

#[async_trait]
impl StateStore for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn begin_term(&self) -> StoreResult<u64> {
        loop {
            let resp = timed(self.client.kv_client().get(self.keys.term(), None)).await?;
            let (current, guard) = match resp.kvs().first() {
                None => (
                    0,
                    Compare::create_revision(self.keys.term(), CompareOp::Equal, 0),
                ),
                Some(kv) => (
                    String::from_utf8_lossy(kv.value())
                        .parse::<u64>()
                        .map_err(|e| StoreError::Corrupt {
                            key: self.keys.term(),
                            reason: e.to_string(),
                        })?,
                    Compare::mod_revision(self.keys.term(), CompareOp::Equal, kv.mod_revision()),
                ),
            };
            let next = current + 1;
            let txn = Txn::new().when([guard]).and_then([TxnOp::put(
                self.keys.term(),
                next.to_string(),
                None,
            )]);
            if timed(self.client.kv_client().txn(txn)).await?.succeeded() {
                return Ok(next);
            }
            // Another coordinator bumped the term between our read and write: read again.
        }
    }

    async fn load(&self) -> StoreResult<Snapshot> {
        let (jobs, revision) = self.get_prefix(&self.keys.jobs_prefix(), None).await?;
        let (results, _) = self
            .get_prefix(&self.keys.results_prefix(), Some(revision))
            .await?;
        let (cordons, _) = self
            .get_prefix(&self.keys.cordons_prefix(), Some(revision))
            .await?;
        let (checkpoints, _) = self
            .get_prefix(&self.keys.checkpoints_prefix(), Some(revision))
            .await?;
        let mut snapshot = Snapshot::default();
        for kv in &jobs {
            snapshot
                .jobs
                .push(decode::<JobRecord>(kv.key(), kv.value())?);
        }
        for kv in &results {
            snapshot
                .completions
                .push(decode::<TaskCompletion>(kv.key(), kv.value())?);
        }
        for kv in &checkpoints {
            snapshot
                .checkpoints
                .push(decode::<TaskCheckpoint>(kv.key(), kv.value())?);
        }
        for kv in &cordons {
            snapshot
                .cordoned
                .push(decode::<CordonRecord>(kv.key(), kv.value())?.worker_id);
        }
        Ok(snapshot)
    }

    async fn create_job(&self, term: u64, job: &JobRecord) -> StoreResult<CreateOutcome> {
        let job_key = self.keys.job(&job.id);
        let mut compares = vec![
            term_is(&self.keys, term),
            Compare::create_revision(job_key.clone(), CompareOp::Equal, 0),
        ];
        let mut puts = vec![TxnOp::put(job_key.clone(), encode(job), None)];
        let idem_key =
            idempotency_scope(job).map(|(tenant, key)| self.keys.idempotency(&tenant, &key));
        if let Some(k) = &idem_key {
            compares.push(Compare::create_revision(k.clone(), CompareOp::Equal, 0));
            puts.push(TxnOp::put(k.clone(), job.id.clone(), None));
        }
        let mut on_failure = vec![
            TxnOp::get(self.keys.term(), None),
            TxnOp::get(job_key, None),
        ];
        if let Some(k) = &idem_key {
            on_failure.push(TxnOp::get(k.clone(), None));
        }
        let txn = Txn::new().when(compares).and_then(puts).or_else(on_failure);
        let resp = timed(self.client.kv_client().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(CreateOutcome::Created);
        }
        // Find out which condition failed, from the reads of the failure branch.
        let reads: Vec<Option<Vec<u8>>> = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .collect();
        let stored_term = reads
            .first()
            .cloned()
            .flatten()
            .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok());
        if stored_term != Some(term) {
            return Err(StoreError::Fenced { ours: term });
        }
        if let Some(Some(existing)) = reads.get(2) {
            return Ok(CreateOutcome::Existing(
                String::from_utf8_lossy(existing).into_owned(),
            ));
        }
        Err(StoreError::JobExists(job.id.clone()))
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool> {
        let k = self.keys.api_key(&key.id);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, encode(key), None)]);
        Ok(timed(self.client.kv_client().txn(txn)).await?.succeeded())
    }

    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> StoreResult<Option<ApiKeyRecord>> {
        let k = self.keys.api_key(id);
        loop {
            let resp = timed(self.client.kv_client().get(k.clone(), None)).await?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(None);
            };
            let mut record: ApiKeyRecord = decode(kv.key(), kv.value())?;
            if record.revoked_ms.is_some() {
                return Ok(Some(record));
            }
            record.revoked_ms = Some(at_ms);
            // Conditioned on the revision read, so a concurrent revoke keeps its time.
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    k.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(k.clone(), encode(&record), None)]);
            if timed(self.client.kv_client().txn(txn)).await?.succeeded() {
                return Ok(Some(record));
            }
        }
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let (kvs, _) = self.get_prefix(&self.keys.api_keys_prefix(), None).await?;
        kvs.iter().map(|kv| decode(kv.key(), kv.value())).collect()
    }

    async fn commit(&self, term: u64, writes: Vec<Write>) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.commits
            .send(CommitRequest { term, writes, done })
            .map_err(|_| StoreError::Unavailable("commit task stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("commit task stopped".into()))?
    }
}

/// The group-commit loop: takes every request waiting, packs as many as fit into one
/// transaction, and answers each. If a packed transaction fails on a per-write condition
/// (a duplicate result), the requests are retried one by one so only the culprit fails.
async fn group_commit(
    client: Client,
    keys: ClusterKeys,
    mut rx: mpsc::UnboundedReceiver<CommitRequest>,
) {
    let mut carried: Option<CommitRequest> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut writes = ops(&batch[0].writes);
        while writes < MAX_WRITES_PER_TXN {
            match rx.try_recv() {
                Ok(req)
                    if req.term == batch[0].term
                        && writes + ops(&req.writes) <= MAX_WRITES_PER_TXN =>
                {
                    writes += ops(&req.writes);
                    batch.push(req);
                }
                Ok(req) if req.term == batch[0].term => {
                    // Does not fit: it starts the next transaction.
                    carried = Some(req);
                    break;
                }
                Ok(req) => {
                    // A different term cannot share the compare: commit it alone.
                    let result = commit_once(&client, &keys, req.term, &req.writes).await;
                    let _ = req.done.send(result);
                }
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            let req = batch.pop().expect("one request");
            let result = commit_once(&client, &keys, req.term, &req.writes).await;
            let _ = req.done.send(result);
            continue;
        }
        let term = batch[0].term;
        // Borrowed, not cloned: a job record can be large, and a batch holds a hundred.
        let all = batch.iter().flat_map(|r| r.writes.iter());
        match commit_once(&client, &keys, term, all).await {
            Ok(()) => {
                for req in batch {
                    let _ = req.done.send(Ok(()));
                }
            }
            Err(StoreError::Fenced { ours }) => {
                for req in batch {
                    let _ = req.done.send(Err(StoreError::Fenced { ours }));
                }
            }
            Err(_) => {
                for req in batch {
                    let result = commit_once(&client, &keys, req.term, &req.writes).await;
                    let _ = req.done.send(result);
                }
            }
        }
    }
}

/// Operations a list of writes puts in a transaction's success branch.
fn ops(writes: &[Write]) -> usize {
    writes
        .iter()
        .map(|w| match w {
            Write::TaskDone(_) | Write::Job(_) | Write::Cordon { .. } | Write::Checkpoint(_) => 1,
            Write::Forget { .. } => 4,
        })
        .sum()
}

async fn commit_once<'a>(
    client: &Client,
    keys: &ClusterKeys,
    term: u64,
    writes: impl IntoIterator<Item = &'a Write>,
) -> StoreResult<()> {
    let mut compares = vec![term_is(keys, term)];
    let mut puts = Vec::new();
    for w in writes {
        match w {
            Write::TaskDone(c) => {
                let key = keys.result(&c.job_id, c.task_index);
                compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                puts.push(TxnOp::put(key, encode(c), None));
            }
            Write::Job(job) => puts.push(TxnOp::put(keys.job(&job.id), encode(job.as_ref()), None)),
            Write::Checkpoint(c) => puts.push(TxnOp::put(
                keys.checkpoint(&c.job_id, c.task_index),
                encode(c),
                None,
            )),
            Write::Forget {
                job_id,
                idempotency,
            } => {
                puts.push(TxnOp::delete(keys.job(job_id), None));
                for prefix in [
                    keys.job_results_prefix(job_id),
                    keys.job_checkpoints_prefix(job_id),
                ] {
                    puts.push(TxnOp::delete(
                        prefix,
                        Some(etcd_client::DeleteOptions::new().with_prefix()),
                    ));
                }
                if let Some((tenant, key)) = idempotency {
                    puts.push(TxnOp::delete(keys.idempotency(tenant, key), None));
                }
            }
            Write::Cordon {
                worker_id,
                cordoned: true,
            } => {
                let record = CordonRecord {
                    worker_id: worker_id.clone(),
                    since_ms: crate::model::now_ms(),
                };
                puts.push(TxnOp::put(keys.cordon(worker_id), encode(&record), None));
            }
            Write::Cordon {
                worker_id,
                cordoned: false,
            } => puts.push(TxnOp::delete(keys.cordon(worker_id), None)),
        }
    }
    let txn = Txn::new().when(compares).and_then(puts);
    if timed(client.kv_client().txn(txn)).await?.succeeded() {
        return Ok(());
    }
    if current_term(client, keys).await? != term {
        return Err(StoreError::Fenced { ours: term });
    }
    Err(StoreError::Unavailable(
        "a task in this commit already has a committed result".into(),
    ))
}

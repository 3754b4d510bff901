//! The state-store contract (`reelfarm_coordinator::state::contract`) against a real etcd:
//! the same checks the memory backend passes in the coordinator's unit tests, so the etcd
//! backend cannot rot unnoticed.

use reelfarm::local_etcd::LocalEtcd;
use reelfarm_coordinator::state::contract::run_contract;
use reelfarm_coordinator::state::etcd::{connect, EtcdStore};

#[tokio::test]
async fn etcd_store_keeps_the_state_store_contract() {
    let etcd = LocalEtcd::start().expect("starting etcd (run scripts/test.sh to install it)");
    let client = connect(std::slice::from_ref(&etcd.endpoint), &Default::default())
        .await
        .expect("connecting to the test etcd");
    let store = EtcdStore::new(client, "contract");
    run_contract(&store).await;
}

#[tokio::test]
async fn etcd_store_contract_holds_per_cluster_prefix() {
    // Two clusters on one etcd are independent: the second starts from an empty store and
    // its own term, whatever the first wrote.
    let etcd = LocalEtcd::start().expect("starting etcd (run scripts/test.sh to install it)");
    let client = connect(std::slice::from_ref(&etcd.endpoint), &Default::default())
        .await
        .expect("connecting to the test etcd");
    run_contract(&EtcdStore::new(client.clone(), "first")).await;
    run_contract(&EtcdStore::new(client, "second")).await;
}

#[tokio::test]
async fn etcd_store_loads_a_history_larger_than_one_grpc_message() {
    use reelfarm_coordinator::model::{
        job::new_job_id, JobRecord, JobSpec, JobState, Priority, Sampler,
    };
    use reelfarm_coordinator::planner::{plan, PlannerConfig};
    use reelfarm_coordinator::state::StateStore;

    // 1,200 jobs of 67 tasks each are about 6 MB of records: more than the 4 MB a single
    // etcd range response may carry, so recovery must read in pages.
    const JOBS: usize = 1200;
    let etcd = LocalEtcd::start().expect("starting etcd (run scripts/test.sh to install it)");
    let client = connect(std::slice::from_ref(&etcd.endpoint), &Default::default())
        .await
        .expect("connecting to the test etcd");
    let store = EtcdStore::new(client, "history");
    let term = store.begin_term().await.expect("term");
    let spec = JobSpec {
        prompt: "a red rubber ball bouncing on a wooden floor, with a long prompt to make the record big".into(),
        duration_seconds: 20.0,
        fps: 60,
        width: 320,
        height: 180,
        seed: 1,
        steps: 20,
        sampler: Sampler::Ddim,
        audio: true,
        priority: Priority::Normal,
        tenant: "default".into(),
        labels: Default::default(),
        model: None,
    };
    let tasks = plan(&spec, PlannerConfig::default());
    let records: Vec<JobRecord> = (0..JOBS)
        .map(|i| JobRecord {
            id: new_job_id(1_700_000_000_000 + i as u64),
            spec: spec.clone(),
            state: JobState::Queued,
            idempotency_key: None,
            created_ms: 1,
            finished_ms: None,
            error: None,
            outputs: vec![],
            tasks: tasks.clone(),
            artifacts_swept: false,
            cached_from: None,
            merged_into: None,
            adjustments: vec![],
            error_code: None,
        })
        .collect();
    for batch in records.chunks(100) {
        let creates = batch.iter().map(|r| store.create_job(term, r));
        for outcome in futures::future::join_all(creates).await {
            outcome.expect("create");
        }
    }
    let snapshot = store.load().await.expect("loading a large history");
    assert_eq!(snapshot.jobs.len(), JOBS, "every job is loaded");
    let mut loaded: Vec<&str> = snapshot.jobs.iter().map(|j| j.id.as_str()).collect();
    let mut wanted: Vec<&str> = records.iter().map(|j| j.id.as_str()).collect();
    loaded.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(loaded, wanted, "exactly the stored jobs, none twice");
}

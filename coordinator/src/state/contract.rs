//! The contract every [`StateStore`] must keep, run against the memory backend here and
//! against a real etcd in `tests/state_etcd.rs` (through [`run_contract`]).

use super::*;
use crate::model::{JobSpec, JobState, Priority, Sampler, TaskCompletion};

fn job(id: &str, key: Option<&str>) -> JobRecord {
    JobRecord {
        id: id.into(),
        spec: JobSpec {
            prompt: "a ball".into(),
            duration_seconds: 1.0,
            fps: 12,
            width: 64,
            height: 64,
            seed: 1,
            steps: 2,
            sampler: Sampler::Ddim,
            audio: false,
            priority: Priority::Normal,
            tenant: "t".into(),
            labels: Default::default(),
            model: None,
        },
        state: JobState::Queued,
        idempotency_key: key.map(str::to_string),
        created_ms: 1,
        finished_ms: None,
        error: None,
        outputs: vec![],
        tasks: vec![],
        artifacts_swept: false,
        cached_from: None,
        merged_into: None,
        adjustments: vec![],
        error_code: None,
    }
}

fn done(job_id: &str, index: u32, term: u64) -> Write {
    Write::TaskDone(TaskCompletion {
        job_id: job_id.into(),
        task_index: index,
        attempt: 1,
        term,
        worker_id: "w".into(),
        outputs: vec![],
        scene: None,
        finished_ms: 2,
    })
}

/// Runs the whole contract on a fresh, empty store.
/// API keys: created once per id, revoked in place (the first revocation's time kept),
/// listed with the revoked ones, never holding a secret.
pub(crate) async fn api_keys_contract(store: &dyn StateStore) {
    use crate::model::{ApiKeyRecord, KeyRole};
    let key = ApiKeyRecord {
        id: "c0ffee00".into(),
        tenant: "ads".into(),
        role: KeyRole::Submit,
        secret_sha256: crate::model::api_key::secret_sha256("s3cr3t"),
        description: "contract".into(),
        created_ms: 1,
        revoked_ms: None,
    };
    assert!(store.create_api_key(&key).await.expect("create key"));
    assert!(
        !store.create_api_key(&key).await.expect("create again"),
        "an id is created once"
    );
    assert_eq!(store.api_keys().await.expect("list"), vec![key.clone()]);
    assert!(store.api_keys().await.unwrap()[0].matches("s3cr3t"));
    let revoked = store
        .revoke_api_key("c0ffee00", 5)
        .await
        .expect("revoke")
        .expect("the key exists");
    assert_eq!(revoked.revoked_ms, Some(5));
    let again = store.revoke_api_key("c0ffee00", 9).await.unwrap().unwrap();
    assert_eq!(
        again.revoked_ms,
        Some(5),
        "the first revocation's time is kept"
    );
    assert_eq!(store.revoke_api_key("0badbad0", 9).await.unwrap(), None);
    assert_eq!(store.api_keys().await.unwrap(), vec![revoked]);
}

pub async fn run_contract(store: &dyn StateStore) {
    api_keys_contract(store).await;
    let t1 = store.begin_term().await.expect("begin term");
    assert_eq!(
        store
            .create_job(t1, &job("0000000000000001", Some("k")))
            .await
            .expect("create"),
        CreateOutcome::Created
    );
    assert_eq!(
        store
            .create_job(t1, &job("0000000000000002", Some("k")))
            .await
            .expect("create again"),
        CreateOutcome::Existing("0000000000000001".into()),
        "a reused idempotency key returns the first job"
    );
    assert!(
        matches!(
            store.create_job(t1, &job("0000000000000001", None)).await,
            Err(StoreError::JobExists(_))
        ),
        "an id collision is refused"
    );
    store
        .commit(t1, vec![done("0000000000000001", 0, t1)])
        .await
        .expect("commit");
    assert!(
        store
            .commit(t1, vec![done("0000000000000001", 0, t1)])
            .await
            .is_err(),
        "a second result for the same task is refused"
    );

    let t2 = store.begin_term().await.expect("second term");
    assert!(t2 > t1, "terms increase");
    assert!(
        matches!(
            store
                .commit(t1, vec![done("0000000000000001", 1, t1)])
                .await,
            Err(StoreError::Fenced { .. })
        ),
        "a write with an old term is fenced"
    );
    assert!(
        matches!(
            store.create_job(t1, &job("0000000000000003", None)).await,
            Err(StoreError::Fenced { .. })
        ),
        "a create with an old term is fenced"
    );
    let mut finished = job("0000000000000001", Some("k"));
    finished.state = JobState::Succeeded;
    store
        .commit(
            t2,
            vec![
                done("0000000000000001", 1, t2),
                Write::Job(Box::new(finished)),
            ],
        )
        .await
        .expect("commit in the new term");

    let snapshot = store.load().await.expect("load");
    assert_eq!(snapshot.jobs.len(), 1, "only the created job is stored");
    assert_eq!(snapshot.jobs[0].state, JobState::Succeeded);
    assert_eq!(
        snapshot.completions.len(),
        2,
        "both committed results are stored"
    );

    // Checkpoints: the latest per task is kept, fenced like every other write.
    let checkpoint = |index: u32, step: u32| {
        Write::Checkpoint(crate::model::TaskCheckpoint {
            job_id: "0000000000000001".into(),
            task_index: index,
            step,
            output: crate::model::Output {
                kind: "checkpoint".into(),
                uri: format!("file:///c/{index}-{step}"),
                sha256: "00".into(),
                bytes: 1,
            },
            attempt: 1,
            term: t2,
            worker_id: "w".into(),
            written_ms: 3,
        })
    };
    store
        .commit(t2, vec![checkpoint(2, 5)])
        .await
        .expect("checkpoint");
    store
        .commit(t2, vec![checkpoint(2, 10), checkpoint(3, 1)])
        .await
        .expect("later checkpoints");
    assert!(
        matches!(
            store.commit(t1, vec![checkpoint(2, 15)]).await,
            Err(StoreError::Fenced { .. })
        ),
        "a checkpoint with an old term is fenced"
    );
    let mut steps: Vec<(u32, u32)> = store
        .load()
        .await
        .expect("load checkpoints")
        .checkpoints
        .iter()
        .map(|c| (c.task_index, c.step))
        .collect();
    steps.sort();
    assert_eq!(steps, [(2, 10), (3, 1)], "the latest per task");

    // Retention forgets a finished job: record, results, checkpoints and idempotency key.
    store
        .commit(
            t2,
            vec![Write::Forget {
                job_id: "0000000000000001".into(),
                idempotency: Some(("t".into(), "k".into())),
            }],
        )
        .await
        .expect("forget");
    let snapshot = store.load().await.expect("load after forget");
    assert!(
        snapshot.jobs.is_empty()
            && snapshot.completions.is_empty()
            && snapshot.checkpoints.is_empty(),
        "the job is gone"
    );
    assert_eq!(
        store
            .create_job(t2, &job("0000000000000004", Some("k")))
            .await
            .expect("create with the forgotten key"),
        CreateOutcome::Created,
        "a forgotten idempotency key is free again"
    );

    // Cordons: stored until lifted, fenced like every other write.
    let cordon = |id: &str, on: bool| Write::Cordon {
        worker_id: id.into(),
        cordoned: on,
    };
    store
        .commit(t2, vec![cordon("gpu-1", true), cordon("gpu-2", true)])
        .await
        .expect("cordon");
    store
        .commit(t2, vec![cordon("gpu-1", false)])
        .await
        .expect("uncordon");
    assert!(
        matches!(
            store.commit(t1, vec![cordon("gpu-3", true)]).await,
            Err(StoreError::Fenced { .. })
        ),
        "a cordon with an old term is fenced"
    );
    assert_eq!(
        store.load().await.expect("load cordons").cordoned,
        ["gpu-2"],
        "gpu-1 was lifted, gpu-3 never written"
    );
}

#[cfg(test)]
#[tokio::test]
async fn memory_store_keeps_the_contract() {
    run_contract(&memory::MemoryStore::new()).await;
}

//! The artifact collector: deletes the files that attempts wrote but the coordinator never
//! committed (a failed attempt's partial outputs, a result rejected as stale after its
//! worker was paused past its lease, outputs of a cancelled job's last attempts). Every
//! attempt writes under names of its own, so such files are never referenced by a job;
//! without the collector they would pile up in the store for ever.
//!
//! The leader sweeps each finished job once, `--artifact-gc-grace-seconds` after it
//! finished: it lists `jobs/<job>/` and deletes every object that is not a committed output
//! of the job or of one of its tasks, compared by object key. A committed output whose URI
//! this store cannot resolve stops that job's sweep, so nothing committed is ever at risk.

use std::collections::HashSet;
use std::time::Duration;

use reelfarm_artifacts::{ArtifactError, ArtifactStore};

use super::farm::Sweep;
use super::Scheduler;
use crate::model::now_ms;

/// Jobs swept per pass at most (each costs one listing, and one delete per orphan).
const JOBS_PER_PASS: usize = 16;
/// A sweep that failed (the store was unreachable) is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Files and bytes one sweep deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub files: u64,
    pub bytes: u64,
}

impl Scheduler {
    /// One pass of the collector over the jobs whose sweep is due; returns how many jobs
    /// were swept.
    pub async fn collect_artifacts(&self, store: &ArtifactStore) -> usize {
        let due = self.lock().due_sweeps(now_ms(), JOBS_PER_PASS);
        let mut writes = Vec::new();
        for sweep in due {
            match sweep_job(store, &sweep).await {
                Ok(collected) => {
                    self.metrics.artifacts_collected.inc_by(collected.files);
                    self.metrics
                        .artifacts_collected_bytes
                        .inc_by(collected.bytes);
                    if collected.files > 0 {
                        tracing::info!(job_id = %sweep.job_id, files = collected.files,
                            bytes = collected.bytes, "deleted files of uncommitted attempts");
                    }
                    writes.extend(self.lock().finish_sweep(&sweep.job_id));
                }
                Err(e) => {
                    tracing::warn!(job_id = %sweep.job_id, error = %e,
                        "artifact sweep failed; trying again later");
                    let again = now_ms() + RETRY_AFTER.as_millis() as u64;
                    self.lock().retry_sweep(&sweep.job_id, again);
                }
            }
        }
        let swept = writes.len();
        if swept > 0 {
            // Only a note that saves the next leader a listing: if it is lost, that leader
            // sweeps these jobs again and finds nothing to delete.
            if let Err(e) = self.store.commit(self.term(), writes).await {
                tracing::warn!(jobs = swept, error = %self.store_error(e), "recording artifact sweeps failed");
            }
        }
        swept
    }
}

/// Deletes every object under the job's folder that `sweep.keep` does not name.
pub async fn sweep_job(store: &ArtifactStore, sweep: &Sweep) -> Result<Collected, ArtifactError> {
    let keep: HashSet<String> = sweep
        .keep
        .iter()
        .map(|uri| store.object_key(uri))
        .collect::<Result<_, _>>()?;
    let mut collected = Collected::default();
    for (uri, bytes) in store.list_job(&sweep.job_id).await? {
        if keep.contains(&store.object_key(&uri)?) {
            continue;
        }
        store.delete(&uri).await?;
        collected.files += 1;
        collected.bytes += bytes;
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelfarm_artifacts::StoreConfig;

    #[tokio::test]
    async fn a_sweep_deletes_only_what_no_committed_output_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ArtifactStore::open(&StoreConfig::local(dir.path()))
            .await
            .expect("store");
        let job = "0123456789abcdef";
        let put = |name: &'static str, bytes: &'static [u8]| {
            let store = &store;
            async move {
                store
                    .put(job, name, "x", bytes.to_vec())
                    .await
                    .expect("put")
            }
        };
        let plan = put("plan.t1a1.json", b"plan").await;
        let video = put("video.t1a3.mp4", b"video").await;
        let stale = put("segment-000.t1a1.bin", b"stale attempt").await;
        let other_job = store
            .put("0123456789abcdee", "plan.t1a1.json", "x", b"other".to_vec())
            .await
            .expect("put");
        let sweep = Sweep {
            job_id: job.into(),
            keep: [plan.uri.clone(), video.uri.clone()].into_iter().collect(),
        };
        let collected = sweep_job(&store, &sweep).await.expect("sweep");
        assert_eq!(
            collected,
            Collected {
                files: 1,
                bytes: 13
            }
        );
        for kept in [&plan, &video, &other_job] {
            store.get(kept).await.expect("kept and intact");
        }
        assert!(
            store.get(&stale).await.is_err(),
            "the stale attempt's file is gone"
        );
        assert_eq!(
            sweep_job(&store, &sweep).await.expect("again"),
            Collected::default(),
            "a second sweep finds nothing"
        );

        // A committed output this store cannot resolve stops the sweep: nothing is deleted.
        let orphan = put("segment-001.t1a1.bin", b"orphan").await;
        let unsafe_sweep = Sweep {
            job_id: job.into(),
            keep: ["s3://elsewhere/jobs/x/y".to_string()]
                .into_iter()
                .collect(),
        };
        assert!(sweep_job(&store, &unsafe_sweep).await.is_err());
        store.get(&orphan).await.expect("not deleted");
        store.get(&plan).await.expect("not deleted");
    }
}

//! S3 artifact storage end to end, against a real S3-compatible server: moto's
//! (`python3 -m moto.server`, from PyPI `moto[server]`) on a free loopback port.
//!
//! - A coordinator and two workers (real processes, real etcd) with
//!   `--artifacts s3://BUCKET/PREFIX` render a job: every output the job reports is in the
//!   bucket under the job's key prefix, with the reported size and SHA-256, as listed and
//!   hashed by boto3 (a client independent of the object_store crate the binaries use);
//!   VerifyContent reads the video back by its `s3://` URI.
//! - A worker that writes to a directory while the coordinator uses the bucket cannot
//!   commit: its results are refused and the job fails naming the artifact store.
//! - A coordinator pointed at a bucket that does not exist stops at start and says so.
//!
//! Fails, never skips, when moto or boto3 is missing: run ./scripts/test.sh, which installs
//! them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reelfarm_proto::v1;

/// Any credentials work with moto; they must be present for the requests to be signed.
const ACCESS_KEY: &str = "reelfarm-test";
const SECRET_KEY: &str = "reelfarm-test-secret";
const REGION: &str = "us-east-1";
/// moto starts in one to a few seconds; the margin covers a loaded 2-core machine.
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "the S3 tests need moto's server and boto3 from PyPI: run ./scripts/test.sh (it installs them), or `python3 -m pip install 'moto[server]'`";

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn bucket_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/bucket.py")
}

/// A moto S3 server on a free loopback port, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Moto {
        let probe = Command::new(python())
            .args(["-c", "import moto.server, flask, boto3"])
            .output();
        match probe {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "{INSTALL_HINT}\n{} says: {}",
                python(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("{INSTALL_HINT}\ncannot run {}: {e}", python()),
        }
        let dir = tempfile::tempdir().expect("a temp dir for moto's log");
        let log = dir.path().join("moto.log");
        let file = std::fs::File::create(&log).expect("create moto's log");
        let port = free_port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL_HINT}\nstarting moto: {e}"));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + MOTO_START_TIMEOUT;
        loop {
            if let Ok((200, _)) = http_get(&addr, "/") {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited with {status}:\n{}", moto.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer on {addr} within {MOTO_START_TIMEOUT:?}:\n{}",
                moto.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs tests/s3/bucket.py against this server; its stdout.
    fn bucket(&self, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(bucket_script())
            .arg(&self.endpoint)
            .args(args)
            .envs(credentials())
            .output()
            .expect("run tests/s3/bucket.py");
        assert!(
            out.status.success(),
            "bucket.py {args:?} failed: {}\nmoto log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn create_bucket(&self, bucket: &str) {
        self.bucket(&["create", bucket]);
    }

    fn put_object(&self, bucket: &str, key: &str, text: &str) {
        self.bucket(&["put", bucket, key, text]);
    }

    /// Every object under `prefix`: key → (size, sha256).
    fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, u64, String)> {
        let listed: serde_json::Value =
            serde_json::from_str(&self.bucket(&["list", bucket, prefix]))
                .expect("bucket.py list prints JSON");
        listed
            .as_array()
            .expect("a JSON array")
            .iter()
            .map(|o| {
                (
                    o["key"].as_str().expect("key").to_string(),
                    o["size"].as_u64().expect("size"),
                    o["sha256"].as_str().expect("sha256").to_string(),
                )
            })
            .collect()
    }

    /// The store flags of a coordinator or worker using `s3://bucket/prefix` here.
    fn store(&self, bucket: &str, prefix: &str) -> Store {
        Store::Flags {
            args: vec![
                format!("--artifacts=s3://{bucket}/{prefix}"),
                format!("--s3-endpoint={}", self.endpoint),
                format!("--s3-region={REGION}"),
                "--s3-force-path-style".into(),
                "--s3-allow-http".into(),
            ],
            env: credentials(),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials() -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
    ]
}

#[tokio::test]
async fn job_outputs_land_in_the_bucket_with_their_sha256() {
    let moto = Moto::start();
    let bucket = "reelfarm-e2e";
    let prefix = "farm/one";
    moto.create_bucket(bucket);
    let cluster =
        Cluster::start_with_store(ClusterOptions::default(), moto.store(bucket, prefix)).await;

    let submitted = cluster
        .submit(spec("a red rubber ball bouncing on a wooden floor"))
        .await;
    let job = cluster.wait_succeeded(&submitted.id).await;

    let kinds: Vec<&str> = job.outputs.iter().map(|o| o.kind.as_str()).collect();
    for kind in ["video", "poster", "manifest"] {
        assert!(
            kinds.contains(&kind),
            "the job should report a {kind} output, got {kinds:?}"
        );
    }
    let job_prefix = format!("{prefix}/jobs/{}/", job.id);
    let stored = moto.objects(bucket, &job_prefix);
    println!("bucket {bucket} holds under {job_prefix}:");
    for (key, size, sha) in &stored {
        println!("  {key} {size} bytes sha256 {sha}");
    }
    for output in &job.outputs {
        let key = output
            .uri
            .strip_prefix(&format!("s3://{bucket}/"))
            .unwrap_or_else(|| panic!("output {} should be an s3://{bucket}/ uri", output.uri));
        assert!(
            key.starts_with(&job_prefix),
            "output {key} should be under the job's prefix {job_prefix}"
        );
        let (_, size, sha) = stored
            .iter()
            .find(|(k, _, _)| k == key)
            .unwrap_or_else(|| panic!("output {key} is not in the bucket; it holds {stored:?}"));
        assert_eq!(
            *size, output.bytes,
            "{key}: size in the bucket vs the job's output"
        );
        assert_eq!(
            sha, &output.sha256,
            "{key}: SHA-256 in the bucket vs the job's output"
        );
    }
    // Every task wrote its intermediate file too: plan, segments, audio, then the three
    // final files, all under attempt-specific names.
    let tasks = job.tasks.as_ref().map_or(0, |t| t.total) as usize;
    assert!(
        stored.len() >= tasks - 1 + job.outputs.len(),
        "expected one object per task plus the final files ({tasks} tasks), found {}",
        stored.len()
    );
    assert!(
        !cluster.artifacts.exists(),
        "nothing should be written to the local artifact directory {}",
        cluster.artifacts.display()
    );

    let video = job
        .outputs
        .iter()
        .find(|o| o.kind == "video")
        .expect("a video output");
    let verified = cluster
        .jobs()
        .verify_content(v1::VerifyContentRequest {
            source: Some(v1::verify_content_request::Source::Uri(video.uri.clone())),
        })
        .await
        .unwrap_or_else(|s| {
            panic!(
                "VerifyContent of {} was expected to succeed: {s:?}",
                video.uri
            )
        })
        .into_inner();
    assert!(
        verified.ours && verified.manifest_valid && verified.job_id == job.id,
        "VerifyContent should find our watermark and a valid manifest in {}: {verified:?}",
        video.uri
    );
    let foreign = cluster
        .jobs()
        .verify_content(v1::VerifyContentRequest {
            source: Some(v1::verify_content_request::Source::Uri(format!(
                "s3://another-bucket/{}",
                video.uri.trim_start_matches(&format!("s3://{bucket}/"))
            ))),
        })
        .await
        .expect_err("a uri outside the store");
    assert_eq!(
        foreign.code(),
        tonic::Code::InvalidArgument,
        "a uri of another bucket is refused: {foreign:?}"
    );
}

#[tokio::test]
async fn uncommitted_attempt_objects_are_collected_from_the_bucket() {
    let moto = Moto::start();
    let (bucket, prefix) = ("reelfarm-gc", "farm");
    moto.create_bucket(bucket);
    let cluster = Cluster::start_with_store(
        ClusterOptions {
            coordinator_args: vec!["--artifact-gc-grace-seconds".into(), "1".into()],
            ..Default::default()
        },
        moto.store(bucket, prefix),
    )
    .await;
    let submitted = cluster.submit(spec("a ball and a stray object")).await;
    let job_prefix = format!("{prefix}/jobs/{}/", submitted.id);
    let stray = format!("{job_prefix}segment-000.t99a9.bin");
    moto.put_object(bucket, &stray, "an uncommitted attempt's output");
    // A neighbour whose id extends this job's must survive the sweep.
    let neighbour = format!("{prefix}/jobs/{}0/plan.t1a1.json", submitted.id);
    moto.put_object(bucket, &neighbour, "another job's file");

    let job = cluster.wait_succeeded(&submitted.id).await;
    let stored = wait_until(
        &format!("the stray object {stray} was expected to be deleted"),
        Duration::from_secs(30),
        || async {
            let stored = moto.objects(bucket, &job_prefix);
            if !stored.iter().any(|(k, _, _)| *k == stray) {
                Ok(stored)
            } else {
                Err(format!("{stored:?}"))
            }
        },
    )
    .await;
    for output in &job.outputs {
        let key = output.uri.trim_start_matches(&format!("s3://{bucket}/"));
        assert!(
            stored
                .iter()
                .any(|(k, _, sha)| k == key && *sha == output.sha256),
            "committed output {key} was expected intact in the bucket: {stored:?}"
        );
    }
    assert_eq!(
        moto.objects(bucket, &neighbour).len(),
        1,
        "the neighbouring job's object was expected untouched"
    );
}

#[tokio::test]
async fn a_worker_writing_elsewhere_cannot_commit_its_results() {
    let moto = Moto::start();
    let bucket = "reelfarm-e2e-elsewhere";
    moto.create_bucket(bucket);
    let mut cluster = Cluster::start_with_store(
        ClusterOptions {
            workers: 0,
            coordinator_args: vec!["--max-attempts".into(), "2".into()],
        },
        moto.store(bucket, "farm"),
    )
    .await;
    // This worker keeps its artifacts in a directory the coordinator does not read.
    cluster.store = Store::Directory;
    cluster.add_worker("worker-local");
    cluster
        .wait_workers_connected(&["worker-local".to_string()])
        .await;

    let submitted = cluster.submit(spec("a blue cube falling")).await;
    let job = cluster.wait_terminal(&submitted.id).await;
    assert_eq!(
        state(&job),
        v1::JobState::Failed,
        "a job whose outputs are not in the coordinator's store must fail:\n{}",
        describe(&job)
    );
    println!("the job failed as expected: {}", job.error);
    assert!(
        job.error.contains("artifact store") && job.error.contains("--artifacts"),
        "the job's error should say the outputs are not in the artifact store, got {:?}",
        job.error
    );
    assert!(
        moto.objects(bucket, "farm/").is_empty(),
        "nothing reached the bucket"
    );
}

#[tokio::test]
async fn a_missing_bucket_stops_the_coordinator_at_start() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let Store::Flags { args, env } = moto.store("no-such-bucket", "x") else {
        unreachable!("moto.store gives flags");
    };
    let mut cmd = Command::new(COORDINATOR_BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("REELFARM_") || key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(&args)
        .arg(format!("--listen=127.0.0.1:{}", free_port()))
        .arg(format!("--http-listen=127.0.0.1:{}", free_port()))
        .envs(env)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the coordinator");
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the coordinator") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the coordinator kept running with a bucket that does not exist");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("the coordinator's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !status.success(),
        "the coordinator should fail to start: {stderr}"
    );
    assert!(
        stderr.contains("--artifacts") && stderr.contains("no-such-bucket"),
        "the error should name --artifacts and the bucket, got:\n{stderr}"
    );
}

//! Who may join a farm and who may call it, end to end against real processes over real
//! gRPC with etcd, each test counting what it tried and printing it:
//!
//! - workers: with `--join-token-file` on the coordinator, a worker presenting the
//!   cluster's token joins, one without it or with another is refused with
//!   UNAUTHENTICATED (and never listed); so is a hand-made WorkerService stream, before its
//!   registration is read;
//! - clients: with `--bootstrap-admin-key-file`, every RPC that server reflection lists
//!   (other than health and reflection, which stay open) refuses a call without a key or
//!   with a wrong one (grpcurl, so the list is the server's own); keys made and revoked
//!   with the `reelfarm keys` CLI; roles (a read key on a write RPC is PERMISSION_DENIED);
//!   a key's jobs are its tenant's (`spec.tenant` naming another is PERMISSION_DENIED);
//!   another tenant's job is NOT_FOUND on every job RPC, exactly as a missing one;
//!   idempotency keys and the result cache do not cross tenants; a revoked key stops
//!   working; a key over its rate gets RESOURCE_EXHAUSTED with a retry hint;
//! - safe defaults: the coordinator refuses a non-loopback address without authentication
//!   unless `--insecure`.

mod common;

use common::*;
use reelfarm_proto::v1;
use tonic::Code;

const TOKEN: &str = "5f0c2a9b7e41d8c3a6b29e07d4f1c8a35e6b90d27c4a1f8e";

/// Waits until worker `id`'s log says every one of `says` (its refusal), then checks the
/// coordinator does not list it.
async fn assert_refused(cluster: &mut Cluster, id: &str, says: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = cluster.worker(id).process.log();
        if says.iter().all(|s| log.contains(s)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} was not refused with {says:?}:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        cluster.listed_worker(id).await.is_none(),
        "{id} is not a worker of the farm"
    );
}

fn token_file(dir: &tempfile::TempDir, name: &str, token: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn only_workers_with_the_join_token_join_the_farm() {
    let secrets = tempfile::tempdir().unwrap();
    let right = token_file(&secrets, "join-token", TOKEN);
    let wrong = token_file(&secrets, "other-token", &TOKEN.replace('5', "6"));
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 0,
        coordinator_args: vec!["--join-token-file".into(), right.clone()],
    })
    .await;
    let mut tried = Vec::new();

    cluster.add_worker_with_args("joined", &["--join-token-file".into(), right]);
    cluster
        .wait_workers_connected(&["joined".to_string()])
        .await;
    tried.push("a worker with the join token: joined");

    cluster.add_worker("no-token");
    cluster.add_worker_with_args("other-token", &["--join-token-file".into(), wrong]);
    for (id, says) in [
        ("no-token", "needs the cluster's join token"),
        ("other-token", "not this cluster's"),
    ] {
        assert_refused(&mut cluster, id, &["Unauthenticated", says]).await;
    }
    tried.push("a worker without a token: UNAUTHENTICATED, not listed");
    tried.push("a worker with another cluster's token: UNAUTHENTICATED, not listed");

    // A hand-made stream whose first message registers: refused before it is read.
    let mut client =
        v1::worker_service_client::WorkerServiceClient::connect(cluster.coordinator.url())
            .await
            .unwrap();
    let register = v1::WorkerMessage {
        body: Some(v1::worker_message::Body::Register(v1::RegisterWorker {
            worker_id: "intruder".into(),
            slots: 1,
            ..Default::default()
        })),
    };
    let status = client
        .session(tokio_stream::iter(vec![register]))
        .await
        .expect_err("a stream without the token is refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(cluster.listed_worker("intruder").await.is_none());
    tried.push("a hand-made WorkerService stream without a token: UNAUTHENTICATED");

    let metrics = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .unwrap()
        .1;
    let refused = sample_sum(
        &metrics,
        "reelfarm_worker_sessions_unauthenticated_total",
        "",
    )
    .unwrap_or(0.0);
    assert!(refused >= 3.0, "refusals counted: {refused}");

    // The worker that joined renders.
    let job = cluster.submit(spec("a red ball")).await;
    let done = cluster.wait_succeeded(&job.id).await;
    assert!(done.task_details.iter().all(|t| t.worker_id == "joined"));
    tried.push("a job rendered by the worker that joined");

    println!("security suite: {} checks", tried.len());
    for t in &tried {
        println!("  ok: {t}");
    }
}

/// The bootstrap admin key of the tests (the shape `rfk_<id>_<secret>`).
const ADMIN_KEY: &str = "rfk_e2eadmin00_Q7w9Zr2Lk4Xp8Vn3Hc6Jd1Fb5Gt0Ys2Ma7Ue9Wo4";

/// Runs `grpcurl -plaintext [args] ADDR [words]`: (success, stdout, stderr).
async fn grpcurl(addr: &str, args: &[&str], words: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("grpcurl")
        .arg("-plaintext")
        .args(args)
        .arg(addr)
        .args(words)
        .kill_on_drop(true)
        .output()
        .await
        .expect("running grpcurl (run scripts/test.sh to install it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `reelfarm [args]` against the cluster with `--api-key key`; stdout on success.
async fn cli(cluster: &Cluster, key: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(CLI_BIN)
        .args([
            "--coordinator",
            &cluster.coordinator.url(),
            "--api-key",
            key,
        ])
        .args(args)
        .output()
        .await
        .expect("running reelfarm");
    assert!(
        out.status.success(),
        "reelfarm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("the call was expected to be refused");
    (s.code(), s.message().to_string())
}

#[tokio::test]
async fn clients_need_a_key_of_the_right_role_and_see_only_their_tenant() {
    require_tool("grpcurl");
    let secrets = tempfile::tempdir().unwrap();
    let admin_file = token_file(&secrets, "admin-key", ADMIN_KEY);
    let join = token_file(&secrets, "join-token", TOKEN);
    let mut cluster = Cluster::start(ClusterOptions {
        workers: 0,
        coordinator_args: vec![
            "--bootstrap-admin-key-file".into(),
            admin_file,
            "--join-token-file".into(),
            join.clone(),
            // A burst of 5 per key: reached below with a key of its own.
            "--key-submit-rate".into(),
            "0.5".into(),
        ],
    })
    .await;
    cluster.add_worker_with_args("w", &["--join-token-file".into(), join]);
    cluster.wait_workers_connected(&["w".to_string()]).await;
    let addr = cluster.coordinator.addr();
    let mut tried: Vec<String> = Vec::new();

    // Keys through the CLI, as an operator makes them.
    let ads = cli(
        &cluster,
        ADMIN_KEY,
        &["keys", "create", "--tenant", "ads", "--role", "submit"],
    )
    .await;
    let ads_read = cli(
        &cluster,
        ADMIN_KEY,
        &["keys", "create", "--tenant", "ads", "--role", "read"],
    )
    .await;
    let crm = cli(
        &cluster,
        ADMIN_KEY,
        &["keys", "create", "--tenant", "crm", "--role", "submit"],
    )
    .await;
    let listed = cli(&cluster, ADMIN_KEY, &["--output", "json", "keys", "list"]).await;
    assert_eq!(
        listed.lines().count(),
        4,
        "three keys and the bootstrap key:\n{listed}"
    );
    for key in [&ads, &ads_read, &crm] {
        assert!(!listed.contains(key.as_str()), "list never shows a secret");
    }
    tried.push("keys create/list through the CLI, no secret listed".into());

    // Every RPC reflection lists: refused without a key and with a wrong one.
    let (ok, services, e) = grpcurl(&addr, &[], &["list"]).await;
    assert!(ok, "reflection stays open: {e}");
    let (ok, _, e) = grpcurl(&addr, &[], &["grpc.health.v1.Health/Check"]).await;
    assert!(ok, "health stays open: {e}");
    let wrong = "authorization: Bearer rfk_e2eadmin00_WRONGWRONGWRONGWRONGWRONGWRONGWRONG00";
    // A key revoked at once, by giving `revoke` the whole key.
    let gone = cli(
        &cluster,
        ADMIN_KEY,
        &["keys", "create", "--tenant", "ads", "--role", "admin"],
    )
    .await;
    cli(&cluster, ADMIN_KEY, &["keys", "revoke", &gone]).await;
    let revoked = format!("authorization: Bearer {gone}");
    let mut rpcs = 0;
    for service in services
        .lines()
        .map(str::trim)
        .filter(|s| s.starts_with("reelfarm."))
    {
        let (ok, methods, e) = grpcurl(&addr, &[], &["list", service]).await;
        assert!(ok, "{e}");
        for method in methods.lines().map(str::trim).filter(|m| !m.is_empty()) {
            let method = method.replace(&format!("{service}."), &format!("{service}/"));
            for header in [None, Some(wrong), Some(revoked.as_str())] {
                let mut args = vec!["-d", "{}"];
                if let Some(h) = header {
                    args.extend(["-H", h]);
                }
                let (ok, _, e) = grpcurl(&addr, &args, &[&method]).await;
                assert!(
                    !ok && e.contains("Unauthenticated"),
                    "{method} with {header:?}: expected Unauthenticated, got {e}"
                );
            }
            rpcs += 1;
        }
    }
    assert!(rpcs >= 15, "every RPC of the three services: {rpcs}");
    tried.push(format!(
        "{rpcs} RPCs listed by reflection, each without a key, with a wrong one and with a revoked one: UNAUTHENTICATED"
    ));

    // A read key on every write RPC, and on admin RPCs.
    let mut jobs_read = cluster.jobs_as(Some(&ads_read));
    let (code, msg) = code_of(
        jobs_read
            .submit_job(v1::SubmitJobRequest {
                spec: Some(spec("a red ball")),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(msg.contains("needs a submit key"), "{msg}");
    let (code, _) = code_of(
        jobs_read
            .submit_batch(v1::SubmitBatchRequest {
                jobs: vec![v1::SubmitJobRequest {
                    spec: Some(spec("a red ball")),
                    ..Default::default()
                }],
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let (code, _) = code_of(
        jobs_read
            .cancel_job(v1::CancelJobRequest {
                id: "0123456789abcdef".into(),
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let mut admin_read = cluster.admin_as(Some(&ads_read));
    let (code, _) = code_of(admin_read.list_workers(v1::ListWorkersRequest {}).await);
    assert_eq!(code, Code::PermissionDenied);
    let (code, _) = code_of(
        admin_read
            .create_api_key(v1::CreateApiKeyRequest {
                tenant: "ads".into(),
                role: v1::ApiKeyRole::Admin as i32,
                description: String::new(),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::PermissionDenied,
        "a read key cannot make itself an admin"
    );
    admin_read
        .get_cluster_status(v1::GetClusterStatusRequest {})
        .await
        .expect("any key finds the leader");
    tried.push("a read key on SubmitJob, SubmitBatch, CancelJob, ListWorkers, CreateApiKey: PERMISSION_DENIED".into());

    // A key's jobs are its tenant's.
    let mut jobs_ads = cluster.jobs_as(Some(&ads));
    let mut mine = spec("a red ball");
    mine.seed = Some(7);
    let submit = |s: v1::JobSpec, key: &str| v1::SubmitJobRequest {
        spec: Some(s),
        idempotency_key: key.to_string(),
    };
    let job = jobs_ads
        .submit_job(submit(mine.clone(), "same-key"))
        .await
        .expect("a submit key submits")
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.spec.as_ref().unwrap().tenant, "ads", "the key's tenant");
    // The same idempotency key and spec in another tenant while ads's job runs: its own
    // job, neither merged into ads's running render nor later served from its cache.
    let mut jobs_crm = cluster.jobs_as(Some(&crm));
    let theirs = jobs_crm
        .submit_job(submit(mine.clone(), "same-key"))
        .await
        .expect("crm submits")
        .into_inner()
        .job
        .unwrap();
    assert_ne!(theirs.id, job.id, "idempotency keys are per tenant");
    assert_eq!(theirs.merged_into, "", "no merge across tenants");
    let mut other = mine.clone();
    other.tenant = "crm".into();
    let (code, msg) = code_of(jobs_ads.submit_job(submit(other.clone(), "")).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.starts_with("spec.tenant"), "{msg}");
    let (code, msg) = code_of(
        jobs_ads
            .submit_batch(v1::SubmitBatchRequest {
                jobs: vec![submit(mine.clone(), ""), submit(other, "")],
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.starts_with("jobs[1].spec.tenant"), "{msg}");
    tried.push("spec.tenant naming another tenant: PERMISSION_DENIED naming the field".into());
    let done = cluster.wait_succeeded(&job.id).await;
    let video = done
        .outputs
        .iter()
        .find(|o| o.kind == "video")
        .expect("a video")
        .uri
        .clone();

    // Another tenant's job is NOT_FOUND on every job RPC, worded as a missing one.
    let missing = "00000000000000ff";
    let (code, missing_msg) = code_of(
        jobs_crm
            .get_job(v1::GetJobRequest { id: missing.into() })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, msg) = code_of(
        jobs_crm
            .get_job(v1::GetJobRequest { id: job.id.clone() })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(
        msg,
        missing_msg.replace(missing, &job.id),
        "exactly as a missing job"
    );
    let (code, _) = code_of(
        jobs_crm
            .watch_job(v1::WatchJobRequest { id: job.id.clone() })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, _) = code_of(
        jobs_crm
            .cancel_job(v1::CancelJobRequest { id: job.id.clone() })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, _) = code_of(
        jobs_crm
            .verify_content(v1::VerifyContentRequest {
                source: Some(v1::verify_content_request::Source::Uri(video.clone())),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "another tenant's file by URI");
    let listed = jobs_crm
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(
        !listed.is_empty()
            && listed
                .iter()
                .all(|j| j.spec.as_ref().unwrap().tenant == "crm"),
        "crm lists its own jobs and none of ads's: {listed:?}"
    );
    let (code, msg) = code_of(
        jobs_crm
            .list_jobs(v1::ListJobsRequest {
                tenant: "ads".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    let bytes = std::fs::read(output_path(&video)).unwrap();
    let verdict = jobs_crm
        .verify_content(v1::VerifyContentRequest {
            source: Some(v1::verify_content_request::Source::Data(bytes)),
        })
        .await
        .expect("anyone may check a file they hold")
        .into_inner();
    assert!(verdict.ours);
    assert_eq!(verdict.job_id, "", "which job made it is ads's to know");
    let mine_ads = cluster
        .jobs_as(Some(&ads_read))
        .verify_content(v1::VerifyContentRequest {
            source: Some(v1::verify_content_request::Source::Uri(video)),
        })
        .await
        .expect("ads reads its own file by URI")
        .into_inner();
    assert_eq!(mine_ads.job_id, job.id);
    tried.push("another tenant's job: GetJob, WatchJob, CancelJob, VerifyContent(uri) NOT_FOUND; ListJobs only its own, tenant filter PERMISSION_DENIED; VerifyContent(data) hides the job".into());

    let theirs = cluster.wait_succeeded(&theirs.id).await;
    assert_eq!(theirs.cached_from, "", "no cache hit across tenants");
    assert_eq!(theirs.merged_into, "");
    assert!(theirs.outputs.iter().all(|o| o.uri.contains(&theirs.id)));
    tried.push("same idempotency key and spec in another tenant, while the first runs: a new job, not merged, no cache hit".into());

    // Revocation through the CLI, by id.
    let id = ads_read.split('_').nth(1).unwrap().to_string();
    cli(&cluster, ADMIN_KEY, &["keys", "revoke", &id]).await;
    let (code, msg) = code_of(
        cluster
            .jobs_as(Some(&ads_read))
            .get_job(v1::GetJobRequest { id: job.id.clone() })
            .await,
    );
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.contains("revoked"), "{msg}");
    tried.push("a revoked key: UNAUTHENTICATED".into());

    // Rate: a fresh key's burst of 5 submissions, then RESOURCE_EXHAUSTED with a hint.
    let burst = cli(
        &cluster,
        ADMIN_KEY,
        &["keys", "create", "--tenant", "ads", "--role", "submit"],
    )
    .await;
    let mut jobs_burst = cluster.jobs_as(Some(&burst));
    for _ in 0..5 {
        let (code, _) = code_of(
            jobs_burst
                .cancel_job(v1::CancelJobRequest { id: missing.into() })
                .await,
        );
        assert_eq!(code, Code::NotFound);
    }
    let refused = jobs_burst
        .cancel_job(v1::CancelJobRequest { id: missing.into() })
        .await
        .expect_err("over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.metadata().get("retry-after").is_some(),
        "{refused:?}"
    );
    jobs_ads
        .get_job(v1::GetJobRequest { id: job.id.clone() })
        .await
        .expect("other keys are not limited by it");
    tried.push("a key over --key-submit-rate: RESOURCE_EXHAUSTED with retry-after".into());

    let metrics = http_get(&cluster.coordinator.http_addr(), "/metrics")
        .unwrap()
        .1;
    for reason in ["unauthenticated", "permission_denied", "rate_limited"] {
        let n = sample_sum(
            &metrics,
            "reelfarm_api_requests_refused_total",
            &format!("reason=\"{reason}\""),
        )
        .unwrap_or(0.0);
        assert!(n >= 1.0, "{reason} counted: {n}");
    }
    tried.push("refusals counted in reelfarm_api_requests_refused_total".into());

    println!("security suite (clients): {} checks", tried.len());
    for t in &tried {
        println!("  ok: {t}");
    }
}

#[tokio::test]
async fn a_coordinator_refuses_to_listen_open_on_a_non_loopback_address() {
    let secrets = tempfile::tempdir().unwrap();
    let admin_file = token_file(&secrets, "admin-key", ADMIN_KEY);
    let run = |args: Vec<String>| {
        let mut all = vec![
            "--listen".to_string(),
            format!("0.0.0.0:{}", free_port()),
            "--http-listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
            "--artifacts".to_string(),
            secrets.path().join("artifacts").display().to_string(),
        ];
        all.extend(args);
        let mut child = std::process::Command::new(COORDINATOR_BIN)
            .args(&all)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Refusals exit at once; a coordinator that starts keeps running.
        std::thread::sleep(std::time::Duration::from_secs(2));
        match child.try_wait().unwrap() {
            Some(status) => {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                (Some(status), err)
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                (None, String::new())
            }
        }
    };
    let (status, err) = run(vec![]);
    assert!(
        status.is_some_and(|s| !s.success()),
        "open on 0.0.0.0 must be refused"
    );
    assert!(
        err.contains("refusing to listen") && err.contains("--insecure"),
        "{err}"
    );
    let (status, err) = run(vec![
        "--bootstrap-admin-key-file".into(),
        admin_file.clone(),
    ]);
    assert!(
        status.is_some(),
        "keys without a join token are refused too"
    );
    assert!(err.contains("--join-token-file"), "{err}");
    let (status, _) = run(vec!["--insecure".into()]);
    assert!(status.is_none(), "--insecure serves open, in so many words");
    let (status, err) = run(vec![
        "--insecure".into(),
        "--bootstrap-admin-key-file".into(),
        admin_file,
    ]);
    assert!(
        status.is_some() && err.contains("give one of them"),
        "{err}"
    );
    println!("security suite (defaults): 4 checks");
}

/// A CA of the test, able to sign server and worker certificates.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses): (certificate PEM, key PEM).
    fn sign(&self, names: &[&str]) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }
}

fn write_pair(
    dir: &std::path::Path,
    name: &str,
    (cert, key): &(String, String),
) -> (String, String) {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c.display().to_string(), k.display().to_string())
}

/// Whether a client trusting only `ca` completes a call to `port` over TLS.
async fn answers_over_tls(port: u16, ca: &std::path::Path) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(2))
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()),
        ))
        .unwrap();
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    v1::admin_service_client::AdminServiceClient::new(channel)
        .get_cluster_status(v1::GetClusterStatusRequest {})
        .await
        .map(drop)
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test]
async fn tls_serves_the_port_reloads_its_certificate_and_binds_worker_ids_to_certificates() {
    require_tool("grpcurl");
    let dir = tempfile::tempdir().unwrap();
    let (ca, rotated_ca, rogue) = (
        TestCa::new("farm CA"),
        TestCa::new("next CA"),
        TestCa::new("rogue"),
    );
    let ca_file = ca.write(dir.path(), "ca.pem");
    let rotated_ca_file = rotated_ca.write(dir.path(), "next-ca.pem");
    let (server_cert, server_key) =
        write_pair(dir.path(), "server", &ca.sign(&["127.0.0.1", "localhost"]));
    let (good_cert, good_key) = write_pair(dir.path(), "tls-worker", &ca.sign(&["tls-worker"]));
    let (rogue_cert, rogue_key) = write_pair(dir.path(), "rogue", &rogue.sign(&["tls-worker"]));
    let ca_arg = ca_file.display().to_string();
    let mut cluster = Cluster::start_tls(
        ClusterOptions {
            workers: 0,
            coordinator_args: vec![
                "--tls-cert".into(),
                server_cert.clone(),
                "--tls-key".into(),
                server_key.clone(),
                "--client-ca".into(),
                ca_arg.clone(),
            ],
        },
        ca_file.clone(),
    )
    .await;
    let mut tried: Vec<String> = Vec::new();
    let port = cluster.coordinator.grpc_port;
    tried.push("the harness's clients reach the coordinator over TLS (https, the farm CA)".into());

    // Plaintext to the TLS port is refused; grpcurl with -cacert works.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(5));
    let refused = match plain.connect().await {
        Err(_) => true,
        Ok(c) => v1::admin_service_client::AdminServiceClient::new(c)
            .get_cluster_status(v1::GetClusterStatusRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a plaintext client must not get an answer from the TLS port"
    );
    let addr = format!("127.0.0.1:{port}");
    let (ok, _, _) = grpcurl(&addr, &[], &["list"]).await;
    assert!(!ok, "grpcurl -plaintext against the TLS port fails");
    let out = tokio::process::Command::new("grpcurl")
        .args(["-cacert", &ca_arg, &addr, "list"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "grpcurl -cacert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tried.push("plaintext to the TLS port: refused; grpcurl -cacert: answers".into());

    // Workers: a certificate the farm CA signed joins under a name it carries (no join token
    // needed); the same certificate under another id, none, or a rogue CA's: refused.
    let tls_args = |cert: Option<(&str, &str)>| {
        let mut a = vec!["--ca-cert".to_string(), ca_arg.clone()];
        if let Some((c, k)) = cert {
            a.extend([
                "--tls-cert".into(),
                c.to_string(),
                "--tls-key".into(),
                k.to_string(),
            ]);
        }
        a
    };
    cluster.add_worker_with_args("tls-worker", &tls_args(Some((&good_cert, &good_key))));
    cluster
        .wait_workers_connected(&["tls-worker".to_string()])
        .await;
    tried.push("a worker with a certificate naming its id: joined without a join token".into());
    cluster.add_worker_with_args("impostor", &tls_args(Some((&good_cert, &good_key))));
    cluster.add_worker_with_args("no-cert", &tls_args(None));
    cluster.add_worker_with_args("rogue", &tls_args(Some((&rogue_cert, &rogue_key))));
    for (id, says) in [
        ("impostor", "is not a name of your client certificate"),
        ("no-cert", "needs a client certificate"),
        ("rogue", "transport"),
    ] {
        assert_refused(&mut cluster, id, &[says]).await;
    }
    tried.push(
        "a stolen id (a certificate that does not name it): PERMISSION_DENIED, not listed".into(),
    );
    tried.push(
        "no client certificate: UNAUTHENTICATED; a rogue CA's certificate: handshake refused"
            .into(),
    );
    let job = cluster.submit(spec("a red ball")).await;
    let done = cluster.wait_succeeded(&job.id).await;
    assert!(done
        .task_details
        .iter()
        .all(|t| t.worker_id == "tls-worker"));
    tried.push("a job rendered by the TLS worker".into());

    // Rotation: the next CA's certificate is served to new connections within seconds; the
    // worker's open stream is not dropped; a broken pair is refused and the last one kept.
    assert!(answers_over_tls(port, &rotated_ca_file).await.is_err());
    let session_log_before = cluster
        .worker("tls-worker")
        .process
        .log()
        .matches("registered")
        .count();
    // The harness's own clients trust both CAs from now on (as clients do during a CA
    // rotation); the check above and below trusts only the next one.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&ca_file).unwrap(),
        rotated_ca.issuer.pem()
    );
    std::fs::write(&ca_file, both).unwrap();
    let (c, k) = rotated_ca.sign(&["127.0.0.1"]);
    std::fs::write(&server_key, &k).unwrap();
    std::fs::write(&server_cert, &c).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while let Err(e) = answers_over_tls(port, &rotated_ca_file).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated certificate is not served: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    std::fs::write(
        &server_cert,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    tokio::time::sleep(crate_reload_wait()).await;
    answers_over_tls(port, &rotated_ca_file)
        .await
        .expect("a broken certificate file keeps the last good pair");
    // --client-ca (the same file, now holding both CAs) was re-read too: a worker whose
    // certificate the next CA signed joins without a restart of the coordinator.
    let (next_cert, next_key) = write_pair(
        dir.path(),
        "next-worker",
        &rotated_ca.sign(&["next-worker"]),
    );
    cluster.add_worker_with_args("next-worker", &tls_args(Some((&next_cert, &next_key))));
    cluster
        .wait_workers_connected(&["next-worker".to_string()])
        .await;
    assert!(cluster.listed_worker("tls-worker").await.is_some());
    let session_log_after = cluster
        .worker("tls-worker")
        .process
        .log()
        .matches("registered")
        .count();
    assert_eq!(
        session_log_before, session_log_after,
        "the worker's session was not re-opened"
    );
    assert!(
        http_get(&cluster.coordinator.http_addr(), "/metrics").is_err(),
        "plain HTTP to the TLS metrics port gets no metrics"
    );
    let metrics = https_get(cluster.coordinator.http_port, &rotated_ca_file, "/metrics")
        .await
        .expect("/metrics over TLS (the rotated certificate)");
    let reloads = |r: &str| {
        sample_sum(
            &metrics,
            "reelfarm_tls_reloads_total",
            &format!("result=\"{r}\""),
        )
        .unwrap_or(0.0)
    };
    assert!(
        reloads("ok") >= 1.0 && reloads("error") >= 1.0,
        "{}",
        reloads("ok")
    );
    let failed = sample_sum(&metrics, "reelfarm_tls_handshakes_failed_total", "").unwrap_or(0.0);
    assert!(
        failed >= 2.0,
        "plaintext and rogue handshakes counted: {failed}"
    );
    tried.push("certificate and client CA rotated on disk: served to new connections, open streams kept, a broken file refused (old pair kept), a worker of the new CA joins".into());

    println!("security suite (TLS): {} checks", tried.len());
    for t in &tried {
        println!("  ok: {t}");
    }
}

/// Two reload checks of the coordinator (`coordinator::tls::RELOAD_CHECK` is 2 s).
fn crate_reload_wait() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

#[tokio::test]
async fn coordinator_and_workers_reach_etcd_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("etcd CA");
    let ca_file = ca.write(dir.path(), "etcd-ca.pem").display().to_string();
    let (server_cert, server_key) = write_pair(dir.path(), "etcd", &ca.sign(&["127.0.0.1"]));
    let (client_cert, client_key) = write_pair(dir.path(), "reelfarm", &ca.sign(&["reelfarm"]));
    let etcd = reelfarm::local_etcd::LocalEtcd::start_tls(reelfarm::local_etcd::EtcdTls {
        cert: server_cert.into(),
        key: server_key.into(),
        client_ca: ca_file.clone().into(),
    })
    .expect("etcd over TLS");
    assert!(etcd.endpoint.starts_with("https://"));
    let artifacts = dir.path().join("artifacts").display().to_string();
    let etcd_flags = |with_cert: bool| {
        let mut f = vec![
            "--etcd".to_string(),
            etcd.endpoint.clone(),
            "--etcd-ca-cert".into(),
            ca_file.clone(),
            "--cluster".into(),
            "etcd-tls".into(),
            "--artifacts".into(),
            artifacts.clone(),
        ];
        if with_cert {
            f.extend([
                "--etcd-cert".into(),
                client_cert.clone(),
                "--etcd-key".into(),
                client_key.clone(),
            ]);
        }
        f
    };
    let mut tried = Vec::new();

    // Without a client certificate etcd refuses the coordinator, which says so and exits.
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(COORDINATOR_BIN)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .args(etcd_flags(false))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("a coordinator etcd refuses exits")
    .unwrap();
    assert!(!out.status.success());
    tried.push("a coordinator without an etcd client certificate: refused by etcd, exits");

    let coordinator = coordinator_process(dir.path(), etcd_flags(true)).await;
    tried.push("a coordinator with one: leads with its state in etcd over TLS");
    let worker = worker_process(
        dir.path(),
        &coordinator,
        "etcd-tls-worker",
        etcd_flags(true),
    );
    let channel = coordinator.endpoint().connect_lazy();
    let mut jobs = v1::job_service_client::JobServiceClient::new(channel.clone());
    let job = jobs
        .submit_job(v1::SubmitJobRequest {
            spec: Some(spec("a red ball")),
            idempotency_key: String::new(),
        })
        .await
        .expect("submit")
        .into_inner()
        .job
        .unwrap();
    let deadline = std::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let j = jobs
            .get_job(v1::GetJobRequest { id: job.id.clone() })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        if state(&j) == v1::JobState::Succeeded {
            break;
        }
        assert!(!is_terminal(&j), "{}", describe(&j));
        assert!(
            std::time::Instant::now() < deadline,
            "{}\nworker log:\n{}",
            describe(&j),
            worker.log()
        );
        tokio::time::sleep(POLL * 10).await;
    }
    let mut kv = etcd_client::Client::connect(
        [etcd.endpoint.clone()],
        Some(
            etcd_client::ConnectOptions::new().with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(
                        std::fs::read(&ca_file).unwrap(),
                    ))
                    .identity(etcd_client::Identity::from_pem(
                        std::fs::read(&client_cert).unwrap(),
                        std::fs::read(&client_key).unwrap(),
                    )),
            ),
        ),
    )
    .await
    .unwrap();
    let registered = kv
        .get("/reelfarm/etcd-tls/workers/etcd-tls-worker", None)
        .await
        .unwrap();
    assert_eq!(
        registered.kvs().len(),
        1,
        "the worker registered in etcd over TLS"
    );
    tried.push("a worker registered in etcd over TLS with its certificate; a job rendered");
    println!("security suite (etcd TLS): {} checks", tried.len());
    for t in &tried {
        println!("  ok: {t}");
    }
}

#[tokio::test]
async fn a_key_revoked_through_one_replica_stops_working_on_the_leader_within_seconds() {
    use common::replicas::{Farm, FarmOptions};
    let dir = tempfile::tempdir().unwrap();
    let admin_file = token_file(&dir, "admin-key", ADMIN_KEY);
    let farm = Farm::start(
        tempfile::tempdir().unwrap(),
        FarmOptions {
            coordinators: 2,
            workers: 0,
            coordinator_args: vec!["--bootstrap-admin-key-file".into(), admin_file],
            worker_args: vec![],
            lease_ttl: LEASE_TTL_SECONDS,
        },
    );
    let admin = |url: String, key: &str| {
        v1::admin_service_client::AdminServiceClient::new(with_key(
            common::replicas::channel(&url),
            Some(key),
        ))
    };
    // The leader, found with the admin key (GetClusterStatus needs one too).
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let leader = loop {
        let mut found = None;
        for (i, r) in farm.coordinators.iter().enumerate() {
            if let Ok(s) = admin(r.url(), ADMIN_KEY)
                .get_cluster_status(v1::GetClusterStatusRequest {})
                .await
            {
                if s.into_inner().leader {
                    found = Some(i);
                }
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leader:\n{}",
            farm.logs()
        );
        tokio::time::sleep(POLL * 10).await;
    };
    let follower = 1 - leader;
    let key = admin(farm.coordinators[follower].url(), ADMIN_KEY)
        .create_api_key(v1::CreateApiKeyRequest {
            tenant: "ads".into(),
            role: v1::ApiKeyRole::Read as i32,
            description: "revoked across replicas".into(),
        })
        .await
        .expect("a follower administers keys too")
        .into_inner();
    let get = || async {
        v1::job_service_client::JobServiceClient::new(with_key(
            common::replicas::channel(&farm.coordinators[leader].url()),
            Some(&key.secret),
        ))
        .get_job(v1::GetJobRequest {
            id: "00000000000000aa".into(),
        })
        .await
        .expect_err("no such job")
    };
    // Made on the follower: the leader knows it after its next refresh.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = get().await;
        if s.code() == Code::NotFound {
            break;
        }
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never learnt the key"
        );
        tokio::time::sleep(POLL * 5).await;
    }
    admin(farm.coordinators[follower].url(), ADMIN_KEY)
        .revoke_api_key(v1::RevokeApiKeyRequest {
            id: key.key.as_ref().unwrap().id.clone(),
        })
        .await
        .expect("revoked through the follower");
    let revoked_at = std::time::Instant::now();
    loop {
        let s = get().await;
        if s.code() == Code::Unauthenticated {
            assert!(s.message().contains("revoked"), "{s:?}");
            break;
        }
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(5),
            "the leader still accepts a key revoked through the follower"
        );
        tokio::time::sleep(POLL * 5).await;
    }
    println!(
        "security suite (replicas): a key revoked through the follower was refused by the \
         leader after {:?}",
        revoked_at.elapsed()
    );
}

#[tokio::test]
async fn coordinator_and_workers_log_in_to_an_etcd_with_auth_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start().expect("etcd");
    // etcd's own users: root (the role every permission), then `auth enable`.
    let mut setup = etcd_client::Client::connect([etcd.endpoint.clone()], None)
        .await
        .unwrap();
    setup.user_add("root", "s3cret-pw", None).await.unwrap();
    let _ = setup.role_add("root").await; // built in on some etcd versions
    setup.user_grant_role("root", "root").await.unwrap();
    setup.auth_enable().await.unwrap();
    let mut anonymous = etcd_client::Client::connect([etcd.endpoint.clone()], None)
        .await
        .unwrap();
    assert!(
        anonymous.get("/reelfarm/", None).await.is_err(),
        "auth is on: an anonymous client is refused"
    );
    let password = dir.path().join("etcd-password");
    std::fs::write(&password, "s3cret-pw\n").unwrap();
    let user_flags = vec![
        "--etcd".to_string(),
        etcd.endpoint.clone(),
        "--etcd-user".into(),
        "root".into(),
        "--etcd-password-file".into(),
        password.display().to_string(),
        "--cluster".into(),
        "etcd-auth".into(),
        "--artifacts".into(),
        dir.path().join("artifacts").display().to_string(),
    ];
    let coordinator = coordinator_process(dir.path(), user_flags.clone()).await;
    let worker = worker_process(dir.path(), &coordinator, "etcd-auth-worker", user_flags);
    let mut root = etcd_client::Client::connect(
        [etcd.endpoint.clone()],
        Some(etcd_client::ConnectOptions::new().with_user("root", "s3cret-pw")),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let got = root
            .get("/reelfarm/etcd-auth/workers/etcd-auth-worker", None)
            .await
            .unwrap();
        if got.kvs().len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not register:\n{}",
            worker.log()
        );
        tokio::time::sleep(POLL * 10).await;
    }
    println!(
        "security suite (etcd users): 3 checks\n  ok: an anonymous etcd client is refused\n  \
         ok: a coordinator logged in as an etcd user leads\n  ok: a worker logged in registers"
    );
}

/// A coordinator process on free loopback ports with `extra` flags, once it leads.
async fn coordinator_process(dir: &std::path::Path, extra: Vec<String>) -> Coordinator {
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{grpc_port}"),
        "--http-listen".into(),
        format!("127.0.0.1:{http_port}"),
    ];
    args.extend(extra);
    let mut coordinator = Coordinator {
        process: Process::new(
            "coordinator",
            COORDINATOR_BIN,
            args,
            dir.join("coordinator.log"),
        ),
        grpc_port,
        http_port,
        api_key: None,
        ca_cert: None,
    };
    coordinator.process.spawn();
    coordinator.wait_ready().await;
    coordinator
}

/// A CPU worker process `id` of `coordinator` with `extra` flags (started, not waited for).
fn worker_process(
    dir: &std::path::Path,
    coordinator: &Coordinator,
    id: &str,
    extra: Vec<String>,
) -> Process {
    let mut args = vec![
        "--coordinator".to_string(),
        coordinator.url(),
        "--id".into(),
        id.into(),
        "--engine".into(),
        "cpu".into(),
        "--slots".into(),
        "1".into(),
        "--http-listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--lease-ttl".into(),
        LEASE_TTL_SECONDS.to_string(),
    ];
    args.extend(extra);
    let mut worker = Process::new("worker", WORKER_BIN, args, dir.join(format!("{id}.log")));
    worker.spawn();
    worker
}

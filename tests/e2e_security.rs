//! Who may join a farm, end to end against real processes over real gRPC with etcd: with
//! `--join-token-file` on the coordinator, a worker presenting the cluster's token joins,
//! and a worker without it or with another one is refused with UNAUTHENTICATED (and never
//! listed); so is a hand-made WorkerService stream, before its registration is read. The
//! test counts what it tried and prints it.

mod common;

use common::*;
use reelfarm_proto::v1;
use tonic::Code;

const TOKEN: &str = "5f0c2a9b7e41d8c3a6b29e07d4f1c8a35e6b90d27c4a1f8e";

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
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let log = cluster.worker(id).process.log();
            if log.contains("Unauthenticated") && log.contains(says) {
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

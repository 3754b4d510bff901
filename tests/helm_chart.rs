//! Checks of the deployment artifacts: the Helm chart (helm/reelfarm), its Grafana dashboard
//! and the Dockerfile, against the code they deploy.
//!
//! - The chart lints in strict mode and renders (helm-python-sdk, no helm binary) with the
//!   default values and with every `helm/reelfarm/ci/*.yaml`; the values schema refuses a list
//!   of wrong values; every rendered manifest passes `kubernetes-validate --strict` for the
//!   newest Kubernetes it knows and for the chart's minimum (1.27). CRD objects it has no schema
//!   for (the Prometheus Operator's ServiceMonitor) are reported as skipped, never silently.
//! - Every `--flag` and `REELFARM_*` variable the chart gives a coordinator or worker container
//!   exists in that binary's real `--help`, so the chart cannot drift from the code.
//! - The rendered pods are wired for what the binaries do: coordinator replicas that stand by
//!   (each advertising its pod IP, all ready, a budget that keeps one up, rolling updates), and
//!   one artifact store for coordinator and workers — the same PVC mount, or the same
//!   `s3://` location, S3 settings and credentials with no volume.
//! - Every metric the dashboard queries is exported by a live coordinator and worker started
//!   here (in-memory state, CPU engine, free loopback ports); a job is submitted, a worker is
//!   killed mid-task (a retry) and the job cancelled, so that labelled series exist.
//!
//! The Python tools come from PyPI (scripts/test.sh installs them). When one is missing the
//! tests fail and say so: they never pass without having checked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reelfarm::local_etcd::free_port;
use serde_json::Value;

const COORDINATOR: &str = env!("CARGO_BIN_EXE_reelfarm-coordinator");
const WORKER: &str = env!("CARGO_BIN_EXE_reelfarm-worker");
const CLI: &str = env!("CARGO_BIN_EXE_reelfarm");

/// Oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native gRPC probes are GA
/// from 1.27); manifests are validated against it and against kubernetes-validate's newest.
const MIN_KUBE_VERSION: &str = "1.27.0";

/// Variables the chart sets that no binary reads yet, with the reason. They are printed, so
/// the list stays visible; everything else named REELFARM_* must be in the binary's --help.
/// Empty since S3 artifact storage landed (the chart's REELFARM_S3_* settings are read).
const PLANNED_ENV: &[(&str, &str)] = &[];

/// API groups whose kinds kubernetes-validate cannot know (CRDs): their objects are skipped,
/// with a message. Any other kind without a schema fails the test.
const CRD_GROUPS: &[&str] = &["monitoring.coreos.com"];

/// How long a live process may take to come up or a metric to appear. Debug builds on a
/// shared 2-core machine are slow; the work itself takes well under a second.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("helm/reelfarm")
}

const INSTALL_HINT: &str = "the chart tests need helm-python-sdk and kubernetes-validate from PyPI: run scripts/test.sh (it installs them), or `pip install helm-python-sdk kubernetes-validate`";

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Fails (never skips) when a Python tool is missing.
fn require_python_tools() {
    let probe = Command::new(python())
        .args(["-c", "import helm_python, kubernetes_validate, yaml"])
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
    match Command::new("kubernetes-validate")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("{INSTALL_HINT}\nkubernetes-validate --version failed: {o:?}"),
        Err(e) => panic!("{INSTALL_HINT}\nno kubernetes-validate command on PATH: {e}"),
    }
}

/// The render report of tests/helm/render_chart.py, made once for every test in this file.
struct Rendered {
    report: Value,
    /// Holds the rendered manifests until the tests end.
    _dir: tempfile::TempDir,
}

fn rendered() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        require_python_tools();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut ci: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
            .expect("helm/reelfarm/ci exists")
            .map(|e| e.expect("a readable ci/ entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        ci.sort();
        assert!(
            ci.len() >= 3,
            "expected the three scenario values files in helm/reelfarm/ci, found {ci:?}"
        );
        let out = Command::new(python())
            .arg(repo().join("tests/helm/render_chart.py"))
            .arg(chart_dir())
            .arg(dir.path())
            .args(&ci)
            .output()
            .expect("run tests/helm/render_chart.py");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "render_chart.py printed no JSON report ({e}); exit {:?}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Rendered { report, _dir: dir }
    })
}

fn sets() -> &'static [Value] {
    rendered().report["sets"]
        .as_array()
        .expect("the report lists value sets")
}

fn documents(set: &Value) -> impl Iterator<Item = &Value> {
    set["documents"]
        .as_array()
        .expect("each set lists its documents")
        .iter()
}

#[test]
fn chart_lints_strict_and_renders_with_every_values_file() {
    let report = &rendered().report;
    println!(
        "helm SDK {} (helm-python-sdk, no helm binary)",
        report["helm_sdk"]
    );
    let names: Vec<&str> = sets().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "default",
            "cpu-trial-values",
            "external-etcd-s3-values",
            "minio-s3-values"
        ],
        "expected renders of the default values and the three ci/ scenarios"
    );
    for set in sets() {
        let name = set["name"].as_str().unwrap_or("?");
        assert!(
            set.get("render_error").is_none(),
            "{name}: render failed: {}",
            set["render_error"]
        );
        for m in set["lint"].as_array().expect("lint messages") {
            println!(
                "{name}: lint severity {}: {} {}",
                m["severity"], m["path"], m["error"]
            );
            assert!(
                m["severity"].as_i64().unwrap_or(3) < 2,
                "{name}: helm lint --strict reports a warning or error: {m}"
            );
        }
        assert_eq!(
            set["lint_errors"].as_array().map(Vec::len),
            Some(0),
            "{name}: helm lint errors: {}",
            set["lint_errors"]
        );
        let kinds: Vec<&str> = documents(set)
            .filter_map(|d| d["object"]["kind"].as_str())
            .collect();
        println!("{name}: rendered {kinds:?}");
        assert!(
            kinds.contains(&"Deployment") && kinds.contains(&"Service"),
            "{name}: expected at least the coordinator Deployment and Service, got {kinds:?}"
        );
        assert!(
            set["notes"]
                .as_str()
                .is_some_and(|n| n.contains("grpcurl -plaintext")),
            "{name}: NOTES.txt should show grpcurl commands"
        );
    }
}

#[test]
fn values_schema_refuses_wrong_values() {
    let rejections = rendered().report["schema_rejections"]
        .as_array()
        .expect("schema rejection cases");
    assert!(!rejections.is_empty(), "expected schema rejection cases");
    for case in rejections {
        println!("schema refuses {}: {}", case["case"], case["error"]);
        assert_eq!(
            case["rejected"],
            Value::Bool(true),
            "values.schema.json should refuse {}",
            case["case"]
        );
    }
}

#[test]
fn rendered_manifests_pass_kubernetes_validate_strict() {
    for set in sets() {
        let name = set["name"].as_str().unwrap_or("?");
        let mut files = Vec::new();
        for doc in documents(set) {
            let file = doc["file"].as_str().expect("document file");
            let api = doc["object"]["apiVersion"].as_str().unwrap_or("");
            let kind = doc["object"]["kind"].as_str().unwrap_or("");
            let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
            if CRD_GROUPS.contains(&group) {
                println!(
                    "{name}: SKIPPED {kind} ({api}) in {file}: a CRD, kubernetes-validate has no schema for it"
                );
                continue;
            }
            files.push(file.to_string());
        }
        for version in [None, Some(MIN_KUBE_VERSION)] {
            let mut cmd = Command::new("kubernetes-validate");
            cmd.arg("--strict");
            if let Some(v) = version {
                cmd.args(["--kubernetes-version", v]);
            }
            let out = cmd
                .args(&files)
                .output()
                .unwrap_or_else(|e| panic!("{INSTALL_HINT}\ncannot run kubernetes-validate: {e}"));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let label = version.unwrap_or("default (newest)");
            assert!(
                out.status.success(),
                "{name}: kubernetes-validate --strict (kubernetes {label}) failed:\n{text}"
            );
            for file in &files {
                let passed = text
                    .lines()
                    .any(|l| l.contains(file.as_str()) && l.contains(" passed "));
                assert!(
                    passed,
                    "{name}: kubernetes-validate (kubernetes {label}) did not pass {file}:\n{text}"
                );
            }
            println!(
                "{name}: kubernetes-validate --strict (kubernetes {label}) passed {} manifests",
                files.len()
            );
        }
    }
}

/// The coordinator and worker pod templates of a rendered set (kind, object).
fn workloads(set: &Value) -> Vec<&Value> {
    documents(set)
        .map(|d| &d["object"])
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .filter(|o| container_binary(&o["spec"]["template"]["spec"]["containers"][0]).is_some())
        .collect()
}

/// The value of `--name=VALUE` in a container's args.
fn arg<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

/// A container's env entry named `name`.
fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

/// GPU workers (the production scenario): one nvidia.com/gpu per pod, the CUDA image,
/// `--engine cuda`, GPU nodes and their taint, and the driver capabilities NVML needs; CPU
/// scenarios ask for none of it. The scenario's worker arguments are then given to a worker
/// binary: this (CPU) build must refuse `--engine cuda` by naming the cuda feature, which is
/// why the chart runs the `-cuda` image; and where scripts/cuda-check.sh passes the CUDA
/// build in REELFARM_CUDA_WORKER, it must accept every argument and stop only at the driver
/// check (no GPU here) — on a GPU node that is where it starts.
#[test]
fn gpu_workers_request_a_gpu_run_the_cuda_image_and_accept_their_arguments() {
    let mut gpu_scenarios = 0;
    for set in sets() {
        let name = set["name"].as_str().unwrap_or("?");
        let worker = workloads(set)
            .into_iter()
            .find(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-worker"))
            })
            .unwrap_or_else(|| panic!("{name}: no worker workload"));
        let pod = &worker["spec"]["template"]["spec"];
        let w = &pod["containers"][0];
        let gpus = &w["resources"]["limits"]["nvidia.com/gpu"];
        let image = w["image"].as_str().unwrap_or("");
        if name != "external-etcd-s3-values" {
            assert!(gpus.is_null(), "{name}: a CPU scenario requests {gpus}");
            assert!(!image.ends_with("-cuda"), "{name}: CPU workers run {image}");
            continue;
        }
        gpu_scenarios += 1;
        assert_eq!(gpus.as_i64(), Some(1), "{name}: one GPU per worker pod");
        assert_eq!(
            image, "registry.example.com/reelfarm/reelfarm:0.1.0-cuda",
            "{name}: GPU workers run the CUDA image"
        );
        assert_eq!(arg(w, "engine"), Some("cuda"), "{name}");
        assert_eq!(
            env(w, "NVIDIA_DRIVER_CAPABILITIES").map(|e| &e["value"]),
            Some(&Value::from("compute,utility")),
            "{name}: NVML (utility) for the GPU gauges"
        );
        assert_eq!(
            pod["nodeSelector"]["nvidia.com/gpu.present"], "true",
            "{name}"
        );
        assert!(
            pod["tolerations"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu")),
            "{name}: GPU nodes' taint is tolerated: {}",
            pod["tolerations"]
        );

        // The join token Secret is mounted in the pod; here a file with a token stands in.
        let secrets = tempfile::tempdir().unwrap();
        let token_file = secrets.path().join("join-token");
        std::fs::write(&token_file, "0".repeat(48)).unwrap();
        let rendered: Vec<&str> = w["args"]
            .as_array()
            .expect("worker args")
            .iter()
            .map(|a| a.as_str().expect("string args"))
            .collect();
        assert!(
            rendered.contains(&"--join-token-file=/etc/reelfarm/join-token/join-token"),
            "{name}: workers present the join token: {rendered:?}"
        );
        let args: Vec<String> = rendered
            .iter()
            .map(|a| match a.strip_prefix("--join-token-file=") {
                Some(_) => format!("--join-token-file={}", token_file.display()),
                None => a.to_string(),
            })
            .collect();
        let start = |binary: &str| {
            let mut cmd = without_reelfarm_env(Command::new(binary));
            let out = cmd.args(&args).output().expect("the worker binary runs");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, log) = start(WORKER);
        assert!(
            !ok && log.contains("built without the `cuda` feature"),
            "{name}: the CPU build must refuse --engine cuda by naming the feature:\n{log}"
        );
        match std::env::var("REELFARM_CUDA_WORKER") {
            Ok(cuda_worker) => {
                let (ok, log) = start(&cuda_worker);
                assert!(
                    !ok && log.contains("--engine cuda: no CUDA driver"),
                    "{name}: the CUDA build must accept the chart's arguments and stop only at \
                     the driver check on this GPU-less machine:\n{log}"
                );
                println!(
                    "{name}: the CUDA worker accepts the chart's arguments: {}",
                    log.trim()
                );
            }
            Err(_) => println!(
                "{name}: REELFARM_CUDA_WORKER not set: the CUDA worker's start with these \
                 arguments is checked by scripts/cuda-check.sh"
            ),
        }
    }
    assert_eq!(gpu_scenarios, 1, "the production scenario runs GPU workers");
}

#[test]
fn chart_runs_standby_coordinators_and_one_artifact_store() {
    for set in sets() {
        let name = set["name"].as_str().unwrap_or("?");
        let workloads = workloads(set);
        let coordinator = workloads
            .iter()
            .find(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-coordinator"))
            })
            .unwrap_or_else(|| panic!("{name}: no coordinator Deployment"));
        let worker = workloads
            .iter()
            .find(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-worker"))
            })
            .unwrap_or_else(|| panic!("{name}: no worker workload"));
        let c = &coordinator["spec"]["template"]["spec"]["containers"][0];
        let w = &worker["spec"]["template"]["spec"]["containers"][0];

        // worker.models mounts the weights read-only and passes --models; off by default.
        let models = arg(w, "models");
        if name == "external-etcd-s3-values" {
            assert_eq!(models, Some("/models"), "{name}");
            let mounts = w["volumeMounts"].as_array().expect("mounts");
            assert!(
                mounts.iter().any(|m| m["name"] == "models"
                    && m["mountPath"] == "/models"
                    && m["readOnly"] == true),
                "{name}: {mounts:?}"
            );
            let volumes = worker["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .expect("volumes");
            assert!(
                volumes.iter().any(|v| v["name"] == "models"
                    && v["persistentVolumeClaim"]["claimName"] == "wan-weights"),
                "{name}: {volumes:?}"
            );
        } else {
            assert_eq!(models, None, "{name}");
        }

        // resultCache: false becomes --no-result-cache; the default adds nothing.
        let no_cache = c["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "--no-result-cache"));
        assert_eq!(
            no_cache,
            name == "minio-s3-values",
            "{name}: --no-result-cache from coordinator.resultCache"
        );
        // Coordinators check the workers' join token, read from the mounted Secret.
        assert_eq!(
            arg(c, "join-token-file"),
            Some("/etc/reelfarm/join-token/join-token"),
            "{name}: --join-token-file from joinToken"
        );
        // Clients need API keys: the bootstrap admin key from its mounted Secret.
        assert_eq!(
            arg(c, "bootstrap-admin-key-file"),
            Some("/etc/reelfarm/admin-key/admin-key"),
            "{name}: --bootstrap-admin-key-file from auth.bootstrapAdminKey"
        );
        // The chart-made Secret holds a key of the shape the coordinator reads.
        let secret = documents(set)
            .map(|d| &d["object"])
            .find(|o| {
                o["kind"] == "Secret"
                    && o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with("-admin-key"))
            })
            .unwrap_or_else(|| panic!("{name}: no admin key Secret"));
        let encoded = secret["data"]["admin-key"]
            .as_str()
            .expect("data.admin-key");
        let key = String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                .expect("base64"),
        )
        .expect("UTF-8");
        reelfarm_proto::auth::ApiKeyToken::parse(&key)
            .unwrap_or_else(|e| panic!("{name}: the generated admin key: {e}"));
        // TLS from tls.secretName: the coordinators serve it, workers dial https with its CA.
        let tls = name == "minio-s3-values";
        assert_eq!(
            arg(c, "tls-cert").is_some(),
            tls,
            "{name}: --tls-cert from tls.secretName"
        );
        assert_eq!(
            arg(w, "ca-cert").is_some(),
            tls,
            "{name}: workers' --ca-cert"
        );
        assert_eq!(
            arg(w, "coordinator").is_some_and(|a| a.starts_with("https://")),
            tls,
            "{name}: workers dial https with TLS"
        );
        // etcd over TLS with an etcd user from etcd.external.
        let etcd_tls = name == "external-etcd-s3-values";
        for container in [c, w] {
            assert_eq!(
                arg(container, "etcd-cert").is_some(),
                etcd_tls,
                "{name}: --etcd-cert"
            );
            assert_eq!(
                arg(container, "etcd-user"),
                etcd_tls.then_some("reelfarm"),
                "{name}"
            );
        }
        // NetworkPolicies where networkPolicy.enabled; etcd's only with the in-chart etcd.
        let policies: Vec<&str> = documents(set)
            .map(|d| &d["object"])
            .filter(|o| o["kind"] == "NetworkPolicy")
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        let expected = match name {
            "minio-s3-values" => 3,
            "external-etcd-s3-values" => 2,
            _ => 0,
        };
        assert_eq!(policies.len(), expected, "{name}: {policies:?}");
        let coordinator_pod = &coordinator["spec"]["template"]["spec"];
        assert!(
            coordinator_pod["volumes"].as_array().is_some_and(|v| v
                .iter()
                .any(|v| v["name"] == "admin-key" && v["secret"]["secretName"].is_string())),
            "{name}: the admin key Secret is a volume: {}",
            coordinator_pod["volumes"]
        );
        // A tenantWeights map becomes one --tenant-weights flag (sorted by tenant).
        let expected_weights = (name == "external-etcd-s3-values").then_some("ads=3,crm=1");
        assert_eq!(
            arg(c, "tenant-weights"),
            expected_weights,
            "{name}: --tenant-weights from coordinator.tenantWeights"
        );

        // Leader election: several replicas, each advertising its own pod IP.
        let replicas = coordinator["spec"]["replicas"].as_i64().unwrap_or(1);
        assert!(
            replicas >= 2,
            "{name}: expected standby coordinators, got {replicas} replica(s)"
        );
        assert_eq!(
            coordinator["spec"]["strategy"]["type"], "RollingUpdate",
            "{name}: replicas elect a leader, so the coordinator rolls"
        );
        let env_names: Vec<&str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        let pod_ip = env_names.iter().position(|n| *n == "POD_IP");
        let advertise = env_names
            .iter()
            .position(|n| *n == "REELFARM_ADVERTISE_ADDRESS");
        assert!(
            matches!((pod_ip, advertise), (Some(p), Some(a)) if p < a),
            "{name}: POD_IP must be defined before REELFARM_ADVERTISE_ADDRESS uses it: {env_names:?}"
        );
        assert_eq!(
            env(c, "POD_IP").map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&Value::from("status.podIP")),
            "{name}: POD_IP comes from the downward API"
        );
        let grpc_port = c["ports"][0]["containerPort"]
            .as_i64()
            .expect("the grpc port");
        assert_eq!(
            env(c, "REELFARM_ADVERTISE_ADDRESS").map(|e| &e["value"]),
            Some(&Value::from(format!(
                "{}://$(POD_IP):{grpc_port}",
                if name == "minio-s3-values" {
                    "https"
                } else {
                    "http"
                }
            ))),
            "{name}: the advertised address is the pod IP and the gRPC port (https with TLS)"
        );
        assert!(
            c["readinessProbe"]["grpc"].get("service").is_none(),
            "{name}: standbys must be ready too (probe the overall health service), or rolling \
             updates stall and the budget blocks drains: {}",
            c["readinessProbe"]
        );
        let pdb = documents(set)
            .map(|d| &d["object"])
            .find(|o| {
                o["kind"] == "PodDisruptionBudget"
                    && o["metadata"]["name"] == coordinator["metadata"]["name"]
            })
            .unwrap_or_else(|| panic!("{name}: no coordinator PodDisruptionBudget"));
        let min_available = pdb["spec"]["minAvailable"].as_i64().unwrap_or(0);
        assert!(
            (1..replicas).contains(&min_available),
            "{name}: the budget should keep a leader up and still let a node drain: minAvailable {min_available} of {replicas}"
        );
        assert!(
            arg(w, "etcd").is_some(),
            "{name}: workers register in etcd (--etcd)"
        );

        // One artifact store for everyone.
        let location = arg(c, "artifacts").unwrap_or_else(|| panic!("{name}: no --artifacts"));
        assert_eq!(
            arg(w, "artifacts"),
            Some(location),
            "{name}: coordinator and workers must name the same artifact store"
        );
        let mounts = |container: &Value| -> Vec<(String, String)> {
            container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["mountPath"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        };
        let claim = |object: &Value| -> Option<String> {
            object["spec"]["template"]["spec"]["volumes"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == "artifacts")?["persistentVolumeClaim"]["claimName"]
                .as_str()
                .map(str::to_string)
        };
        if location.starts_with("s3://") {
            for (who, container, object) in [("coordinator", c, coordinator), ("worker", w, worker)]
            {
                assert!(
                    claim(object).is_none()
                        && !mounts(container).iter().any(|(n, _)| n == "artifacts"),
                    "{name}: the {who} needs no artifact volume with S3"
                );
                for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                    assert!(
                        env(container, var)
                            .is_some_and(|e| e["valueFrom"]["secretKeyRef"].is_object()),
                        "{name}: the {who} reads {var} from a Secret"
                    );
                }
            }
            for var in [
                "REELFARM_S3_REGION",
                "REELFARM_S3_ENDPOINT",
                "REELFARM_S3_FORCE_PATH_STYLE",
                "REELFARM_S3_ALLOW_HTTP",
            ] {
                assert_eq!(
                    env(c, var),
                    env(w, var),
                    "{name}: {var} must be the same on the coordinator and the workers"
                );
            }
            println!("{name}: coordinator and workers share {location}");
        } else {
            assert!(
                claim(coordinator).is_some() && claim(coordinator) == claim(worker),
                "{name}: coordinator and workers mount the same artifact claim"
            );
            for (who, container) in [("coordinator", c), ("worker", w)] {
                assert!(
                    mounts(container).contains(&("artifacts".to_string(), location.to_string())),
                    "{name}: the {who} mounts the artifact claim at --artifacts {location}"
                );
            }
            println!(
                "{name}: coordinator and workers share claim {:?} at {location}",
                claim(worker)
            );
        }
    }
}

/// `--flag` names and `REELFARM_*` variables in a binary's --help.
struct Help {
    flags: Vec<String>,
    env: Vec<String>,
}

fn help_of(binary: &str) -> Help {
    let out = Command::new(binary)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("run {binary} --help: {e}"));
    assert!(out.status.success(), "{binary} --help failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut flags = Vec::new();
    let mut env = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        if let Some(flag) = word.strip_prefix("--") {
            let flag = flag.split(['=', '<']).next().unwrap_or("");
            if !flag.is_empty() {
                flags.push(flag.to_string());
            }
        }
    }
    for part in text.split("[env: ").skip(1) {
        if let Some(var) = part.split(['=', ']']).next() {
            env.push(var.to_string());
        }
    }
    Help { flags, env }
}

fn container_binary(container: &Value) -> Option<&'static str> {
    let command = container["command"][0].as_str()?;
    match command.rsplit('/').next()? {
        "reelfarm-coordinator" => Some(COORDINATOR),
        "reelfarm-worker" => Some(WORKER),
        _ => None,
    }
}

#[test]
fn chart_flags_and_env_exist_in_the_binaries_help() {
    let coordinator = help_of(COORDINATOR);
    let worker = help_of(WORKER);
    assert!(
        coordinator.flags.iter().any(|f| f == "listen")
            && worker.flags.iter().any(|f| f == "coordinator"),
        "could not read flags from --help: {:?} / {:?}",
        coordinator.flags,
        worker.flags
    );
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    for (var, why) in PLANNED_ENV {
        println!("chart sets {var}, which no binary reads yet: {why}");
    }
    let mut checked = 0;
    for set in sets() {
        let name = set["name"].as_str().unwrap_or("?");
        for doc in documents(set) {
            let object = &doc["object"];
            let Some(containers) = object["spec"]["template"]["spec"]["containers"].as_array()
            else {
                continue;
            };
            for container in containers {
                let Some(binary) = container_binary(container) else {
                    continue;
                };
                let command = container["command"][0].as_str().unwrap_or("");
                let file = command.rsplit('/').next().unwrap_or("");
                assert!(
                    command.starts_with("/usr/local/bin/") && dockerfile.contains(file),
                    "{name}: {command} is not a binary the Dockerfile installs in /usr/local/bin"
                );
                let help = if binary == COORDINATOR {
                    &coordinator
                } else {
                    &worker
                };
                let where_ = format!(
                    "{name}: {} {} container {}",
                    object["kind"].as_str().unwrap_or("?"),
                    object["metadata"]["name"].as_str().unwrap_or("?"),
                    container["name"].as_str().unwrap_or("?")
                );
                for arg in container["args"].as_array().into_iter().flatten() {
                    let arg = arg.as_str().expect("args are strings");
                    let Some(flag) = arg.strip_prefix("--") else {
                        continue;
                    };
                    let flag = flag.split('=').next().unwrap_or("");
                    assert!(
                        help.flags.iter().any(|f| f == flag),
                        "{where_}: --{flag} is not a flag of {binary} (its --help lists {:?})",
                        help.flags
                    );
                    checked += 1;
                }
                for env in container["env"].as_array().into_iter().flatten() {
                    let var = env["name"].as_str().expect("env names are strings");
                    if !var.starts_with("REELFARM_") || PLANNED_ENV.iter().any(|(p, _)| *p == var) {
                        continue;
                    }
                    assert!(
                        help.env.iter().any(|e| e == var),
                        "{where_}: {var} is not read by {binary} (its --help lists {:?})",
                        help.env
                    );
                    checked += 1;
                }
            }
        }
    }
    println!("checked {checked} flags and variables against the binaries' --help");
    assert!(
        checked > 20,
        "expected to check the coordinator's and workers' flags, checked {checked}"
    );
}

// ---------------------------------------------------------------------------------------------
// Live metrics

/// A child process killed when dropped, with its output in a log file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &'static str, binary: &str, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create a log file");
        let child = without_reelfarm_env(Command::new(binary))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        Proc { name, child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command without REELFARM_* variables from the test's environment: every setting comes
/// from the flags given here (an inherited REELFARM_ETCD would leave the in-memory mode).
fn without_reelfarm_env(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REELFARM_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// GET http://127.0.0.1:port/path, the body when the status is 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Metric families (from `# TYPE name kind` lines) of a /metrics text, with their kind.
fn families(metrics: &str) -> Vec<(String, String)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// Whether a series name from a query is exported: a family itself, or a histogram's
/// _bucket/_sum/_count series.
fn exported(name: &str, families: &[(String, String)]) -> bool {
    if families.iter().any(|(f, _)| f == name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            families
                .iter()
                .any(|(f, kind)| f == base && (kind == "histogram" || kind == "summary"))
        })
    })
}

/// Sum of the samples of `name` whose label set contains `labels` (e.g. `kind="segment"`).
fn sample_sum(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.is_empty() || l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_for<T>(what: &str, procs: &mut [&mut Proc], mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {READY_TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Metric names used by the dashboard's queries (targets and template variables).
fn dashboard_metric_names() -> Vec<String> {
    let text = std::fs::read_to_string(chart_dir().join("dashboards/reelfarm.json"))
        .expect("helm/reelfarm/dashboards/reelfarm.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("a target expr").to_string());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = var["definition"].as_str() {
            queries.push(q.to_string());
        }
    }
    let mut names: Vec<String> = Vec::new();
    for q in &queries {
        let bytes = q.as_bytes();
        let mut i = 0;
        while let Some(pos) = q[i..].find("reelfarm_") {
            let start = i + pos;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = q[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(q.len(), |e| start + e);
            if boundary && !names.iter().any(|n| n == &q[start..end]) {
                names.push(q[start..end].to_string());
            }
            i = end;
        }
    }
    names.sort();
    names
}

/// The panels an operator needs at a glance: (words in the title, metric it must query).
const REQUIRED_PANELS: &[(&str, &str)] = &[
    ("jobs finished per minute", "reelfarm_jobs_finished_total"),
    (
        "frames generated per second",
        "reelfarm_worker_frames_generated_total",
    ),
    (
        "audio seconds generated per second",
        "reelfarm_worker_audio_seconds_generated_total",
    ),
    ("queue depth", "reelfarm_queue_depth"),
    (
        "dispatch latency",
        "reelfarm_dispatch_latency_seconds_bucket",
    ),
    ("task retries", "reelfarm_tasks_retried_total"),
    (
        "gpu / engine busy ratio per worker",
        "reelfarm_worker_engine_busy_ratio",
    ),
    ("workers by state", "reelfarm_workers"),
];

#[test]
fn dashboard_shows_throughput_queue_latency_retries_busy_ratio_and_workers() {
    let text = std::fs::read_to_string(chart_dir().join("dashboards/reelfarm.json"))
        .expect("helm/reelfarm/dashboards/reelfarm.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    for (title, metric) in REQUIRED_PANELS {
        let panel = panels
            .iter()
            .find(|p| {
                p["title"]
                    .as_str()
                    .is_some_and(|t| t.to_lowercase().contains(title))
            })
            .unwrap_or_else(|| panic!("the dashboard has no panel titled like {title:?}"));
        let queries: Vec<&str> = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        assert!(
            queries.iter().any(|q| q.contains(metric)),
            "panel {:?} should query {metric}, has {queries:?}",
            panel["title"]
        );
    }
}

#[test]
fn dashboard_metrics_exist_in_live_coordinator_and_worker_metrics() {
    let names = dashboard_metric_names();
    assert!(
        names.len() >= 7,
        "expected the dashboard's metrics, found {names:?}"
    );

    let dir = tempfile::tempdir().expect("a temporary directory");
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("create the artifact dir");
    let artifacts = artifacts.to_string_lossy().to_string();
    let (grpc, http, worker_http) = (free_port(), free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{grpc}");

    let mut coordinator = Proc::start(
        "coordinator",
        COORDINATOR,
        &[
            format!("--listen=127.0.0.1:{grpc}"),
            format!("--http-listen=127.0.0.1:{http}"),
            format!("--artifacts={artifacts}"),
        ],
        dir.path(),
    );
    wait_for(
        "the coordinator's /metrics",
        &mut [&mut coordinator],
        || http_get(http, "/metrics"),
    );
    let start_worker = |id: &'static str, port: u16| {
        Proc::start(
            id,
            WORKER,
            &[
                format!("--coordinator={endpoint}"),
                format!("--id={id}"),
                "--engine=cpu".to_string(),
                "--slots=1".to_string(),
                format!("--artifacts={artifacts}"),
                format!("--http-listen=127.0.0.1:{port}"),
            ],
            dir.path(),
        )
    };

    // A job keeps a worker busy for a while (4 segments of 12 frames, 40 steps each), so a
    // worker killed after its first segment dispatch leaves a task ASSIGNED or RUNNING: the
    // coordinator requeues it, counting reelfarm_tasks_retried_total{reason="stream_closed"}.
    let mut worker_metrics = String::new();
    let mut retried = false;
    for attempt in 1..=3 {
        let port = if attempt == 1 {
            worker_http
        } else {
            free_port()
        };
        let mut worker = start_worker("worker-a", port);
        wait_for(
            "the worker to connect",
            &mut [&mut coordinator, &mut worker],
            || {
                let m = http_get(http, "/metrics")?;
                (sample_sum(&m, "reelfarm_workers", "state=\"active\"") >= 1.0).then_some(())
            },
        );
        let segments_before = http_get(http, "/metrics")
            .map(|m| sample_sum(&m, "reelfarm_tasks_dispatched_total", "kind=\"segment\""))
            .unwrap_or(0.0);
        let out = cli(
            &endpoint,
            &[
                "submit",
                "a red rubber ball bouncing on a wooden floor",
                "--duration=4",
                "--fps=12",
                "--width=320",
                "--height=180",
                "--steps=40",
            ],
        );
        let job: Value =
            serde_json::from_slice(&out.stdout).expect("submit prints the job as JSON");
        let job_id = job["id"].as_str().expect("a job id").to_string();
        wait_for(
            "a segment task on the worker",
            &mut [&mut coordinator, &mut worker],
            || {
                let m = http_get(http, "/metrics")?;
                (sample_sum(&m, "reelfarm_tasks_dispatched_total", "kind=\"segment\"")
                    > segments_before)
                    .then_some(())
            },
        );
        worker_metrics = http_get(port, "/metrics").expect("the worker's /metrics");
        drop(worker); // SIGKILL: the session stream closes with the task unfinished.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !retried {
            retried = http_get(http, "/metrics")
                .is_some_and(|m| sample_sum(&m, "reelfarm_tasks_retried_total", "") > 0.0);
            std::thread::sleep(Duration::from_millis(100));
        }
        // Cancelling counts the job in reelfarm_jobs_finished_total{state="cancelled"}; a job
        // that already ended refuses, which is fine: it was counted then.
        let _ = cli_output(&endpoint, &["cancel", &job_id]);
        if retried {
            break;
        }
        println!("attempt {attempt}: the worker finished its task before it was killed; again");
    }
    assert!(retried, "killing a busy worker should count a task retry");

    // Finished jobs: the cancelled job is counted by state.
    let coordinator_metrics = wait_for("a finished job", &mut [&mut coordinator], || {
        let m = http_get(http, "/metrics")?;
        (sample_sum(&m, "reelfarm_jobs_finished_total", "") >= 1.0).then_some(m)
    });
    let coordinator_families = families(&coordinator_metrics);
    let worker_families = families(&worker_metrics);
    println!(
        "coordinator exports {:?}",
        coordinator_families
            .iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    );
    println!(
        "worker exports {:?}",
        worker_families.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let mut missing = Vec::new();
    for name in &names {
        let in_coordinator = exported(name, &coordinator_families);
        let in_worker = exported(name, &worker_families);
        println!(
            "dashboard metric {name}: {}",
            match (in_coordinator, in_worker) {
                (true, true) => "coordinator and worker",
                (true, false) => "coordinator",
                (false, true) => "worker",
                (false, false) => "MISSING",
            }
        );
        if !in_coordinator && !in_worker {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that neither a live coordinator nor a worker exports: {missing:?}\ncoordinator log:\n{}",
        coordinator.log_text()
    );
}

/// Runs the `reelfarm` CLI with JSON output.
fn cli_output(endpoint: &str, args: &[&str]) -> Output {
    without_reelfarm_env(Command::new(CLI))
        .arg(format!("--coordinator={endpoint}"))
        .arg("--output=json")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run reelfarm {args:?}: {e}"))
}

/// Runs the `reelfarm` CLI with JSON output; fails the test when it fails.
fn cli(endpoint: &str, args: &[&str]) -> Output {
    let out = cli_output(endpoint, args);
    assert!(
        out.status.success(),
        "reelfarm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

//! The deployment kit in `deploy/`, checked with the tools made for each part: the Dockerfile
//! with hadolint, the Kubernetes manifests with kubernetes-validate (against Kubernetes 1.31),
//! the Grafana dashboard against a live `tickflow serve`'s `/metrics` and its queries with
//! promtool, the compose stack's mounts and Prometheus configuration with promtool. (No
//! Docker engine or Kubernetes cluster runs here: images and pods are not started.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::stderr;
use crate::security::boundary;
use crate::serve::VIEWER_KEY;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A program of the test tools' venv (`deploy/kafka-broker.sh python` makes it).
fn tool(name: &str) -> PathBuf {
    let o = Command::new("bash")
        .arg(repo().join("deploy/kafka-broker.sh"))
        .arg("python")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let python = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
    python.with_file_name(name)
}

/// Runs `program` with `args`; its output, after checking it succeeded.
fn check(program: &Path, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{} {args:?}: {out}", program.display());
    out
}

#[test]
fn the_dockerfile_passes_hadolint_and_runs_the_binary_unprivileged_with_a_health_check() {
    let dockerfile = repo().join("deploy/Dockerfile");
    check(
        &tool("hadolint"),
        &["--failure-threshold", "info", dockerfile.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "multi-stage: build, then runtime");
    assert!(text.contains("\nUSER 10001\n"), "runs as a non-root user");
    assert!(text.contains("\"tickflow\", \"health\", \"http://127.0.0.1:8080/health/live\""));
}

#[test]
fn the_kubernetes_manifests_validate_against_kubernetes_1_31() {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let mut args = vec!["--kubernetes-version", "1.31.0", "--strict"];
    args.extend(files.iter().map(String::as_str));
    let out = check(&tool("kubernetes-validate"), &args);
    for kind in [
        "statefulset/tickflow",
        "service/tickflow",
        "configmap/",
        "secret/",
    ] {
        assert!(out.contains(kind), "{kind} not validated: {out}");
    }
    let serve = std::fs::read_to_string(dir.join("serve.yaml")).unwrap();
    for needed in [
        "path: /health/live",
        "path: /health/ready",
        "volumeClaimTemplates:",
        "clusterIP: None",
        "requests: {cpu",
    ] {
        assert!(serve.contains(needed), "serve.yaml lacks {needed}");
    }
    let run = std::fs::read_to_string(dir.join("run-cluster.yaml")).unwrap();
    assert!(run.contains("TICKFLOW_PROCESSES") && run.contains("TICKFLOW_HOSTS"));
    assert!(run.contains("--data-dir") && run.contains("volumeClaimTemplates:"));
}

/// Metric families of a `/metrics` text: `# TYPE` names, with a histogram's series names.
fn families(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if (parts.next(), parts.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn the_dashboard_names_only_metrics_a_live_server_exports_and_its_queries_parse() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/tickflow.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    let titles = dashboard["panels"].to_string();
    for topic in [
        "Ticks in",
        "Bars out",
        "Dead letters",
        "Late ticks",
        "Watermark lag",
        "Checkpoint duration",
        "Checkpoints committed",
        "Kafka consumer lag",
        "API requests",
        "Deployments by state",
        "Rollout checks",
    ] {
        assert!(titles.contains(topic), "no panel for {topic}");
    }

    // A live server with a deployment that ran (checkpoints included).
    let b = boundary("", "");
    b.deploy_checkpointed("dashboard");
    b.server.wait_for("/api/v1/deployments/1", "the end", |v| {
        v["state"] == "finished"
    });
    let (status, metrics) = b.server.call("GET", "/metrics", Some(VIEWER_KEY), None);
    assert_eq!(status, 200);
    let exported = families(metrics.as_str().unwrap());
    let mut named = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("tickflow_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            named.insert(name);
        }
    }
    assert!(named.len() >= 10, "{named:?}");
    let unknown: Vec<&String> = named.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics the server does not export: {unknown:?}; exported: \
         {exported:?}"
    );

    // Every query is valid PromQL: promtool checks them as recording rules.
    let tmp = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("tickflow:dashboard_query_{i}"), "expr": e}))
        .collect();
    let file = tmp.path().join("rules.json");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = check(
        Path::new("promtool"),
        &["check", "rules", file.to_str().unwrap()],
    );
    assert!(
        out.contains(&format!("{} rules found", exprs.len())),
        "{out}"
    );
}

#[test]
fn the_compose_stack_mounts_files_that_exist_and_its_prometheus_config_passes_promtool() {
    let compose_dir = repo().join("deploy/compose");
    // The compose file as JSON, read by PyYAML (no YAML parser among the crates).
    let python = tool("python");
    let o = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(compose_dir.join("compose.yaml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let compose: Value = serde_json::from_slice(&o.stdout).unwrap();
    let services = compose["services"].as_object().unwrap();
    for s in ["kafka", "tickflow", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "no {s} service");
    }
    assert_eq!(
        compose["services"]["tickflow"]["build"]["dockerfile"],
        "deploy/Dockerfile"
    );
    // Bind mounts: each exists in the repository, or is one of the two files the README's step
    // writes (the API keys' hashes and Prometheus's viewer key).
    let written = ["./keys.toml", "./viewer.key"];
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if !source.starts_with('.') || written.contains(&source) {
                continue;
            }
            assert!(
                compose_dir.join(source).exists(),
                "service {name} mounts {source}, which does not exist"
            );
        }
    }
    // Prometheus's configuration, with its credentials file where promtool can find it.
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("viewer.key");
    std::fs::write(&key, "a-viewer-key").unwrap();
    let config = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml"))
        .unwrap()
        .replace("/etc/prometheus/viewer.key", key.to_str().unwrap());
    let file = tmp.path().join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    check(
        Path::new("promtool"),
        &["check", "config", file.to_str().unwrap()],
    );
}

#[test]
fn settings_and_keys_load_from_two_files_and_the_health_command_asks_the_live_route() {
    // As in the manifests: settings from a ConfigMap's file, keys from a Secret's.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("data")).unwrap();
    let full = crate::serve::config_text(root.path(), "", "");
    let at = full.find("[[api.keys]]").unwrap();
    std::fs::write(root.path().join("serve.toml"), &full[..at]).unwrap();
    let keys = root.path().join("keys.toml");
    std::fs::write(&keys, &full[at..]).unwrap();
    let server = crate::serve::Server::start(root.path(), &["--config", keys.to_str().unwrap()]);
    let (status, _) = server.call("GET", "/metrics", Some(VIEWER_KEY), None);
    assert_eq!(status, 200, "the second file's keys are loaded");
    let health = |path: &str| {
        crate::common::tickflow()
            .args(["health", &format!("{}{path}", server.base)])
            .output()
            .unwrap()
    };
    let ok = health("/health/live");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let missing = health("/no-such-route");
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("404"), "{}", stderr(&missing));
    let closed = crate::common::tickflow()
        .args(["health", "http://127.0.0.1:1/health/live", "--timeout", "1"])
        .output()
        .unwrap();
    assert!(!closed.status.success());
}

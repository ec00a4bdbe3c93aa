//! Rollout tools on Kafka graphs: a backtest on a recorded offset range, and a shadow reading
//! the topic as a consumer group of its own.

use serde_json::Value;

use crate::common::*;
use crate::kafka::{kafka_graph, setup, DEAD, NORMALIZED};
use crate::serve::Server;

#[test]
fn a_backtest_on_a_kafka_offset_range_records_it_once_and_diffs_like_a_file() {
    let s = setup(20_000, "memory://tansu/");
    let root = s.root.path();
    let old = std::fs::read_to_string(kafka_graph(&s)).unwrap();
    let new = old
        .replace("version = 1", "version = 2")
        .replace("EUR = \"1.08\"", "EUR = \"1.10\"");
    assert_ne!(old, new);
    let (old_path, new_path) = (root.join("old.toml"), root.join("new.toml"));
    std::fs::write(&old_path, &old).unwrap();
    std::fs::write(&new_path, &new).unwrap();
    // The first half of every partition.
    let spec: Vec<String> = s
        .raw_counts
        .iter()
        .map(|(p, n)| format!("{p}:0-{}", n / 2))
        .collect();
    let want: i64 = s.raw_counts.values().map(|n| n / 2).sum();
    let diff = |args: &[&str]| {
        let o = tickflow()
            .arg("diff")
            .arg(&old_path)
            .arg(&new_path)
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        (o.status.code(), report)
    };
    let out = root.join("range");
    let (code, ranged) = diff(&[
        "--kafka-range",
        &spec.join(","),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{ranged}");
    assert!(
        ranged["sinks"]["bars"]["differing"].as_u64().unwrap() > 0,
        "{ranged}"
    );
    let recorded = out.join("recorded.jsonl");
    let lines = std::fs::read_to_string(&recorded).unwrap().lines().count();
    assert_eq!(lines as i64, want, "exactly the range, once");
    // The recorded range as a file gives the same diff.
    let again = root.join("again");
    let (code, filed) = diff(&[
        "--input",
        recorded.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(filed["sinks"], ranged["sinks"]);
    // Over the API: the same range of the topic the old version reads, the same diff.
    let server = Server::start(root, &[]);
    for toml in [&old, &new] {
        server.submit(toml);
    }
    let ranges: serde_json::Map<String, Value> = s
        .raw_counts
        .iter()
        .map(|(p, n)| (p.to_string(), serde_json::json!([0, n / 2])))
        .collect();
    let (status, api) = server.post(
        "/api/v1/backtests",
        &serde_json::json!({"graph": "kafka-bars", "old_version": 1, "new_version": 2,
                            "kafka": ranges}),
    );
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["sinks"], ranged["sinks"]);
    let (status, _) = server.post(
        "/api/v1/backtests",
        &serde_json::json!({"graph": "kafka-bars", "old_version": 1, "new_version": 2,
                            "kafka": {"0": [5, 5]}}),
    );
    assert_eq!(status, 422);
    // A range past a partition's end is refused, naming the partition.
    let (p, n) = s.raw_counts.iter().next().unwrap();
    let o = tickflow()
        .arg("diff")
        .arg(&old_path)
        .arg(&new_path)
        .args(["--kafka-range", &format!("{p}:0-{}", n + 10)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(&format!("partition {p}")), "{err}");
}

#[test]
fn a_shadow_of_a_kafka_graph_reads_the_whole_topic_as_its_own_group_and_writes_no_topic() {
    let s = setup(20_000, "memory://tansu/");
    let root = s.root.path();
    // Production never ends (it waits for more ticks); the shadow is bounded.
    let bounded = std::fs::read_to_string(kafka_graph(&s)).unwrap();
    let v1 = bounded.replace("stop_at_end = true", "stop_at_end = false");
    let v2 = bounded
        .replace("version = 1", "version = 2")
        .replace("EUR = \"1.08\"", "EUR = \"1.10\"");
    let server = Server::start(root, &[]);
    for toml in [&v1, &v2] {
        server.submit(toml);
    }
    let (status, body) = server.post(
        "/api/v1/deployments",
        &serde_json::json!({"graph": "kafka-bars", "version": 1}),
    );
    assert_eq!(status, 201, "{body}");
    let read_all = |v: &Value| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["role"] == "source" && n["records_out"]["out"] == s.ticks)
    };
    server.wait_for("/api/v1/deployments/1", "production's read", read_all);
    let (status, body) = server.post(
        "/api/v1/deployments",
        &serde_json::json!({"graph": "kafka-bars", "version": 2, "strategy": "shadow"}),
    );
    assert_eq!(status, 201, "{body}");
    let shadow = body["id"].as_u64().unwrap();
    let done = server.wait_for(
        &format!("/api/v1/deployments/{shadow}"),
        "the shadow's end",
        |v| v["state"] != "running" && v["state"] != "starting",
    );
    assert_eq!(done["state"], "finished", "{done}");
    // It read the whole topic from the start, not where production's group stands.
    assert!(read_all(&done), "{done}");
    let normalized =
        std::fs::read_to_string(root.join(format!("outputs/d{shadow}/shadow/normalized.jsonl")))
            .unwrap();
    assert!(normalized.lines().count() > 10_000);
    // No production topic got a record from it: every record carries the one production
    // run's header.
    for topic in [NORMALIZED, DEAD] {
        let runs: std::collections::BTreeSet<String> = s
            .broker
            .read(topic)
            .iter()
            .flat_map(|r| r["headers"].as_array().cloned().unwrap_or_default())
            .filter(|h| h[0] == "tickflow-run")
            .map(|h| h[1].to_string())
            .collect();
        assert_eq!(runs.len(), 1, "{topic}: {runs:?}");
    }
    let d = server.get(&format!("/api/v1/deployments/{shadow}/diff"));
    assert!(d["sinks"].is_object(), "{d}");
}

//! Rollout tools on Kafka graphs: a backtest on a recorded offset range, and a shadow reading
//! the topic as a consumer group of its own.

use serde_json::Value;

use crate::common::*;
use crate::kafka::{kafka_graph, setup, setup_with, values, Setup, BARS, DEAD, NORMALIZED, RAW};
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
    // run's header. Production commits its writes at its checkpoints, which may come after
    // the shadow ended, so first wait until its records are visible.
    for topic in [NORMALIZED, DEAD] {
        wait_for_records(&s, topic, 1, || "production's commit".to_string());
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

/// `data/ticks.jsonl` cut into `n` files of consecutive lines, then one more holding a tick
/// of every instrument an hour after the last: it moves every partition's watermark past the
/// last real window (so every bar of the real ticks is made) while its own windows stay open.
fn chunks(s: &Setup, n: usize) -> Vec<std::path::PathBuf> {
    let data = s.root.path().join("data");
    let text = std::fs::read_to_string(data.join("ticks.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let per = lines.len().div_ceil(n);
    let mut files = Vec::new();
    for (i, part) in lines.chunks(per).enumerate() {
        let file = s.root.path().join(format!("chunk-{i}.jsonl"));
        std::fs::write(&file, part.join("\n") + "\n").unwrap();
        files.push(file);
    }
    let reference = std::fs::read_to_string(data.join("instruments.csv")).unwrap();
    let flush: String = reference
        .lines()
        .skip(1)
        .enumerate()
        .map(|(i, row)| {
            let symbol = row.split(',').next().unwrap();
            format!(
                "{{\"venue\":\"XNAS\",\"symbol\":\"{symbol}\",\"ts\":\"2024-03-02T00:00:00Z\",\
                 \"price\":\"1\",\"size\":\"1\",\"seq\":{}}}\n",
                900_000_000 + i
            )
        })
        .collect();
    let file = s.root.path().join("chunk-flush.jsonl");
    std::fs::write(&file, flush).unwrap();
    files.push(file);
    files
}

/// Waits until `topic` holds `n` records (at most two minutes); `context` says why not.
fn wait_for_records(s: &Setup, topic: &str, n: usize, context: impl Fn() -> String) {
    let started = std::time::Instant::now();
    loop {
        let got = s.broker.read(topic).len();
        if got >= n {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{topic} holds {got} records, expected {n}: {}",
            context()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A canary of the Kafka example's version 2 (`edit` of version 1) with `settings`, while
/// ticks keep arriving: ten minutes of event time produced in 30 parts, a fifth before the
/// canary, a fifth while the new version warms up and a fifth in each step (or at once, once
/// the rollout ended), then the flush ticks. Returns the setup, the server and the canary's
/// deployment once its rollout ended.
fn kafka_canary(edit: impl Fn(&str) -> String, settings: Value) -> (Setup, Server, Value) {
    let s = setup_with(120_000, "200", "memory://tansu/", false);
    let parts = chunks(&s, 30);
    let bounded = std::fs::read_to_string(kafka_graph(&s)).unwrap();
    let v1 = bounded.replace("stop_at_end = true", "stop_at_end = false");
    let v2 = edit(&v1.replace("version = 1", "version = 2"));
    assert!(v2.contains("version = 2") && v2 != v1);
    let server = Server::start(s.root.path(), &[]);
    for toml in [&v1, &v2] {
        server.submit(toml);
    }
    for part in &parts[..6] {
        s.broker.produce(part, RAW, "symbol");
    }
    let (status, body) = server.post(
        "/api/v1/deployments",
        &serde_json::json!({"graph": "kafka-bars", "version": 1}),
    );
    assert_eq!(status, 201, "{body}");
    let prod = body["id"].as_u64().unwrap();
    server.wait_for(
        &format!("/api/v1/deployments/{prod}"),
        "production's read",
        |v| v["watermark_ms"].as_u64().is_some_and(|w| w > 0),
    );
    let (status, body) = server.post(
        "/api/v1/deployments",
        &serde_json::json!({"graph": "kafka-bars", "version": 2, "strategy": "canary",
                            "canary": settings}),
    );
    assert_eq!(status, 201, "{body}");
    let dep = format!("/api/v1/deployments/{}", body["id"]);
    let ended = |v: &Value| v["rollout"]["state"] != "running" && v["rollout"]["state"] != "paused";
    let done = std::thread::scope(|scope| {
        scope.spawn(|| {
            let produce = |parts: &[std::path::PathBuf]| {
                for part in parts {
                    s.broker.produce(part, RAW, "symbol");
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            };
            produce(&parts[6..12]);
            for (step, from) in [(1, 12), (2, 18), (3, 24)] {
                server.wait_for(&dep, "the next step", |v| {
                    v["rollout"]["step"].as_u64() >= Some(step) || ended(v)
                });
                produce(&parts[from..from + 6]);
            }
            produce(&parts[30..]);
        });
        server.wait_for(&dep, "the rollout's end", ended)
    });
    (s, server, done)
}

/// The production topics hold what the file run made: every bar once, none missing, every dead
/// letter once, every real tick normalized once (of the flush ticks only each partition's first
/// is written: the others wait, stamped at the watermark it moved to).
fn assert_topics_exact(s: &Setup, server: &Server) {
    wait_for_records(s, BARS, s.file_bars.len(), || {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        format!(
            "{}\n{}",
            server.get("/api/v1/deployments"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    // Each sink writes on its own: the others may land a moment after the last bar.
    wait_for_records(s, DEAD, s.file_dead, || "the dead letters".to_string());
    wait_for_records(s, NORMALIZED, s.file_normalized as usize, || {
        "the normalized ticks".to_string()
    });
    let bars = values(s, BARS);
    assert_eq!(bars.len(), s.file_bars.len());
    assert!(bars == s.file_bars, "the bars differ from the file run's");
    assert_eq!(values(s, DEAD).len(), s.file_dead);
    let normalized = values(s, NORMALIZED);
    let real = normalized
        .iter()
        .filter(|v| !v.contains("2024-03-02"))
        .count();
    assert_eq!(real as u64, s.file_normalized);
}

#[test]
fn a_canary_of_the_kafka_example_moves_keys_while_ticks_arrive_and_writes_each_bar_once() {
    let (s, server, d) = kafka_canary(
        |v2| v2.replace("description = \"", "description = \"v2: "),
        serde_json::json!({"steps": [25, 50, 100], "step_length": "4s"}),
    );
    assert_eq!(d["rollout"]["state"], "promoted", "{d}");
    let steps = server.events_of("rollout_step_started");
    let shares: Vec<u64> = steps
        .iter()
        .map(|e| e["share_pct"].as_u64().unwrap())
        .collect();
    assert_eq!(shares, [25, 50, 100], "{steps:?}");
    // Each step moved keys while ticks kept coming: its share applies from an event time
    // before the last tick's (14:40).
    let last_tick = chrono::DateTime::parse_from_rfc3339("2024-03-01T14:40:00Z")
        .unwrap()
        .timestamp_millis() as u64;
    for e in &steps {
        assert!(e["from_ms"].as_u64().unwrap() < last_tick, "{e}");
        let checks = e["checks"].as_array().unwrap();
        assert!(checks.iter().all(|c| c["passed"] == true), "{e}");
    }
    assert_topics_exact(&s, &server);
}

#[test]
fn a_kafka_canary_that_dead_letters_a_currency_is_rolled_back_and_production_writes_each_bar_once()
{
    // The steps and the threshold come from the version's `[rollout]` table, the step length
    // from the request.
    let (s, server, d) = kafka_canary(
        |v2| {
            v2.replace("EUR = \"1.08\", ", "")
                + "\n[rollout]\nsteps = [25, 50, 100]\nstep_length = \"60s\"\n\
                 [rollout.checks]\nmax_dead_letter_rate = 0.035\n"
        },
        serde_json::json!({"step_length": "3s"}),
    );
    let requested = server.events_of("deployment_requested");
    let canary = requested.iter().find(|e| e["canary"].is_object()).unwrap();
    let config = &canary["canary"]["config"];
    assert_eq!(
        config["steps"],
        serde_json::json!([25, 50, 100]),
        "{config}"
    );
    assert_eq!(config["step_length"], "3s", "{config}");
    assert_eq!(config["checks"]["max_dead_letter_rate"], 0.035, "{config}");
    assert_eq!(d["rollout"]["state"], "rolled_back", "{d}");
    assert_eq!(d["rollout"]["step"], 0, "before it owned a key: {d}");
    let rolled = server.events_of("rollout_rolled_back");
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    let reason = rolled[0]["reason"].as_str().unwrap();
    assert!(reason.contains("dead_letter_rate"), "{reason}");
    assert!(server.events_of("rollout_step_started").is_empty());
    assert_topics_exact(&s, &server);
}

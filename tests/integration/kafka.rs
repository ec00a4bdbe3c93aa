//! Kafka end to end against a real Kafka-protocol broker (tansu, started by
//! `deploy/kafka-broker.sh` on a free port of 127.0.0.1 for each test): generated ticks
//! produced to a 4-partition topic, the Kafka example graph run with 2 workers, its output
//! topics read back (by tickflow and by Python's confluent-kafka) and compared with a run of
//! the file graph over the same ticks; SIGKILL of the engine, and of the broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::*;
use crate::serve::Server;

pub(crate) const TICKS: u64 = 200_000;
pub(crate) const RAW: &str = "ingestion.market.raw.v1";
pub(crate) const NORMALIZED: &str = "normalized.market.ticks.v1";
pub(crate) const BARS: &str = "market.bars.1m.v1";
pub(crate) const DEAD: &str = "market.dead_letters.v1";
const LATE: &str = "market.late_ticks.v1";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kafka-broker.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker on its own port, started and stopped through the project's script.
pub(crate) struct Broker {
    port: u16,
    run_dir: tempfile::TempDir,
    storage: &'static str,
}

impl Broker {
    /// `storage`: `memory://tansu/` (fast; topics are lost when it stops) or `sqlite`.
    pub(crate) fn start(storage: &'static str) -> Broker {
        let broker = Broker {
            port: free_port(),
            run_dir: tempfile::tempdir().unwrap(),
            storage,
        };
        broker.up();
        broker
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(script())
            .args(args)
            .env("TICKFLOW_BROKER_RUN", self.run_dir.path())
            .env("TICKFLOW_BROKER_STORAGE", self.storage)
            .output()
            .unwrap()
    }

    fn up(&self) {
        let port = self.port.to_string();
        let o = self.script(&["start", &port]);
        assert!(
            o.status.success(),
            "the broker did not start (CI runs `deploy/kafka-broker.sh install` first): {}",
            stderr(&o)
        );
    }

    /// SIGKILL, like a crash.
    fn kill(&self) {
        let pid =
            std::fs::read_to_string(self.run_dir.path().join(format!("tansu-{}.pid", self.port)))
                .unwrap();
        let o = Command::new("kill")
            .args(["-9", pid.trim()])
            .output()
            .unwrap();
        assert!(o.status.success());
        std::fs::remove_file(self.run_dir.path().join(format!("tansu-{}.pid", self.port))).unwrap();
        // Wait until the port is closed.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(started.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn create(&self, topic: &str, partitions: u32) {
        let o = run_cli(&[
            "topics",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--brokers",
            &self.addr(),
        ]);
        assert!(o.status.success(), "topics create {topic}: {}", stderr(&o));
    }

    /// Loads a JSON-lines file into `topic` with `tickflow produce`, keyed by `key`.
    pub(crate) fn produce(&self, file: &Path, topic: &str, key: &str) {
        let o = run_cli(&[
            "produce",
            file.to_str().unwrap(),
            "--topic",
            topic,
            "--key",
            key,
            "--brokers",
            &self.addr(),
        ]);
        assert!(o.status.success(), "produce: {}", stderr(&o));
    }

    /// Every record of `topic` as `tickflow topics read --json` prints it.
    pub(crate) fn read(&self, topic: &str) -> Vec<Value> {
        let o = run_cli(&["topics", "read", topic, "--json", "--brokers", &self.addr()]);
        assert!(o.status.success(), "topics read {topic}: {}", stderr(&o));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let port = self.port.to_string();
        let _ = self.script(&["stop", &port]);
    }
}

/// Generated ticks with bad lines, the file graph's outputs over them, and a broker holding
/// them in a 4-partition topic with the output topics created.
pub(crate) struct Setup {
    pub(crate) root: tempfile::TempDir,
    pub(crate) broker: Broker,
    pub(crate) file_bars: Vec<String>,
    pub(crate) file_dead: usize,
    /// Ticks that passed normalize in the file run.
    pub(crate) file_normalized: u64,
    pub(crate) ticks: u64,
    /// Records per partition of the raw topic.
    pub(crate) raw_counts: std::collections::BTreeMap<i64, i64>,
}

pub(crate) fn setup(ticks: u64, storage: &'static str) -> Setup {
    setup_with(ticks, "2000", storage, true)
}

/// [`setup`] with `rate` ticks per second of event time, the raw topic left empty unless
/// `produce` (`data/ticks.jsonl` holds the ticks).
pub(crate) fn setup_with(ticks: u64, rate: &str, storage: &'static str, produce: bool) -> Setup {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // No very late ticks: which ticks are late (30 s+ behind) depends on the watermark, and a
    // 4-partition topic's watermark (least over partitions) is not a single file's.
    gen(
        &data,
        ticks,
        200,
        11,
        &["--bad-ratio", "0.02", "--late-ratio", "0", "--rate", rate],
    );
    let out = root.path().join("file-out");
    let graph = write_graph(root.path(), &data, &out, TUMBLING);
    let summary = run_graph(&graph, 2);
    assert_eq!(summary["input_records"], ticks);
    let file_normalized = summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "normalize")
        .and_then(|n| n["records_out"]["out"].as_u64())
        .unwrap();
    let file_bars = sorted_lines(&out.join("bars.jsonl"));
    let file_dead = sorted_lines(&out.join("dead_letters.jsonl")).len();
    assert!(file_bars.len() > 100 && file_dead > 100);

    let broker = Broker::start(storage);
    broker.create(RAW, 4);
    broker.create(NORMALIZED, 4);
    broker.create(BARS, 4);
    broker.create(DEAD, 1);
    broker.create(LATE, 1);
    let mut raw_counts = std::collections::BTreeMap::new();
    if produce {
        broker.produce(&data.join("ticks.jsonl"), RAW, "symbol");
        let raw = broker.read(RAW);
        assert_eq!(raw.len() as u64, ticks);
        for r in &raw {
            *raw_counts
                .entry(r["partition"].as_i64().unwrap())
                .or_insert(0i64) += 1;
        }
        assert_eq!(raw_counts.len(), 4, "ticks spread over all 4 partitions");
    }
    Setup {
        root,
        broker,
        file_bars,
        file_dead,
        file_normalized,
        ticks,
        raw_counts,
    }
}

/// The example Kafka graph with this test's broker and data, bounded (it ends at the end
/// offsets found at start), checkpointing every 5 s of event time.
pub(crate) fn kafka_graph(s: &Setup) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kafka-bars.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("127.0.0.1:9092", &s.broker.addr())
        .replace(
            "examples/data/instruments.csv",
            s.root.path().join("data/instruments.csv").to_str().unwrap(),
        )
        .replace(
            "idle_timeout = \"5s\"",
            "idle_timeout = \"5s\"\nstop_at_end = true",
        )
        .replace(
            "interval = \"10s\"",
            "interval = \"5s\"\nmin_pause = \"0ms\"",
        );
    assert!(text.contains("stop_at_end = true"));
    let path = s.root.path().join("kafka-bars.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `tickflow run GRAPH` on 2 workers, its output discarded (for unbounded runs the test kills).
fn run_quietly(graph: &Path) -> Child {
    tickflow()
        .arg("run")
        .arg(graph)
        .args(["--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run_kafka(graph: &Path, data_dir: &Path) -> Child {
    tickflow()
        .arg("run")
        .arg(graph)
        .args(["--workers", "2", "--data-dir"])
        .arg(data_dir)
        .env("TICKFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Values of `topic`, sorted, after checking every record carries tickflow's headers and
/// no value appears twice.
pub(crate) fn values(s: &Setup, topic: &str) -> Vec<String> {
    let records = s.broker.read(topic);
    let mut values: Vec<String> = records
        .iter()
        .map(|r| {
            let headers = r["headers"].as_array().unwrap();
            assert!(
                headers.iter().any(|h| h[0] == "tickflow-run"),
                "record without run header: {r}"
            );
            r["value"].as_str().unwrap().to_string()
        })
        .collect();
    values.sort();
    let before = values.len();
    let mut dedup = values.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), before, "{topic} holds duplicate records");
    values
}

pub(crate) fn check_outputs(s: &Setup) {
    let bars = values(s, BARS);
    if bars != s.file_bars {
        let missing: Vec<&String> = s.file_bars.iter().filter(|b| !bars.contains(b)).collect();
        let extra: Vec<&String> = bars.iter().filter(|b| !s.file_bars.contains(b)).collect();
        panic!(
            "bars differ from the file run: {} vs {}; {} missing, e.g. {:?}; {} extra, e.g. \
             {:?}; {} late",
            bars.len(),
            s.file_bars.len(),
            missing.len(),
            missing.iter().take(2).collect::<Vec<_>>(),
            extra.len(),
            extra.iter().take(2).collect::<Vec<_>>(),
            s.broker.read(LATE).len()
        );
    }
    let dead = values(s, DEAD);
    assert_eq!(dead.len(), s.file_dead);
    assert!(dead.iter().all(|d| d.contains("\"partition\":")));
    // Every tick that passed normalize once, keyed by symbol.
    let normalized = values(s, NORMALIZED);
    assert!(normalized.len() as u64 > s.ticks * 9 / 10);
    assert!(values(s, LATE).is_empty());
}

#[test]
fn kafka_example_with_two_workers_equals_the_file_run_and_python_reads_the_same() {
    let s = setup(TICKS, "memory://tansu/");
    let graph = kafka_graph(&s);
    let child = run_kafka(&graph, &s.root.path().join("state"));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kafka run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_outputs(&s);

    let python = Command::new("bash")
        .arg(script())
        .arg("python")
        .output()
        .unwrap();
    assert!(python.status.success(), "{}", stderr(&python));
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    // The consumer group holds the final offsets, so lag shows in standard tools (read here by
    // confluent-kafka, as `kafka-consumer-groups --describe` would): every partition's committed
    // offset is its record count (offsets start at 0).
    let groups = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/group_offsets.py");
    let o = Command::new(&python)
        .arg(&groups)
        .args(["--brokers", &s.broker.addr(), "--topic", RAW])
        .args(["--group", "tickflow.kafka-bars.ticks"])
        .output()
        .unwrap();
    assert!(o.status.success(), "group offsets: {}", stderr(&o));
    let offsets: Value = serde_json::from_slice(&o.stdout).unwrap();
    for (p, count) in &s.raw_counts {
        assert_eq!(
            offsets["partitions"][p.to_string()]["committed"].as_i64(),
            Some(*count),
            "committed offset of partition {p}: {offsets}"
        );
    }
    // An independent client (librdkafka through Python's confluent-kafka) reads the same.
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/read_topic.py");
    let o = Command::new(&python)
        .arg(&reader)
        .args(["--brokers", &s.broker.addr(), "--topic", BARS])
        .output()
        .unwrap();
    assert!(o.status.success(), "python reader: {}", stderr(&o));
    // (partition, offset, key, value), sorted.
    let records = |rows: Vec<Value>| {
        let mut out: Vec<(i64, i64, String, String)> = rows
            .iter()
            .map(|v| {
                (
                    v["partition"].as_i64().unwrap(),
                    v["offset"].as_i64().unwrap(),
                    v["key"].as_str().unwrap_or("").to_string(),
                    v["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let py = records(
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    );
    let ours = records(s.broker.read(BARS));
    assert_eq!(py.len(), s.file_bars.len());
    assert!(py == ours, "python and tickflow read different records");
    // Keyed by instrument: every record's key is its value's instrument_id.
    for (_, _, key, value) in &py {
        let v: Value = serde_json::from_str(value).unwrap();
        assert_eq!(v["instrument_id"].as_str().unwrap(), key);
    }
}

#[test]
fn kafka_run_killed_three_times_still_writes_each_bar_once() {
    let s = setup(TICKS, "memory://tansu/");
    // A short idle timeout: restoring the sinks (reading their topics back) takes longer than
    // this, which must not count as the partitions being silent.
    let graph = kafka_graph(&s);
    let text = std::fs::read_to_string(&graph)
        .unwrap()
        .replace("idle_timeout = \"5s\"", "idle_timeout = \"1s\"");
    std::fs::write(&graph, text).unwrap();
    let state = s.root.path().join("state");
    let seed = crate::common::test_seed("Kafka kill -9 test seed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 3 {
        attempts += 1;
        assert!(attempts < 30, "could not kill the run 3 times mid-way");
        // The newest commit marker's name.
        let markers = || newest_marker(&state);
        let before = markers();
        let mut child = run_kafka(&graph, &state);
        // A random moment after this attempt has committed a checkpoint of its own.
        let started = Instant::now();
        while markers() == before && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The first kill right after the first checkpoint (the restore then re-reads nearly
        // everything, with windows still open); the others at random moments.
        let wait = match kills {
            0 => Duration::ZERO,
            _ => Duration::from_millis(rng.gen_range(0..800)),
        };
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run ended before kill {} ({wait:?}): {}",
                kills + 1,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let out = run_kafka(&graph, &state).wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "final run: {log}");
    assert!(log.contains("resuming from checkpoint"), "{log}");
    check_outputs(&s);
}

#[test]
fn broker_killed_and_restarted_mid_run_is_reported_and_the_run_continues() {
    // SQLite storage keeps the topics across the restart. Enough ticks that the run is still
    // reading when the broker dies (reading got faster with a queue per partition).
    let s = setup(100_000, "sqlite");
    let graph = kafka_graph(&s);
    let root = s.root.path().join("serve");
    // The server reads reference data only inside its read root (`root/data`).
    std::fs::create_dir_all(root.join("data")).unwrap();
    let reference = s.root.path().join("data/instruments.csv");
    std::fs::copy(&reference, root.join("data/instruments.csv")).unwrap();
    let server = Server::start(&root, &[]);
    let toml = std::fs::read_to_string(&graph)
        .unwrap()
        .replace(reference.to_str().unwrap(), "instruments.csv");
    let (status, body) = server.call(
        "POST",
        "/api/v1/graphs",
        Some(crate::serve::OPERATOR_KEY),
        Some(&toml),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.post(
        "/api/v1/deployments",
        &serde_json::json!({"graph": "kafka-bars", "version": 1, "reason": "broker outage test"}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    // Some ticks are through, then the broker dies.
    server.wait_for(&format!("/api/v1/deployments/{id}"), "first records", |d| {
        d["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "bars"))
            .is_some_and(|n| n["records_in"].as_u64().unwrap_or(0) > 1000)
    });
    // Consumer lag per partition is in the metrics (from librdkafka's statistics, each second).
    let started = Instant::now();
    loop {
        let (_, body) = server.call("GET", "/metrics", Some(crate::serve::VIEWER_KEY), None);
        let text = body.as_str().unwrap_or_default().to_string();
        let lags = text
            .lines()
            .filter(|l| l.starts_with("tickflow_kafka_consumer_lag{") && l.contains("partition="))
            .count();
        if lags == 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lag per partition:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s.broker.kill();
    let metrics = |server: &Server| -> String {
        let (_, body) = server.call("GET", "/metrics", Some(crate::serve::VIEWER_KEY), None);
        body.as_str().unwrap_or_default().to_string()
    };
    let started = Instant::now();
    loop {
        let m = metrics(&server);
        let down = m.lines().any(|l| {
            l.starts_with("tickflow_kafka_broker_down{")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0)
        });
        if down {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "outage not in metrics:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    s.broker.up();
    server.wait_for(
        &format!("/api/v1/deployments/{id}"),
        "the run to finish",
        |d| d["state"] == "finished",
    );
    let m = metrics(&server);
    let errors: u64 = m
        .lines()
        .filter(|l| l.starts_with("tickflow_kafka_client_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(errors > 0, "client errors not counted:\n{m}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("kafka"), "outage not in the log: {log}");
    check_outputs(&s);
}

#[test]
fn a_silent_partition_holds_the_watermark_until_its_idle_timeout() {
    // Keyed by venue (6 values) over 8 partitions: some partitions get no ticks at all.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(
        &data,
        20_000,
        50,
        3,
        &["--late-ratio", "0", "--rate", "2000"],
    );
    let broker = Broker::start("memory://tansu/");
    broker.create(RAW, 8);
    for t in [NORMALIZED, BARS, DEAD, LATE] {
        broker.create(t, 1);
    }
    broker.produce(&data.join("ticks.jsonl"), RAW, "venue");
    let used: std::collections::BTreeSet<i64> = broker
        .read(RAW)
        .iter()
        .map(|r| r["partition"].as_i64().unwrap())
        .collect();
    assert!(used.len() < 8, "some partition must stay empty: {used:?}");

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kafka-bars.toml");
    let graph = |idle: &str, group: &str| {
        let text = std::fs::read_to_string(&example)
            .unwrap()
            .replace("127.0.0.1:9092", &broker.addr())
            .replace(
                "examples/data/instruments.csv",
                data.join("instruments.csv").to_str().unwrap(),
            )
            .replace(
                "idle_timeout = \"5s\"",
                &format!("idle_timeout = \"{idle}\"\ngroup_id = \"{group}\""),
            );
        let path = root.path().join(format!("idle-{group}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    // Unbounded runs: the silent partitions never end. Without idleness nothing closes.
    let bars_after = |graph: PathBuf, secs: u64| -> usize {
        let mut child = run_quietly(&graph);
        std::thread::sleep(Duration::from_secs(secs));
        child.kill().unwrap();
        child.wait().unwrap();
        broker.read(BARS).len()
    };
    assert_eq!(
        bars_after(graph("0s", "never-idle"), 6),
        0,
        "silent partitions held no watermark back"
    );
    let bars = bars_after(graph("1s", "idle"), 8);
    assert!(
        bars > 0,
        "after the idle timeout the other partitions' watermark closes windows"
    );
}

#[test]
fn without_a_broker_the_run_stops_on_sigterm_naming_broker_and_topic() {
    let root = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kafka-bars.toml");
    // A port nobody listens on.
    let port = free_port();
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("127.0.0.1:9092", &format!("127.0.0.1:{port}"))
        .replace(
            "examples/data/instruments.csv",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/data/instruments.csv")
                .to_str()
                .unwrap(),
        );
    let graph = root.path().join("g.toml");
    std::fs::write(&graph, text).unwrap();
    let child = tickflow()
        .arg("run")
        .arg(&graph)
        .args(["--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let o = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let sent = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?} to stop after SIGTERM",
        sent.elapsed()
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("ingestion.market.raw.v1"),
        "{err}"
    );
}

#[test]
fn a_closed_bar_is_written_before_the_watermark_takes_its_next_step() {
    // One-minute bars step the watermark by 5 s. Ticks up to 1.5 s past the first window's
    // end move the watermark just past that end (1 s out of orderness) but not to the next
    // step: the bar must be written now, not when the next step comes.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("instruments.csv"),
        "symbol,instrument_id\nAAA,INS-1\n",
    )
    .unwrap();
    let start = 1_709_303_400_000u64; // a minute boundary
    let ticks: String = (0..=123)
        .map(|i| {
            let ts = start + i * 500;
            format!(
                "{{\"venue\":\"X\",\"symbol\":\"AAA\",\"ts\":{ts},\"price\":\"1\",\"size\":\"1\",\"seq\":{i}}}\n"
            )
        })
        .collect();
    std::fs::write(data.join("ticks.jsonl"), ticks).unwrap();
    let broker = Broker::start("memory://tansu/");
    broker.create(RAW, 1);
    for t in [NORMALIZED, BARS, DEAD, LATE] {
        broker.create(t, 1);
    }
    broker.produce(&data.join("ticks.jsonl"), RAW, "symbol");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kafka-bars.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("127.0.0.1:9092", &broker.addr())
        .replace(
            "examples/data/instruments.csv",
            data.join("instruments.csv").to_str().unwrap(),
        )
        .replace("allowed_lateness = \"30s\"", "allowed_lateness = \"0s\"");
    let graph = root.path().join("bars.toml");
    std::fs::write(&graph, text).unwrap();
    // Unbounded: the partition never ends, so only the watermark can close the window.
    let mut child = run_quietly(&graph);
    let started = Instant::now();
    let bars = loop {
        let bars = broker.read(BARS);
        if !bars.is_empty() || started.elapsed() > Duration::from_secs(30) {
            break bars;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(bars.len(), 1, "the first minute's bar, written: {bars:?}");
    let bar: Value = serde_json::from_str(bars[0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(bar["window_end"], "2024-03-01T14:31:00Z");
    assert_eq!(bar["trades"], 120);
}

//! `tickflow bench --kafka BROKERS`: Kafka in, Kafka out, on a running broker.
//!
//! 1. Catch-up throughput: `--ticks` generated ticks are loaded into a 4-partition topic, then
//!    `tickflow run` (2 workers by default, checkpoints on) reads them to the end and writes bars
//!    to Kafka; ticks/s is the median over `--runs` runs.
//! 2. Latency at a steady rate: the engine runs on an empty topic while this process produces
//!    `--ticks` live ticks (event time = wall clock) at `--rate` ticks/s and reads the bars
//!    topic. A bar's latency runs from producing the tick that moved the watermark past the
//!    bar's window end (the first tick with event time > end + max_out_of_orderness in the
//!    last partition to get one) to the bar being read from the output topic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use tickflow_connectors::kafka::{self, LineProducer};
use tickflow_engine::Summary;

use crate::bench::BenchArgs;
use crate::gen::{generate, GenArgs};

const OOO_MS: u64 = 200;
const WINDOW: &str = "250ms";

fn graph(dir: &Path, brokers: &str, raw: &str, bars: &str, bounded: bool) -> String {
    let refs = dir.join("instruments.csv").display().to_string();
    format!(
        r#"[graph]
name = "kafka-bench"
version = 1
base_currency = "USD"

[graph.defaults]
max_out_of_orderness = "{OOO_MS}ms"

[sources.ticks]
type = "kafka"
brokers = "{brokers}"
topic = "{raw}"
stop_at_end = {bounded}
idle_timeout = "2s"
options = {{ "fetch.wait.max.ms" = "5" }}

[operators.normalize]
type = "normalize"
input = "ticks"
fx = {{ EUR = "1.08", GBP = "1.27" }}

[operators.enrich]
type = "enrich"
input = "normalize"
reference = "{refs}"

[operators.bars]
type = "window"
input = "enrich"
kind = "tumbling"
size = "{WINDOW}"
allowed_lateness = "0s"

[sinks.bars]
type = "kafka"
input = "bars"
brokers = "{brokers}"
topic = "{bars}"
key = "instrument_id"
options = {{ "linger.ms" = "1" }}

[checkpoint]
interval = "5s"
"#
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs both measurements against `brokers`.
pub fn run(args: &BenchArgs, brokers: &str, rate: u64) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let workers = args.workers.last().copied().unwrap_or(2);
    generate(&GenArgs {
        ticks: args.ticks,
        instruments: 100,
        seed: 7,
        out: dir.clone(),
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        late_ratio: 0.0,
        rate: 10_000,
        jitter_ms: 100,
        start_ms: 1_709_303_400_000,
        shape: crate::gen::Shape::Easy,
        duration_secs: 5_400,
    })?;
    let nonce = now_ms();
    let raw = format!("bench.raw.{nonce}");
    let bars = format!("bench.bars.{nonce}");
    kafka::create_topic(brokers, &raw, 4)?;
    kafka::create_topic(brokers, &bars, 4)?;

    // 1. Catch-up throughput.
    let mut producer = LineProducer::new(brokers, &raw, Some("symbol"), &BTreeMap::new())?;
    let text = std::fs::read_to_string(dir.join("ticks.jsonl"))?;
    let started = Instant::now();
    for line in text.lines() {
        producer.send(line)?;
    }
    producer.finish()?;
    let load_secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {} ticks into {raw} (4 partitions) in {load_secs:.1}s ({:.0}/s)",
        args.ticks,
        args.ticks as f64 / load_secs
    );
    let bounded = dir.join("bounded.toml");
    std::fs::write(&bounded, graph(&dir, brokers, &raw, &bars, true))?;
    let mut rates = Vec::new();
    for i in 0..args.runs {
        let summary_path = dir.join(format!("kafka-summary-{i}.json"));
        let state = dir.join(format!("kafka-state-{i}"));
        let status = Command::new(std::env::current_exe()?)
            .arg("run")
            .arg(&bounded)
            .args(["--workers", &workers.to_string(), "--summary-json"])
            .arg(&summary_path)
            .arg("--data-dir")
            .arg(&state)
            .stderr(Stdio::null())
            .status()
            .context("starting tickflow run")?;
        if !status.success() {
            bail!("tickflow run failed with {status}");
        }
        let s: Summary = serde_json::from_str(&std::fs::read_to_string(&summary_path)?)?;
        println!(
            "  catch-up run {}: {} ticks in {:.2}s: {:.0} ticks/s",
            i + 1,
            s.input_records,
            s.elapsed_secs,
            s.ticks_per_sec
        );
        rates.push(s.ticks_per_sec);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "catch-up, Kafka in and out, {workers} workers: median {:.0} ticks/s over {} runs",
        rates[rates.len() / 2],
        rates.len()
    );

    // 2. Latency at a steady rate.
    let live_raw = format!("bench.live.raw.{nonce}");
    let live_bars = format!("bench.live.bars.{nonce}");
    kafka::create_topic(brokers, &live_raw, 4)?;
    kafka::create_topic(brokers, &live_bars, 4)?;
    let live_graph = dir.join("live.toml");
    std::fs::write(
        &live_graph,
        graph(&dir, brokers, &live_raw, &live_bars, false),
    )?;
    let summary_path = dir.join("kafka-live-summary.json");
    let mut engine = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(&live_graph)
        .args(["--workers", &workers.to_string(), "--summary-json"])
        .arg(&summary_path)
        .arg("--data-dir")
        .arg(dir.join("kafka-live-state"))
        .stderr(Stdio::null())
        .spawn()?;
    // Bars as they become readable: (window end ms, wall ms).
    let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, stop, brokers, topic) = (
            Arc::clone(&seen),
            Arc::clone(&stop),
            brokers.to_string(),
            live_bars.clone(),
        );
        std::thread::spawn(move || -> anyhow::Result<()> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "tickflow.bench")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "5")
                .create()?;
            consumer.subscribe(&[&topic])?;
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let at = now_ms();
                    let v: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or_default())?;
                    let end = v["window_end"].as_str().unwrap_or_default();
                    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(end) {
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((t.timestamp_millis() as u64, at));
                    }
                }
            }
            Ok(())
        })
    };
    // Give the engine time to start and assign its partitions.
    std::thread::sleep(Duration::from_secs(3));
    let symbols: Vec<String> = std::fs::read_to_string(dir.join("instruments.csv"))?
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next().map(str::to_string))
        .collect();
    let mut producer = LineProducer::new(brokers, &live_raw, Some("symbol"), &BTreeMap::new())?;
    // Per partition, the event times produced: each tick's event time is its produce time (ms),
    // so the first tick at or after a time is also when it was produced.
    let mut produced: HashMap<i32, BTreeSet<u64>> = HashMap::new();
    let started = Instant::now();
    let t0 = now_ms();
    for i in 0..args.ticks {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let ts = now_ms();
        let sym = &symbols[(i as usize * 7919) % symbols.len()];
        let line = format!(
            "{{\"venue\":\"XNAS\",\"symbol\":\"{sym}\",\"ts\":{ts},\"price\":\"{}.{:02}\",\"size\":\"10\",\"seq\":{i}}}",
            100 + i % 50,
            i % 100
        );
        let p = producer.send(&line)?;
        produced.entry(p).or_default().insert(ts);
    }
    producer.finish()?;
    let produce_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let _ = Command::new("kill")
        .args(["-TERM", &engine.id().to_string()])
        .status();
    let _ = engine.wait();
    let t_end = t0 + (produce_secs * 1000.0) as u64;
    // The trigger of window end W: the latest over partitions of the first tick with event time
    // > W + OOO.
    let trigger = |w: u64| -> Option<u64> {
        produced
            .values()
            .map(|m| m.range(w + OOO_MS + 1..).next().copied())
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
    };
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lat: Vec<f64> = seen
        .iter()
        .filter(|(w, _)| *w > t0 + 1000 && *w + OOO_MS + 1000 < t_end)
        .filter_map(|(w, at)| trigger(*w).map(|t| at.saturating_sub(t) as f64))
        .collect();
    lat.sort_by(f64::total_cmp);
    let windows: std::collections::BTreeSet<u64> = seen.iter().map(|(w, _)| *w).collect();
    println!(
        "steady input: {} ticks at a target of {rate}/s, produced at {:.0}/s; {} bars of {} \
         windows ({WINDOW} tumbling) read back",
        args.ticks,
        args.ticks as f64 / produce_secs,
        seen.len(),
        windows.len()
    );
    if lat.is_empty() {
        println!("  no window closed while input was steady: no latency samples");
    } else {
        println!(
            "  latency, watermark-moving tick produced -> bar readable ({} bars): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    }
    Ok(())
}

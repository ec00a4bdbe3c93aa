//! `tickflow bench --kafka BROKERS`: Kafka in, Kafka out, on a running broker.
//!
//! 1. Catch-up throughput: `--ticks` generated ticks are loaded into a 4-partition topic, then
//!    `tickflow run` (2 workers by default, checkpoints on) reads them to the end and writes bars
//!    to Kafka; ticks/s is the median over `--runs` runs. After each run, bare clients (one
//!    thread per worker, the source's and sink's client settings, no processing) read the same
//!    topic and write as many records: the ceiling the broker and client library allow here.
//!    Then the engine runs the same graph on the same ticks from a file. The machine's CPU in
//!    each phase (all processes, from `/proc/stat`) gives a bound: the engine through Kafka
//!    costs at least the bare clients' and broker's CPU plus its own work on files.
//! 2. Latency at a steady rate: the engine runs on an empty topic while this process produces
//!    `--ticks` live ticks (event time = wall clock) at `--rate` ticks/s and reads the bars
//!    topic. A bar's latency runs from producing the tick that moved the watermark past the
//!    bar's window end (the first tick with event time > end + max_out_of_orderness in the
//!    last partition to get one) to the bar being read from the output topic, split at the
//!    bar record's create time (when the engine's sink produced it). Then the same
//!    stream goes through a bare relay (consumer and producer with the engine's settings) to a
//!    second topic: the floor of two hops through the broker with nothing computed, relaying
//!    every tick, then one tick per bar's worth read (a second hop as light as the engine's
//!    bars); last, one hop alone (every tick read back from the topic it was produced to).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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
    let inline = |options: &BTreeMap<String, String>| {
        let pairs: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{k:?} = {v:?}"))
            .collect();
        format!("{{ {} }}", pairs.join(", "))
    };
    let (source_options, sink_options) = client_options();
    let (source_options, sink_options) = (inline(&source_options), inline(&sink_options));
    graph_with(
        dir,
        &format!(
            r#"type = "kafka"
brokers = "{brokers}"
topic = "{raw}"
stop_at_end = {bounded}
idle_timeout = "2s"
options = {source_options}"#
        ),
        &format!(
            r#"type = "kafka"
brokers = "{brokers}"
topic = "{bars}"
key = "instrument_id"
options = {sink_options}"#
        ),
    )
}

/// The same graph on files: the generated ticks in, bars to a file. What the engine's own work
/// on these ticks costs, without the broker.
fn file_graph(dir: &Path) -> String {
    let path = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    graph_with(
        dir,
        &format!("type = \"file\"\npath = {}", path("ticks.jsonl")),
        &format!("type = \"file\"\npath = {}", path("file-bars.jsonl")),
    )
}

/// The bench graph with the given source and bars sink bodies.
fn graph_with(dir: &Path, source: &str, sink: &str) -> String {
    let refs = dir.join("instruments.csv").display().to_string();
    format!(
        r#"[graph]
name = "kafka-bench"
version = 1
base_currency = "USD"

[graph.defaults]
max_out_of_orderness = "{OOO_MS}ms"

[sources.ticks]
{source}

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
input = "bars"
{sink}

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

/// The bare-client ceiling: `clients` threads, each reading its share of `topic`'s partitions
/// to the end and writing one record per `write_every` to a new topic of 4 partitions, with the
/// bench graph's client settings. Records read per second, from the clients' creation to the
/// last write acknowledged (the engine's figure is its whole process).
fn ceiling(brokers: &str, topic: &str, clients: usize, write_every: u64) -> anyhow::Result<f64> {
    let out = format!("{topic}.ceiling.{}", now_ms());
    kafka::create_topic(brokers, &out, 4)?;
    let parts = kafka::partitions(brokers, topic, &BTreeMap::new(), &|| false)?;
    let (source, sink) = client_options();
    let clients = clients.max(1);
    let started = Instant::now();
    let read = std::thread::scope(|scope| -> anyhow::Result<u64> {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let share: Vec<i32> = parts
                    .iter()
                    .copied()
                    .filter(|p| *p as usize % clients == i)
                    .collect();
                let (out, source, sink) = (&out, &source, &sink);
                scope.spawn(move || {
                    kafka::bare_copy(
                        brokers,
                        &kafka::BareCopy {
                            topic,
                            partitions: &share,
                            out,
                            write_every,
                            source_options: source,
                            sink_options: sink,
                            until: None,
                        },
                    )
                })
            })
            .collect();
        let mut read = 0;
        for h in handles {
            read += h
                .join()
                .map_err(|_| anyhow::anyhow!("a ceiling client panicked"))??;
        }
        Ok(read)
    })?;
    Ok(read as f64 / started.elapsed().as_secs_f64())
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
    let on_files = dir.join("files.toml");
    std::fs::write(&on_files, file_graph(&dir))?;
    // Each engine run is followed by a run of bare clients doing the same reads and writes
    // (the ceiling), then by the engine on the same ticks from a file, so that the ratio and
    // the bound compare runs taken side by side on this noisy machine.
    let (mut rates, mut ceilings, mut bounds) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.runs {
        let engine_cpu = MachineCpu::now();
        let s = engine_run(&bounded, workers, &dir, &format!("kafka-{i}"))?;
        let engine_cpu = engine_cpu.and_then(MachineCpu::core_secs);
        let bars_out: u64 = s
            .nodes
            .iter()
            .filter(|n| n.role == "sink")
            .map(|n| n.records_in)
            .sum();
        let write_every = s.input_records / bars_out.max(1);
        let bare_cpu = MachineCpu::now();
        let ceiling = ceiling(brokers, &raw, workers.into(), write_every)?;
        let bare_cpu = bare_cpu.and_then(MachineCpu::core_secs);
        let file_cpu = MachineCpu::now();
        let f = engine_run(&on_files, workers, &dir, &format!("file-{i}"))?;
        let file_cpu = file_cpu.and_then(MachineCpu::core_secs);
        println!(
            "  catch-up run {}: {} ticks in {:.2}s: {:.0} ticks/s, peak RSS {:.1} MiB; bare \
             clients, same reads and writes (one per {write_every}): {:.0} records/s; the engine \
             on the same {} ticks from a file: {:.0} ticks/s",
            i + 1,
            s.input_records,
            s.elapsed_secs,
            s.ticks_per_sec,
            s.peak_rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            ceiling,
            f.input_records,
            f.ticks_per_sec,
        );
        // The machine's CPU (all processes: engine, broker, clients) per million ticks in each
        // phase. The engine through Kafka needs at least the broker's and clients' part (the
        // bare run) plus its own work (the file run): on these cores, that sum bounds it.
        if let (Some(k), Some(b), Some(f)) = (engine_cpu, bare_cpu, file_cpu) {
            let per_m = |core_secs: f64| core_secs * 1e6 / s.input_records.max(1) as f64;
            let bound = MachineCpu::cores() as f64 * 1e6 / (per_m(b) + per_m(f));
            println!(
                "    machine CPU per million ticks: engine through Kafka {:.2} core-s, bare \
                 clients with the broker {:.2}, the engine on files {:.2}; bound for the engine \
                 through Kafka on these {} cores (bare + files): {bound:.0} ticks/s",
                per_m(k),
                per_m(b),
                per_m(f),
                MachineCpu::cores(),
            );
            bounds.push(bound);
        }
        rates.push(s.ticks_per_sec);
        ceilings.push(ceiling);
    }
    rates.sort_by(f64::total_cmp);
    ceilings.sort_by(f64::total_cmp);
    bounds.sort_by(f64::total_cmp);
    let (catch_up, ceiling) = (rates[rates.len() / 2], ceilings[ceilings.len() / 2]);
    println!(
        "catch-up, Kafka in and out, {workers} workers: median {catch_up:.0} ticks/s over {} \
         runs; bare-client ceiling median {ceiling:.0} records/s: {:.0} % of it",
        rates.len(),
        100.0 * catch_up / ceiling
    );
    if let Some(bound) = bounds.get(bounds.len() / 2) {
        println!(
            "  CPU bound (bare clients' and broker's CPU plus the engine's own on files): median \
             {bound:.0} ticks/s; the engine reaches {:.0} % of it",
            100.0 * catch_up / bound
        );
    }

    // 2. Latency at a steady rate: the engine, then bare clients relaying the same stream.
    let symbols: Vec<String> = std::fs::read_to_string(dir.join("instruments.csv"))?
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next().map(str::to_string))
        .collect();
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
    let read = read_while(brokers, &live_bars, window_end_ms, || {
        // Give the engine time to start and assign its partitions.
        std::thread::sleep(Duration::from_secs(3));
        produce_steady(brokers, &live_raw, args.ticks, rate, &symbols)
    });
    // Stopped whether or not the measurement worked: no engine is left running.
    let _ = Command::new("kill")
        .args(["-TERM", &engine.id().to_string()])
        .status();
    let _ = engine.wait();
    let (seen, steady) = read?;
    let t_end = steady.t0 + (steady.secs * 1000.0) as u64;
    // The trigger of window end W: the latest over partitions of the first tick with event time
    // > W + OOO.
    let trigger = |w: u64| -> Option<u64> {
        steady
            .produced
            .values()
            .map(|m| m.range(w + OOO_MS + 1..).next().copied())
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
    };
    // Per bar: (trigger produced -> readable, -> written by the engine, written -> readable).
    let parts: Vec<(f64, f64, f64)> = seen
        .iter()
        .filter(|s| s.time > steady.t0 + 1000 && s.time + OOO_MS + 1000 < t_end)
        .filter_map(|s| {
            trigger(s.time).map(|t| {
                let ms = |a: u64, b: u64| a.saturating_sub(b) as f64;
                (ms(s.readable, t), ms(s.made, t), ms(s.readable, s.made))
            })
        })
        .collect();
    let windows: BTreeSet<u64> = seen.iter().map(|s| s.time).collect();
    println!(
        "steady input: {} ticks at a target of {rate}/s, produced at {:.0}/s; {} bars of {} \
         windows ({WINDOW} tumbling) read back",
        args.ticks,
        args.ticks as f64 / steady.secs,
        seen.len(),
        windows.len()
    );
    print_latency(
        "latency, watermark-moving tick produced -> bar readable",
        "bars",
        parts.iter().map(|p| p.0).collect(),
    );
    print_latency(
        "  of it, tick produced -> bar written by the engine (its create time)",
        "bars",
        parts.iter().map(|p| p.1).collect(),
    );
    print_latency(
        "  and bar written -> readable",
        "bars",
        parts.iter().map(|p| p.2).collect(),
    );

    // The floor under that: the same stream through the broker twice (produced, relayed by bare
    // clients with the engine's client settings, readable), with nothing computed. Relaying
    // every tick loads the second hop as the first; the engine's second hop carries only its
    // bars, so the relay is measured again writing one tick per bar's worth read.
    // Last, one hop alone: produced, then read by a consumer with the engine's settings.
    let per_bar = (args.ticks / (seen.len() as u64).max(1)).max(1);
    for (relay_every, what) in [
        (Some(1), "tick produced -> relayed (every tick) -> readable"),
        (
            Some(per_bar),
            "tick produced -> relayed (one tick per bar's worth) -> readable",
        ),
        (None, "one hop, tick produced -> readable"),
    ] {
        let floor = floor_latency(brokers, nonce, relay_every, args.ticks, rate, &symbols)?;
        print_latency(&format!("floor, bare clients: {what}"), "ticks", floor);
    }
    Ok(())
}

/// Latencies (ms) of ticks produced at `rate`, relayed by bare clients with the engine's client
/// settings (one written per `relay_every` read) to a second topic, and read from it; with no
/// relay, read by a consumer from the topic they were produced to (one hop).
fn floor_latency(
    brokers: &str,
    nonce: u64,
    relay_every: Option<u64>,
    ticks: u64,
    rate: u64,
    symbols: &[String],
) -> anyhow::Result<Vec<f64>> {
    let hop = format!(
        "bench.relay.in.{nonce}.{}",
        relay_every.map_or("hop".into(), |n| n.to_string())
    );
    kafka::create_topic(brokers, &hop, 4)?;
    let produce = || {
        std::thread::sleep(Duration::from_secs(3));
        produce_steady(brokers, &hop, ticks, rate, symbols)
    };
    let seen = match relay_every {
        None => read_while(brokers, &hop, tick_ts_ms, produce)?.0,
        Some(write_every) => {
            let relay_out = format!("bench.relay.out.{nonce}.{write_every}");
            kafka::create_topic(brokers, &relay_out, 4)?;
            let stop = AtomicBool::new(false);
            let (source, sink) = client_options();
            let parts: Vec<i32> = (0..4).collect();
            std::thread::scope(|scope| {
                let relay = scope.spawn(|| {
                    kafka::bare_copy(
                        brokers,
                        &kafka::BareCopy {
                            topic: &hop,
                            partitions: &parts,
                            out: &relay_out,
                            write_every,
                            source_options: &source,
                            sink_options: &sink,
                            until: Some(&stop),
                        },
                    )
                });
                let result = read_while(brokers, &relay_out, tick_ts_ms, produce);
                stop.store(true, Ordering::Relaxed);
                let relayed = relay
                    .join()
                    .map_err(|_| anyhow::anyhow!("the relay panicked"))
                    .and_then(|r| r.map_err(anyhow::Error::from));
                relayed.and(result)
            })?
            .0
        }
    };
    Ok(seen
        .iter()
        .map(|s| s.readable.saturating_sub(s.time) as f64)
        .collect())
}

/// Runs `tickflow run GRAPH` with its own data directory and summary under `dir`, named `name`.
fn engine_run(graph: &Path, workers: u16, dir: &Path, name: &str) -> anyhow::Result<Summary> {
    let summary_path = dir.join(format!("{name}-summary.json"));
    let status = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(graph)
        .args(["--workers", &workers.to_string(), "--summary-json"])
        .arg(&summary_path)
        .arg("--data-dir")
        .arg(dir.join(format!("{name}-state")))
        .stderr(Stdio::null())
        .status()
        .context("starting tickflow run")?;
    if !status.success() {
        bail!("tickflow run {} failed with {status}", graph.display());
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(
        &summary_path,
    )?)?)
}

/// The machine's CPU time so far, all processes (`/proc/stat`): what a phase cost the whole
/// machine, the broker on the same cores included.
struct MachineCpu {
    busy: u64,
    total: u64,
    at: Instant,
}

impl MachineCpu {
    /// Jiffies busy and in all, over all CPUs (the first line of `/proc/stat`).
    fn read() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((total - idle, total))
    }

    fn now() -> Option<Self> {
        Self::read().map(|(busy, total)| Self {
            busy,
            total,
            at: Instant::now(),
        })
    }

    fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Core-seconds the machine was busy since `self`: the busy share of the jiffies times the
    /// cores times the wall time (no need to know the jiffy length).
    fn core_secs(self) -> Option<f64> {
        let (this, (busy, total)) = (self, Self::read()?);
        let share = (busy - this.busy) as f64 / (total - this.total).max(1) as f64;
        Some(share * Self::cores() as f64 * this.at.elapsed().as_secs_f64())
    }
}

/// The client options the bench graph gives its Kafka source and sink (and the bare clients
/// measured beside it use).
fn client_options() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    (
        [("fetch.wait.max.ms".into(), "5".into())].into(),
        [("linger.ms".into(), "1".into())].into(),
    )
}

/// What [`produce_steady`] produced.
struct Steady {
    /// Per partition, the event times produced: each tick's event time is its produce time
    /// (ms), so the first tick at or after a time is also when it was produced.
    produced: HashMap<i32, BTreeSet<u64>>,
    /// Wall time the first tick was produced at, ms.
    t0: u64,
    /// Seconds producing took.
    secs: f64,
}

/// Produces `ticks` live ticks (event time = wall clock) to `topic` at `rate` per second.
fn produce_steady(
    brokers: &str,
    topic: &str,
    ticks: u64,
    rate: u64,
    symbols: &[String],
) -> anyhow::Result<Steady> {
    let mut producer = LineProducer::new(brokers, topic, Some("symbol"), &BTreeMap::new())?;
    let mut produced: HashMap<i32, BTreeSet<u64>> = HashMap::new();
    let started = Instant::now();
    let t0 = now_ms();
    for i in 0..ticks {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let ts = now_ms();
        let sym = &symbols[(i as usize * 7919) % symbols.len().max(1)];
        let line = format!(
            "{{\"venue\":\"XNAS\",\"symbol\":\"{sym}\",\"ts\":{ts},\"price\":\"{}.{:02}\",\"size\":\"10\",\"seq\":{i}}}",
            100 + i % 50,
            i % 100
        );
        let p = producer.send(&line)?;
        produced.entry(p).or_default().insert(ts);
    }
    producer.finish()?;
    Ok(Steady {
        produced,
        t0,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// A record read back: the time `time_of` found in it, the wall time it became readable and
/// the time its producer made it (its create time), all ms since the epoch.
#[derive(Debug, Clone, Copy)]
struct Seen {
    time: u64,
    readable: u64,
    made: u64,
}

/// Reads `topic` from its beginning while `work` runs and for 3 s after: each record `time_of`
/// gives a time for.
fn read_while<T>(
    brokers: &str,
    topic: &str,
    time_of: fn(&[u8]) -> Option<u64>,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<Seen>, T)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| -> anyhow::Result<Vec<Seen>> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", "tickflow.bench")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "5")
                .create()?;
            consumer.subscribe(&[topic])?;
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let at = now_ms();
                    let made = m
                        .timestamp()
                        .to_millis()
                        .and_then(|t| u64::try_from(t).ok());
                    if let Some(t) = time_of(m.payload().unwrap_or_default()) {
                        seen.push(Seen {
                            time: t,
                            readable: at,
                            made: made.unwrap_or(at),
                        });
                    }
                }
            }
            Ok(seen)
        });
        let done = work();
        if done.is_ok() {
            std::thread::sleep(Duration::from_secs(3));
        }
        stop.store(true, Ordering::Relaxed);
        let seen = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
        Ok((seen, done?))
    })
}

/// A bar's `window_end`, ms since the epoch.
fn window_end_ms(payload: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let t = chrono::DateTime::parse_from_rfc3339(v["window_end"].as_str()?).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

/// A bench tick's `ts` (ms since the epoch, a number).
fn tick_ts_ms(payload: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v["ts"].as_u64()
}

/// Prints percentiles of latency samples (ms), or that there are none.
fn print_latency(what: &str, of: &str, mut lat: Vec<f64>) {
    lat.sort_by(f64::total_cmp);
    if lat.is_empty() {
        println!("  {what}: no samples");
    } else {
        println!(
            "  {what} ({} {of}): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    }
}

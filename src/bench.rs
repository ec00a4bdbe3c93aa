//! `tickflow bench`: throughput and peak memory of the example pipeline on generated ticks.
//!
//! Each measurement is a separate `tickflow run` child process, so peak RSS is that run's own.
//! Throughput is reported as the median of several runs, and the 2-worker figure also as a
//! ratio to 1 worker: these machines are noisy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use tickflow_engine::Summary;

use crate::gen::{generate, GenArgs, Shape, REALISTIC_FX};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Ticks to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub ticks: u64,
    /// Instruments to generate.
    #[arg(long, default_value_t = 2_000)]
    pub instruments: u32,
    /// Worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<u16>,
    /// Runs per worker count (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Folder for generated data and outputs (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also measure every worker count with checkpoints at this event-time interval (e.g.
    /// `10s`) into a data directory, against checkpoints off.
    #[arg(long)]
    pub checkpoint_interval: Option<String>,
    /// Instead of throughput: measure restoring this many open windows (one 1h window per
    /// instrument), as the median of `runs` restores.
    #[arg(long)]
    pub restore_windows: Option<u32>,
    /// Instead: Kafka in and out through the broker at this address (catch-up throughput,
    /// then latency at a steady `--rate`); see `deploy/kafka-broker.sh start`.
    #[arg(long)]
    pub kafka: Option<String>,
    /// Ticks per second produced in the Kafka latency measurement.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Data shapes to measure, comma-separated: `easy` (dense bars) and `realistic` (5-6
    /// ticks per one-minute bar, mixed currencies, messy symbols, spaced JSON; see `gen`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "easy,realistic"
    )]
    pub shapes: Vec<Shape>,
    /// Share of bad lines (of every dead-letter kind) in the generated ticks.
    #[arg(long, default_value_t = 0.01)]
    pub bad_ratio: f64,
    /// Instead: one process of 2 workers against a cluster of 2 processes of 1 worker on
    /// 127.0.0.1, side by side, with the bytes the processes send each other per tick.
    #[arg(long)]
    pub cluster: bool,
}

/// The example pipeline over generated data in `dir`, writing to `dir/out`.
pub fn example_graph(dir: &Path) -> String {
    graph_with_fx(dir, r#"EUR = "1.08", GBP = "1.27""#)
}

/// The example pipeline with the fx table `fx` (TOML inline-table body).
fn graph_with_fx(dir: &Path, fx: &str) -> String {
    let p = |name: &str| dir.join(name).display().to_string().replace('\\', "/");
    format!(
        r#"[graph]
name = "market-bars-bench"
version = 1
base_currency = "USD"

[graph.defaults]
max_out_of_orderness = "1s"

[sources.ticks]
type = "file"
path = "{ticks}"

[operators.normalize]
type = "normalize"
input = "ticks"
fx = {{ {fx} }}

[operators.enrich]
type = "enrich"
input = "normalize"
reference = "{refs}"

[operators.bars]
type = "window"
input = "enrich"
kind = "tumbling"
size = "1m"
allowed_lateness = "5s"

[sinks.bars]
type = "file"
input = "bars"
path = "{bars}"

[sinks.dead_letters]
type = "file"
input = ["normalize.dead_letter", "enrich.dead_letter"]
path = "{dead}"

[sinks.late]
type = "file"
input = "bars.late"
path = "{late}"
"#,
        ticks = p("ticks.jsonl"),
        refs = p("instruments.csv"),
        bars = p("out/bars.jsonl"),
        dead = p("out/dead_letters.jsonl"),
        late = p("out/late.jsonl"),
    )
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `tickflow run` as a child process; returns its summary, or `None` if it was stopped by
/// an injected fault.
fn run_child(
    graph: &Path,
    workers: u16,
    summary_path: &Path,
    data_dir: Option<&Path>,
    fault: Option<&str>,
) -> anyhow::Result<Option<Summary>> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .arg(graph)
        .args(["--workers", &workers.to_string()])
        .arg("--summary-json")
        .arg(summary_path)
        .stderr(Stdio::null());
    if let Some(d) = data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    if let Some(f) = fault {
        cmd.env("TICKFLOW_FAULT", f);
    }
    let status = cmd.status().context("starting tickflow run")?;
    if !status.success() {
        if fault.is_some() {
            return Ok(None);
        }
        bail!("tickflow run failed with {status}");
    }
    Ok(Some(serde_json::from_str(&std::fs::read_to_string(
        summary_path,
    )?)?))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Restore time of `windows` open windows: a run is stopped (injected fault) after a
/// checkpoint holding one open 1h window per instrument, then restored `runs` times from a copy.
fn restore_bench(args: &BenchArgs, dir: &Path, windows: u32) -> anyhow::Result<()> {
    let graph = dir.join("bench.toml");
    let text = example_graph(dir).replace("size = \"1m\"", "size = \"1h\"")
        + "\n[checkpoint]\ninterval = \"10s\"\nmin_pause = \"0ms\"\n";
    std::fs::write(&graph, text)?;
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    // 1,000 s of event time, about 100 checkpoints: stop before the 90th commit.
    run_child(
        &graph,
        2,
        &dir.join("s.json"),
        Some(&state),
        Some("before-marker:90"),
    )?;
    let saved_state = dir.join("state-saved");
    let saved_out = dir.join("out-saved");
    let _ = std::fs::remove_dir_all(&saved_state);
    let _ = std::fs::remove_dir_all(&saved_out);
    copy_dir(&state, &saved_state)?;
    copy_dir(&dir.join("out"), &saved_out)?;
    println!("| restore | windows in checkpoint | restore ms | whole resumed run s |");
    println!("|---|---|---|---|");
    let mut times = Vec::new();
    for i in 0..args.runs.max(1) {
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(dir.join("out"));
        copy_dir(&saved_state, &state)?;
        copy_dir(&saved_out, &dir.join("out"))?;
        let s = run_child(&graph, 2, &dir.join("r.json"), Some(&state), None)?
            .context("restored run")?;
        let ms = s.restore_ms.context("the run did not restore")?;
        let list = tickflow_engine::checkpoint::list_markers(&saved_state)?;
        let held = list
            .iter()
            .filter_map(|m| m.manifest.as_ref().ok())
            .find(|m| Some(m.id) == s.restored_from)
            .and_then(|m| m.operators.get("bars"))
            .map_or(0, |o| o.entries);
        println!("| {} | {held} | {ms:.1} | {:.2} |", i + 1, s.elapsed_secs);
        times.push(ms);
    }
    println!(
        "median restore of {windows} instruments' windows: {:.1} ms",
        median(&mut times)
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Generates data, then runs the example pipeline `runs` times per worker count.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(brokers) = &args.kafka {
        return crate::bench_kafka::run(args, brokers, args.rate);
    }
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    if let Some(windows) = args.restore_windows {
        eprintln!(
            "generating {} ticks, {windows} instruments in {}",
            args.ticks,
            dir.display()
        );
        generate(&gen_args(args, &dir, windows, Shape::Easy))?;
        return restore_bench(args, &dir, windows);
    }
    for &shape in &args.shapes {
        let shape_dir = dir.join(format!("{shape:?}").to_lowercase());
        eprintln!(
            "generating {} ticks ({shape:?} shape), {} instruments in {}",
            args.ticks,
            args.instruments,
            shape_dir.display()
        );
        generate(&gen_args(args, &shape_dir, args.instruments, shape))?;
        let fx = match shape {
            Shape::Easy => r#"EUR = "1.08", GBP = "1.27""#.to_string(),
            Shape::Realistic => REALISTIC_FX
                .iter()
                .map(|(c, r)| format!("{c} = \"{r}\""))
                .collect::<Vec<_>>()
                .join(", "),
        };
        println!("\n{shape:?} shape:\n");
        if args.cluster {
            cluster_bench(args, &shape_dir, &graph_with_fx(&shape_dir, &fx))?;
            continue;
        }
        measure(args, &shape_dir, &graph_with_fx(&shape_dir, &fx))?;
        parse_floor(&shape_dir.join("ticks.jsonl"), args.runs)?;
    }
    Ok(())
}

/// One process of 2 workers against 2 processes of 1 worker (Timely's cluster mode over
/// loopback TCP), alternating, `runs` times each: whole-process wall time from start to the
/// last process's exit, and the bytes the processes sent each other.
fn cluster_bench(args: &BenchArgs, dir: &Path, text: &str) -> anyhow::Result<()> {
    let graph = dir.join("bench.toml");
    std::fs::write(&graph, text)?;
    let (mut one, mut two, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.runs.max(1) {
        let started = Instant::now();
        let s = run_child(
            &graph,
            2,
            &dir.join(format!("summary-1x2-{i}.json")),
            None,
            None,
        )?
        .context("run")?;
        one.push(s.input_records as f64 / started.elapsed().as_secs_f64());
        let ports: Vec<u16> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
            .map(|a| a.map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
        )?;
        let started = Instant::now();
        let children: Vec<(std::process::Child, PathBuf)> = (0..2)
            .map(|p| -> anyhow::Result<_> {
                let summary = dir.join(format!("summary-2x1-{i}-{p}.json"));
                let child = Command::new(std::env::current_exe()?)
                    .arg("run")
                    .arg(&graph)
                    .args(["--workers", "1", "--processes", "2", "--process"])
                    .arg(p.to_string())
                    .arg("--hosts")
                    .arg(&hosts)
                    .arg("--summary-json")
                    .arg(&summary)
                    .stderr(Stdio::null())
                    .spawn()?;
                Ok((child, summary))
            })
            .collect::<anyhow::Result<_>>()?;
        let (mut ticks, mut sent) = (0, 0);
        for (mut child, summary) in children {
            let status = child.wait()?;
            if !status.success() {
                bail!("a process of the cluster failed with {status}");
            }
            let s: Summary = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
            ticks += s.input_records;
            sent += s.bytes_to_peers.unwrap_or(0);
        }
        two.push(ticks as f64 / started.elapsed().as_secs_f64());
        bytes.push(sent as f64 / ticks.max(1) as f64);
    }
    let (one, two, bytes) = (median(&mut one), median(&mut two), median(&mut bytes));
    println!("| shape | median ticks/s, 1 process x 2 workers | 2 processes x 1 worker | ratio | bytes between processes per tick | runs |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {one:.0} | {two:.0} | {:.2} | {bytes:.0} | {} |",
        dir.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        two / one,
        args.runs.max(1)
    );
    Ok(())
}

/// The physical limit: what one core does with the same file and nothing else, as the median
/// of `runs` passes over it in memory. Reading lines, a bare JSON parse of each line into a
/// `serde_json::Value`, and tickflow's contract parse (fields, RFC 3339 times, exact decimals).
fn parse_floor(ticks: &Path, runs: usize) -> anyhow::Result<()> {
    use std::io::BufRead;
    use std::time::Instant;
    let bytes = std::fs::read(ticks)?;
    let mut names = tickflow_operators::tick::Names::default();
    type Pass<'a> = (&'a str, Box<dyn FnMut(&str) -> bool + 'a>);
    let passes: Vec<Pass> = vec![
        ("split into lines only", Box::new(|_| true)),
        (
            "serde_json::Value per line",
            Box::new(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        ),
        (
            "tickflow contract parse per line",
            Box::new(|l| {
                let (_, spans) = tickflow_operators::tick::event_time_and_spans(l);
                tickflow_operators::tick::parse_tick_at(l, spans.as_ref(), &mut names).is_ok()
            }),
        ),
    ];
    println!("\nOne core, the file in memory (the physical limit), median of {runs}:\n");
    println!("| pass | lines/s per core | lines ok |");
    println!("|---|---|---|");
    for (name, mut pass) in passes {
        let mut rates = Vec::new();
        let mut ok = 0;
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            let (mut n, mut good) = (0u64, 0u64);
            for line in bytes.lines() {
                let line = line?;
                n += 1;
                good += u64::from(pass(&line));
            }
            rates.push(n as f64 / started.elapsed().as_secs_f64());
            ok = good;
        }
        println!("| {name} | {:.0} | {ok} |", median(&mut rates));
    }
    Ok(())
}

/// The generator settings of a benchmark.
fn gen_args(args: &BenchArgs, dir: &Path, instruments: u32, shape: Shape) -> GenArgs {
    GenArgs {
        ticks: args.ticks,
        instruments,
        seed: 42,
        out: dir.to_path_buf(),
        bad_ratio: args.bad_ratio,
        duplicate_ratio: 0.001,
        late_ratio: 0.001,
        rate: 1_000,
        jitter_ms: 800,
        start_ms: 1_709_303_400_000,
        shape,
        duration_secs: 5_400,
    }
}

/// Runs the graph `text` over the data in `dir` `runs` times per worker count (and with
/// checkpoints, if asked) and prints the table.
fn measure(args: &BenchArgs, dir: &Path, text: &str) -> anyhow::Result<()> {
    let graph = dir.join("bench.toml");
    std::fs::write(&graph, text)?;
    let ckpt_graph = dir.join("bench-ckpt.toml");
    if let Some(interval) = &args.checkpoint_interval {
        std::fs::write(
            &ckpt_graph,
            text.to_string() + &format!("\n[checkpoint]\ninterval = \"{interval}\"\n"),
        )?;
    }
    let modes: Vec<bool> = match args.checkpoint_interval {
        Some(_) => vec![false, true],
        None => vec![false],
    };
    let mut medians = Vec::new();
    println!("| workers | checkpoints | median ticks/s | min | max | peak RSS (MiB, max) | checkpoints committed | median commit ms (first save to marker) | median longest save ms | runs |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &w in &args.workers {
        let mut off_median = None;
        for &ckpt in &modes {
            let mut rates = Vec::new();
            let mut rss: u64 = 0;
            let (mut committed, mut align, mut write) = (0, Vec::new(), Vec::new());
            for i in 0..args.runs.max(1) {
                let summary_path = dir.join(format!("summary-{w}-{i}.json"));
                let state = dir.join(format!("state-{w}-{i}"));
                let _ = std::fs::remove_dir_all(&state);
                let summary = if ckpt {
                    run_child(&ckpt_graph, w, &summary_path, Some(&state), None)?
                } else {
                    run_child(&graph, w, &summary_path, None, None)?
                }
                .context("run")?;
                let _ = std::fs::remove_dir_all(&state);
                rates.push(summary.ticks_per_sec);
                rss = rss.max(summary.peak_rss_bytes.unwrap_or(0));
                committed = summary.checkpoints.committed;
                align.extend(summary.checkpoints.align_ms);
                write.extend(summary.checkpoints.write_ms);
            }
            let (min, max) = (
                rates.iter().copied().fold(f64::INFINITY, f64::min),
                rates.iter().copied().fold(0.0, f64::max),
            );
            let med = median(&mut rates);
            let label = match (ckpt, &args.checkpoint_interval) {
                (true, Some(i)) => format!("every {i}"),
                _ => "off".to_string(),
            };
            println!(
                "| {w} | {label} | {med:.0} | {min:.0} | {max:.0} | {:.1} | {committed} | {:.1} | {:.1} | {} |",
                rss as f64 / (1024.0 * 1024.0),
                median(&mut align),
                median(&mut write),
                args.runs.max(1)
            );
            match off_median {
                None => {
                    off_median = Some(med);
                    medians.push((w, med));
                }
                Some(off) => println!(
                    "checkpoints on / off with {w} worker(s): {:.3} (median ticks/s)",
                    med / off
                ),
            }
        }
    }
    if let (Some((w0, base)), true) = (medians.first(), medians.len() > 1) {
        for (w, m) in &medians[1..] {
            println!("speed-up {w} workers vs {w0}: {:.2}x", m / base);
        }
    }
    Ok(())
}

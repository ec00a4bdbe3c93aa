//! `tickflow bench`: throughput and peak memory of the example pipeline on generated ticks.
//!
//! Each measurement is a separate `tickflow run` child process, so peak RSS is that run's own.
//! Throughput is reported as the median of several runs, and the 2-worker figure also as a
//! ratio to 1 worker: these machines are noisy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use tickflow_engine::Summary;

use crate::gen::{generate, GenArgs};

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
}

/// The example pipeline over generated data in `dir`, writing to `dir/out`.
pub fn example_graph(dir: &Path) -> String {
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
fx = {{ EUR = "1.08", GBP = "1.27" }}

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
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    eprintln!(
        "generating {} ticks, {} instruments in {}",
        args.ticks,
        args.instruments,
        dir.display()
    );
    generate(&GenArgs {
        ticks: args.ticks,
        instruments: args.instruments,
        seed: 42,
        out: dir.clone(),
        bad_ratio: 0.01,
        duplicate_ratio: 0.001,
        late_ratio: 0.001,
        rate: 1_000,
        jitter_ms: 800,
        start_ms: 1_709_303_400_000,
    })?;
    let graph = dir.join("bench.toml");
    std::fs::write(&graph, example_graph(&dir))?;
    let exe = std::env::current_exe()?;
    let mut medians = Vec::new();
    println!("| workers | median ticks/s | min | max | peak RSS (MiB, max) | runs |");
    println!("|---|---|---|---|---|---|");
    for &w in &args.workers {
        let mut rates = Vec::new();
        let mut rss: u64 = 0;
        for i in 0..args.runs.max(1) {
            let summary_path = dir.join(format!("summary-{w}-{i}.json"));
            let status = Command::new(&exe)
                .arg("run")
                .arg(&graph)
                .args(["--workers", &w.to_string()])
                .arg("--summary-json")
                .arg(&summary_path)
                .stderr(Stdio::null())
                .status()
                .context("starting tickflow run")?;
            if !status.success() {
                bail!("tickflow run failed with {status}");
            }
            let summary: Summary = serde_json::from_str(&std::fs::read_to_string(&summary_path)?)?;
            rates.push(summary.ticks_per_sec);
            rss = rss.max(summary.peak_rss_bytes.unwrap_or(0));
        }
        let (min, max) = (
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
        let med = median(&mut rates);
        medians.push((w, med));
        println!(
            "| {w} | {med:.0} | {min:.0} | {max:.0} | {:.1} | {} |",
            rss as f64 / (1024.0 * 1024.0),
            args.runs.max(1)
        );
    }
    if let (Some((w0, base)), true) = (medians.first(), medians.len() > 1) {
        for (w, m) in &medians[1..] {
            println!("speed-up {w} workers vs {w0}: {:.2}x", m / base);
        }
    }
    Ok(())
}

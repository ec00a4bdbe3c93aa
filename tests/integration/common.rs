//! Helpers: run the tickflow binary, write graphs, read outputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn tickflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tickflow"))
}

/// Runs tickflow with `args`, returning its output (whatever the exit code).
pub fn run_cli(args: &[&str]) -> Output {
    tickflow().args(args).output().expect("tickflow runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Generates ticks and instruments into `dir`.
pub fn gen(dir: &Path, ticks: u64, instruments: u32, seed: u64, extra: &[&str]) {
    let mut args = vec![
        "gen".to_string(),
        "--ticks".into(),
        ticks.to_string(),
        "--instruments".into(),
        instruments.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--out".into(),
        dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = tickflow().args(&args).output().expect("gen runs");
    assert!(o.status.success(), "gen failed: {}", stderr(&o));
}

/// The window settings of a test graph.
#[derive(Clone, Copy)]
pub struct Win {
    pub size: &'static str,
    pub slide: Option<&'static str>,
    pub lateness: &'static str,
    pub ooo: &'static str,
}

pub const TUMBLING: Win = Win {
    size: "1m",
    slide: None,
    lateness: "10s",
    ooo: "1s",
};

/// Writes the example-shaped graph over `data` (ticks.jsonl, instruments.csv), with outputs
/// under `out`, and returns its path.
/// The `normalize` and `enrich` nodes every test graph has, reading source `ticks`, with the
/// reference data under `data`.
pub fn enrich_nodes(data: &Path) -> String {
    format!(
        r#"[operators.normalize]
type = "normalize"
input = "ticks"
fx = {{ EUR = "1.08", GBP = "1.27" }}

[operators.enrich]
type = "enrich"
input = "normalize"
reference = "{data}/instruments.csv"
"#,
        data = data.display()
    )
}

/// The `bars` window node over `enrich` with the window settings `w`.
pub fn bars_node(w: Win) -> String {
    let kind = match w.slide {
        Some(s) => format!("kind = \"sliding\"\nslide = \"{s}\""),
        None => "kind = \"tumbling\"".to_string(),
    };
    format!(
        r#"[operators.bars]
type = "window"
input = "enrich"
{kind}
size = "{size}"
allowed_lateness = "{lateness}"
"#,
        size = w.size,
        lateness = w.lateness,
    )
}

pub fn write_graph(dir: &Path, data: &Path, out: &Path, w: Win) -> PathBuf {
    let text = format!(
        r#"[graph]
name = "test-bars"
version = 1
base_currency = "USD"

[graph.defaults]
max_out_of_orderness = "{ooo}"

[sources.ticks]
type = "file"
path = "{data}/ticks.jsonl"

{enrich}
{bars}
[sinks.bars]
type = "file"
input = "bars"
path = "{out}/bars.jsonl"

[sinks.dead_letters]
type = "file"
input = ["normalize.dead_letter", "enrich.dead_letter"]
path = "{out}/dead_letters.jsonl"

[sinks.late]
type = "file"
input = "bars.late"
path = "{out}/late.jsonl"
"#,
        ooo = w.ooo,
        enrich = enrich_nodes(data),
        bars = bars_node(w),
        data = data.display(),
        out = out.display(),
    );
    let path = dir.join("graph.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a graph with `workers`, returning the parsed summary JSON.
pub fn run_graph(graph: &Path, workers: usize) -> serde_json::Value {
    let summary = graph.with_extension(format!("summary-{workers}.json"));
    let o = tickflow()
        .arg("run")
        .arg(graph)
        .args(["--workers", &workers.to_string(), "--summary-json"])
        .arg(&summary)
        .output()
        .expect("run starts");
    assert!(o.status.success(), "run failed: {}", stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap()
}

/// A file's lines, sorted.
pub fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// The newest commit marker's file name in a data directory (`None` before the first).
pub fn newest_marker(data_dir: &Path) -> Option<std::ffi::OsString> {
    std::fs::read_dir(data_dir.join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| n.to_string_lossy().ends_with(".ckpt"))
                .max()
        })
        .unwrap_or_default()
}

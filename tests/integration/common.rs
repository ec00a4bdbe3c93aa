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

/// 300,000 generated ticks (2 % bad) under `root/data` and the example graph reading them,
/// checkpointing every 10 s of event time at most every 200 ms, as `root/g.toml`: what the
/// cluster tests crash and restore.
pub fn checkpointed_example(root: &Path) -> std::path::PathBuf {
    let data = root.join("data");
    gen(&data, 300_000, 200, 11, &["--bad-ratio", "0.02"]);
    let graph = root.join("g.toml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/market-bars.toml"),
    )
    .unwrap()
    .replace("examples/data", data.to_str().unwrap());
    std::fs::write(
        &graph,
        format!("{example}\n[checkpoint]\ninterval = \"10s\"\nmin_pause = \"200ms\"\n"),
    )
    .unwrap();
    graph
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

/// A graph written by [`write_graph`] with a JPY rate too (the realistic shape has JPY ticks;
/// without it they are dead letters).
pub fn with_jpy(graph_text: &str) -> String {
    let from = r#"GBP = "1.27" }"#;
    assert!(
        graph_text.contains(from),
        "the graph has the usual fx table"
    );
    graph_text.replace(from, r#"GBP = "1.27", JPY = "0.0067" }"#)
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

/// Free TCP ports on 127.0.0.1 for the processes of a cluster (bound, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Runs `graph` on a cluster of `processes` x `workers` on 127.0.0.1 (fresh ports), process
/// `i` in the working directory `cwd(i)` with `extra` arguments; fails the test unless every
/// process succeeds. Returns each process's summary.
pub fn run_cluster(
    graph: &Path,
    shape: (usize, usize),
    cwd: impl Fn(usize) -> PathBuf,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    run_cluster_with(graph, shape, cwd, extra, None)
        .into_iter()
        .enumerate()
        .map(|(i, (code, log, summary))| {
            assert_eq!(code, Some(0), "process {i} failed\n{log}");
            summary.unwrap_or_else(|| panic!("process {i} wrote no summary\n{log}"))
        })
        .collect()
}

/// [`run_cluster`] with `TICKFLOW_FAULT=fault0` on process 0 (a crash there, which stops the
/// others), not failing on an exit: each process's exit code (`None` if killed by a signal),
/// log, and summary if it wrote one.
pub fn run_cluster_with(
    graph: &Path,
    (processes, workers): (usize, usize),
    cwd: impl Fn(usize) -> PathBuf,
    extra: &[&str],
    fault0: Option<&str>,
) -> Vec<(Option<i32>, String, Option<serde_json::Value>)> {
    let hosts_dir = tempfile::tempdir().unwrap();
    let hosts = hosts_dir.path().join("hosts");
    let lines: Vec<String> = free_ports(processes)
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    std::fs::write(&hosts, lines.join("\n")).unwrap();
    let summaries: Vec<PathBuf> = (0..processes)
        .map(|i| hosts_dir.path().join(format!("summary-{i}.json")))
        .collect();
    let mut children: Vec<std::process::Child> = (0..processes)
        .map(|i| {
            let mut c = tickflow();
            c.current_dir(cwd(i))
                .arg("run")
                .arg(graph)
                .args(["--workers", &workers.to_string()])
                .args(["--processes", &processes.to_string()])
                .args(["--process", &i.to_string(), "--hosts"])
                .arg(&hosts)
                .arg("--summary-json")
                .arg(&summaries[i])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            if let (0, Some(fault)) = (i, fault0) {
                c.env("TICKFLOW_FAULT", fault);
            }
            c.spawn().expect("tickflow starts")
        })
        .collect();
    // Each process's log, read as it comes (a full pipe would stall the process).
    let logs: Vec<std::thread::JoinHandle<String>> = children
        .iter_mut()
        .map(|c| {
            let mut err = c.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut text);
                text
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    for i in 0..processes {
        while children[i].try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                for c in &mut children {
                    let _ = c.kill();
                }
                panic!("process {i} of {processes} did not finish in 5 minutes");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let outputs: Vec<String> = logs.into_iter().map(|l| l.join().unwrap()).collect();
    outputs
        .into_iter()
        .enumerate()
        .map(|(i, log)| {
            let status = children[i].wait().unwrap();
            let summary = std::fs::read_to_string(&summaries[i])
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            (status.code(), log, summary)
        })
        .collect()
}

/// A random test's seed: `TICKFLOW_TEST_SEED` when set (to replay a failure), else the clock;
/// printed with `what`.
pub fn test_seed(what: &str) -> u64 {
    let seed = std::env::var("TICKFLOW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    eprintln!("{what} (TICKFLOW_TEST_SEED): {seed}");
    seed
}

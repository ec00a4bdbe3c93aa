//! Running graphs: worker-count determinism, the golden example, the generator.

use std::path::Path;

use crate::common::*;

fn outputs(out: &Path) -> Vec<Vec<String>> {
    ["bars.jsonl", "dead_letters.jsonl", "late.jsonl"]
        .iter()
        .map(|f| sorted_lines(&out.join(f)))
        .collect()
}

fn counts(summary: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "input_records": summary["input_records"],
        "nodes": summary["nodes"],
        "dead_letters": summary["dead_letters"],
        "late": summary["late"],
        "duplicates": summary["duplicates"],
    })
}

fn same_for_1_2_3_workers(win: Win, seed: u64) {
    let args = [
        "--bad-ratio",
        "0.02",
        "--late-ratio",
        "0.01",
        "--rate",
        "200",
        "--jitter-ms",
        "3000",
    ];
    same_for_1_2_3_workers_on((30_000, 40, &args), win, seed);
}

/// Runs `gen` of `(ticks, instruments, extra args)` with 1, 2 and 3 workers: outputs and
/// counts must be the same.
fn same_for_1_2_3_workers_on(gen_args: (u64, u32, &[&str]), win: Win, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ticks, instruments, extra) = gen_args;
    gen(&data, ticks, instruments, seed, extra);
    let mut results = Vec::new();
    for workers in [1, 2, 3] {
        let out = dir.path().join(format!("out{workers}"));
        let run_dir = dir.path().join(format!("run{workers}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let graph = write_graph(&run_dir, &data, &out, win);
        std::fs::write(&graph, with_jpy(&std::fs::read_to_string(&graph).unwrap())).unwrap();
        let summary = run_graph(&graph, workers);
        assert_eq!(summary["workers"].as_u64(), Some(workers as u64));
        results.push((outputs(&out), counts(&summary)));
    }
    assert!(results[0].0[0].len() > 50, "bars were produced");
    assert!(!results[0].0[1].is_empty(), "dead letters were produced");
    assert!(!results[0].0[2].is_empty(), "late ticks were produced");
    for (i, r) in results.iter().enumerate().skip(1) {
        assert_eq!(
            r.0,
            results[0].0,
            "outputs of {} workers differ from 1 worker",
            i + 1
        );
        assert_eq!(
            r.1,
            results[0].1,
            "counts of {} workers differ from 1 worker",
            i + 1
        );
    }
}

#[test]
fn tumbling_results_are_identical_for_1_2_and_3_workers() {
    same_for_1_2_3_workers(TUMBLING, 11);
}

#[test]
fn sliding_results_are_identical_for_1_2_and_3_workers() {
    let win = Win {
        size: "30s",
        slide: Some("10s"),
        lateness: "3s",
        ooo: "500ms",
    };
    same_for_1_2_3_workers(win, 12);
}

/// Issue 13's realistic shape: sparse one-minute bars, mixed currencies, messy symbols,
/// spaced JSON, 5 % bad lines and 1 % very late ticks.
#[test]
fn realistic_shape_results_are_identical_for_1_2_and_3_workers() {
    let args = [
        "--shape",
        "realistic",
        "--duration-secs",
        "1200",
        "--bad-ratio",
        "0.05",
        "--late-ratio",
        "0.01",
    ];
    let win = Win {
        lateness: "5s",
        ..TUMBLING
    };
    same_for_1_2_3_workers_on((60_000, 500, &args), win, 13);
}

/// The example pipeline, with its outputs redirected, against `tests/graphs/market-bars/`.
#[test]
fn golden_example_pipeline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = std::fs::read_to_string(root.join("examples/market-bars.toml"))
        .unwrap()
        .replace("\"examples/", &format!("\"{}/examples/", root.display()))
        .replace("\"out/", &format!("\"{}/", out.display()));
    let graph = dir.path().join("market-bars.toml");
    std::fs::write(&graph, text).unwrap();
    let summary = run_graph(&graph, 2);
    let golden = root.join("tests/graphs/market-bars");
    for file in ["bars.jsonl", "dead_letters.jsonl", "late.jsonl"] {
        let got = std::fs::read_to_string(out.join(file)).unwrap();
        let want = std::fs::read_to_string(golden.join(file)).unwrap();
        assert!(
            got == want,
            "{file} differs from the golden copy in {}",
            golden.display()
        );
    }
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("counts.json")).unwrap())
            .unwrap();
    assert_eq!(counts(&summary), want);
}

#[test]
fn run_prints_a_summary_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen(&data, 3_000, 5, 3, &["--bad-ratio", "0.05"]);
    let graph = write_graph(dir.path(), &data, &dir.path().join("out"), TUMBLING);
    let o = run_cli(&["run", graph.to_str().unwrap(), "--workers", "2"]);
    assert!(o.status.success());
    let err = stderr(&o);
    for part in [
        "graph test-bars v1 on 2 worker(s)",
        "normalize",
        "dead letters: invalid_value=",
        "late ticks:",
        "duplicates:",
        "ticks/s",
    ] {
        assert!(err.contains(part), "summary lacks {part:?}:\n{err}");
    }
    assert!(err.contains("3000 ticks in"), "{err}");
}

#[test]
fn gen_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    gen(&a, 2_000, 10, 1, &["--bad-ratio", "0.1"]);
    gen(&b, 2_000, 10, 1, &["--bad-ratio", "0.1"]);
    gen(&c, 2_000, 10, 2, &["--bad-ratio", "0.1"]);
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(read(&a, "ticks.jsonl"), read(&b, "ticks.jsonl"));
    assert_eq!(read(&a, "instruments.csv"), read(&b, "instruments.csv"));
    assert_ne!(read(&a, "ticks.jsonl"), read(&c, "ticks.jsonl"));
    let text = String::from_utf8(read(&a, "ticks.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 2_000);
    assert_eq!(
        String::from_utf8(read(&a, "instruments.csv"))
            .unwrap()
            .lines()
            .count(),
        11
    );
}

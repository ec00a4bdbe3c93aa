//! Cluster mode: one graph on several `tickflow` processes on 127.0.0.1 (Timely's cluster
//! communication), each in its own working directory as on its own machine.

use std::path::{Path, PathBuf};

use crate::common::{run_cluster, tickflow};

const OUTPUTS: [&str; 3] = ["bars.jsonl", "dead_letters.jsonl", "late.jsonl"];

/// A working directory holding the example graph and its data, as the README runs it.
fn example_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("examples/data")).unwrap();
    for f in ["ticks.jsonl", "instruments.csv"] {
        std::fs::copy(
            repo.join("examples/data").join(f),
            dir.join("examples/data").join(f),
        )
        .unwrap();
    }
    std::fs::copy(
        repo.join("examples/market-bars.toml"),
        dir.join("market-bars.toml"),
    )
    .unwrap();
    dir
}

#[test]
fn the_example_on_two_and_three_processes_writes_the_one_process_outputs_byte_for_byte() {
    let root = tempfile::tempdir().unwrap();
    let one = example_dir(root.path(), "one");
    let o = tickflow()
        .current_dir(&one)
        .args(["run", "market-bars.toml", "--workers", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected: Vec<Vec<u8>> = OUTPUTS
        .iter()
        .map(|f| std::fs::read(one.join("out").join(f)).unwrap())
        .collect();
    assert!(expected.iter().all(|e| !e.is_empty()));

    for (processes, workers) in [(2, 1), (3, 1), (2, 2)] {
        let shape = format!("{processes}x{workers}");
        let dirs: Vec<PathBuf> = (0..processes)
            .map(|i| example_dir(root.path(), &format!("{shape}-{i}")))
            .collect();
        let summaries = run_cluster(Path::new("market-bars.toml"), processes, workers, |i| {
            dirs[i].clone()
        });
        for (i, s) in summaries.iter().enumerate() {
            assert_eq!(s["process"], serde_json::json!([i, processes]), "{shape}");
        }
        // The file is read by one worker of the whole cluster, on process 0.
        let read: Vec<u64> = summaries
            .iter()
            .map(|s| s["input_records"].as_u64().unwrap())
            .collect();
        assert_eq!(read[0], 8000, "{shape}: {read:?}");
        assert!(read[1..].iter().all(|r| *r == 0), "{shape}: {read:?}");
        // Every sink is written by the last process, byte for byte as by one process, and
        // no other process writes any output.
        let last = &dirs[processes - 1];
        for (f, want) in OUTPUTS.iter().zip(&expected) {
            let got = std::fs::read(last.join("out").join(f)).unwrap();
            assert!(
                got == *want,
                "{shape}: {f} differs from the one-process run"
            );
        }
        for d in &dirs[..processes - 1] {
            assert!(
                !d.join("out").exists(),
                "{shape}: {} wrote outputs",
                d.display()
            );
        }
    }
}

#[test]
fn a_cluster_is_refused_with_a_clear_error_when_its_settings_do_not_fit() {
    let root = tempfile::tempdir().unwrap();
    let dir = example_dir(root.path(), "bad");
    let hosts = root.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:1\nnot-an-address\n").unwrap();
    let run = |args: &[&str]| {
        let o = tickflow()
            .current_dir(&dir)
            .args(["run", "market-bars.toml"])
            .args(args)
            .env_remove("HOSTNAME")
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} ran");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let h = hosts.to_str().unwrap();
    let err = run(&["--processes", "2", "--process", "0", "--hosts", h]);
    assert!(
        err.contains(&format!("{h}:2")) && err.contains("expected host:port"),
        "{err}"
    );
    std::fs::write(&hosts, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let err = run(&["--processes", "3", "--process", "0", "--hosts", h]);
    assert!(err.contains("2 address(es) for 3 process(es)"), "{err}");
    let err = run(&["--processes", "2", "--process", "2", "--hosts", h]);
    assert!(err.contains("process index 2"), "{err}");
    let err = run(&["--processes", "2", "--hosts", h]);
    assert!(err.contains("$HOSTNAME"), "{err}");
    let err = run(&["--processes", "2", "--process", "0"]);
    assert!(err.contains("needs --hosts"), "{err}");
}

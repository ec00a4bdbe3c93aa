//! Cluster mode: one graph on several `tickflow` processes on 127.0.0.1 (Timely's cluster
//! communication), each in its own working directory as on its own machine.

use std::path::{Path, PathBuf};

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_ports, gen, run_cluster, tickflow};

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
        let summaries = run_cluster(
            Path::new("market-bars.toml"),
            (processes, workers),
            |i| dirs[i].clone(),
            &[],
        );
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

/// Starts process `i` of a cluster of `processes` on `hosts`, in `dir`, its stderr piped.
fn start(dir: &Path, graph: &Path, hosts: &Path, i: usize, processes: usize) -> Child {
    start_with(dir, graph, hosts, (i, processes), None)
}

/// [`start`], with the data directory `state` if given, and the summary in `dir`.
fn start_with(
    dir: &Path,
    graph: &Path,
    hosts: &Path,
    (i, processes): (usize, usize),
    state: Option<&Path>,
) -> Child {
    let mut c = tickflow();
    c.current_dir(dir)
        .arg("run")
        .arg(graph)
        .args(["--workers", "1", "--processes", &processes.to_string()])
        .args([
            "--process",
            &i.to_string(),
            "--connect-timeout",
            "60",
            "--hosts",
        ])
        .arg(hosts)
        .arg("--summary-json")
        .arg(dir.join("summary.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(state) = state {
        c.arg("--data-dir").arg(state);
    }
    c.spawn().unwrap()
}

/// Hosts on fresh ports for `n` processes, written to `hosts`.
fn fresh_hosts(hosts: &Path, n: usize) {
    let lines: Vec<String> = free_ports(n)
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    std::fs::write(hosts, lines.join("\n")).unwrap();
}

/// Waits for `child` at most `secs` seconds (killing it and failing after that): exit code
/// and standard error.
fn finish(mut child: Child, secs: u64) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a process of the cluster hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn processes_share_fate_a_lost_or_failed_peer_stops_the_others_with_a_clear_line() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(&data, 1_000_000, 200, 5, &[]);
    let graph = root.path().join("g.toml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/market-bars.toml"),
    )
    .unwrap()
    .replace("examples/data", data.to_str().unwrap());
    std::fs::write(&graph, example).unwrap();
    let hosts = root.path().join("hosts");
    let dirs: Vec<PathBuf> = (0..2).map(|i| root.path().join(format!("p{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }

    // Both processes, on fresh ports.
    let pair = || {
        let ports = free_ports(2);
        std::fs::write(
            &hosts,
            format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
        )
        .unwrap();
        (
            start(&dirs[0], &graph, &hosts, 0, 2),
            start(&dirs[1], &graph, &hosts, 1, 2),
        )
    };

    // kill -9 of process 1 mid-run: process 0 halts with the peer-lost code, naming it.
    let (p0, mut p1) = pair();
    std::thread::sleep(Duration::from_secs(2));
    p1.kill().unwrap();
    let _ = p1.wait();
    let (code, err) = finish(p0, 60);
    assert_eq!(code, Some(75), "{err}");
    assert!(
        err.contains("lost process 1 of the cluster") && err.contains("Restart every process"),
        "{err}"
    );

    // A failure in one process (its sink cannot be created) stops it with the reason, and the
    // other halts as above.
    let _ = std::fs::remove_dir_all(dirs[1].join("out"));
    std::fs::write(dirs[1].join("out"), "not a directory").unwrap();
    let (p0, p1) = pair();
    let (code1, err1) = finish(p1, 60);
    let (code0, err0) = finish(p0, 60);
    assert_eq!(code1, Some(1), "{err1}");
    assert!(
        err1.contains("sink bars") && err1.contains("the other processes stop too"),
        "{err1}"
    );
    assert_eq!(code0, Some(75), "{err0}");
    assert!(err0.contains("lost process 1"), "{err0}");
}

#[test]
fn the_cluster_bench_measures_two_processes_beside_one_with_the_bytes_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = tickflow()
        .args([
            "bench",
            "--cluster",
            "--ticks",
            "20000",
            "--instruments",
            "100",
        ])
        .args(["--runs", "1", "--shapes", "easy", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("| easy |"))
        .unwrap_or_else(|| panic!("{text}"))
        .split('|')
        .map(str::trim)
        .collect();
    let number = |i: usize| row[i].parse::<f64>().unwrap_or_else(|_| panic!("{row:?}"));
    assert!(
        number(2) > 0.0 && number(3) > 0.0 && number(4) > 0.0,
        "{row:?}"
    );
    // Ticks cross between the processes (the file is read on process 0, bars are written on
    // process 1): bytes per tick are counted.
    assert!(number(5) > 10.0, "{row:?}");
}

/// Newest commit marker's file name in process `process`'s directory of a cluster's data dir.
fn newest_marker_of(data_dir: &Path, process: usize) -> Option<std::ffi::OsString> {
    crate::common::newest_marker(&data_dir.join(format!("process-{process}")))
}

/// Every process of a cluster of `dirs.len()` with data dir `state`, on fresh ports.
fn start_all(dirs: &[PathBuf], graph: &Path, hosts: &Path, state: &Path) -> Vec<Child> {
    fresh_hosts(hosts, dirs.len());
    (0..dirs.len())
        .map(|i| start_with(&dirs[i], graph, hosts, (i, dirs.len()), Some(state)))
        .collect()
}

#[test]
fn kill_9_of_either_process_then_a_restart_of_both_resumes_exactly_once() {
    use rand::{Rng, SeedableRng};
    let root = tempfile::tempdir().unwrap();
    let graph = crate::common::checkpointed_example(root.path());
    // The reference: one process, no data directory.
    let one = root.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    let o = tickflow()
        .current_dir(&one)
        .arg("run")
        .arg(&graph)
        .args(["--workers", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let dirs: Vec<PathBuf> = (0..2).map(|i| root.path().join(format!("p{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let (hosts, state) = (root.path().join("hosts"), root.path().join("state"));
    let seed = crate::common::test_seed("cluster kill -9 test seed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut kills, mut attempts) = (0, 0);
    while kills < 3 {
        attempts += 1;
        assert!(attempts < 20, "could not kill the cluster 3 times");
        // A random moment after this attempt committed a checkpoint of its own.
        let before = newest_marker_of(&state, 0);
        let mut children = start_all(&dirs, &graph, &hosts, &state);
        let started = Instant::now();
        let delay = Duration::from_millis(rng.gen_range(0..600));
        let mut committed_at: Option<Instant> = None;
        let mut exited = false;
        while committed_at.is_none_or(|t| t.elapsed() < delay) {
            if children.iter_mut().any(|c| c.try_wait().unwrap().is_some()) {
                exited = true;
                break;
            }
            // A marker newer than any before (markers are named by zero-padded id): this
            // attempt committed. (A restore drops markers that were not complete everywhere,
            // which also changes the newest one, before the processes run.)
            if committed_at.is_none() && newest_marker_of(&state, 0) > before {
                committed_at = Some(Instant::now());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint in 2 minutes"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if exited {
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
            std::fs::remove_dir_all(&state).unwrap();
            let _ = std::fs::remove_dir_all(dirs[1].join("out"));
            continue;
        }
        // SIGKILL one of them; the other halts on its own (shared fate).
        let victim = kills % 2;
        children[victim].kill().unwrap();
        let mut rest = children.into_iter();
        let (first, second) = (rest.next().unwrap(), rest.next().unwrap());
        let (killed, other) = if victim == 0 {
            (first, second)
        } else {
            (second, first)
        };
        let mut killed = killed;
        killed.wait().unwrap();
        let (code, err) = finish(other, 60);
        assert_eq!(code, Some(75), "{err}");
        kills += 1;
    }
    // Both again, to the end.
    let children = start_all(&dirs, &graph, &hosts, &state);
    for c in children {
        let (code, err) = finish(c, 300);
        assert_eq!(code, Some(0), "{err}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dirs[0].join("summary.json")).unwrap())
            .unwrap();
    assert!(summary["restored_from"].as_u64().is_some(), "{summary}");
    for f in OUTPUTS {
        let want = std::fs::read(one.join("out").join(f)).unwrap();
        let got = std::fs::read(dirs[1].join("out").join(f)).unwrap();
        assert!(
            got == want,
            "{f} after 3 kills differs from the uninterrupted run"
        );
    }
    // The cluster's checkpoints, as an operator lists and inspects them.
    let list = crate::common::run_cli(&["checkpoints", "list", state.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let final_row = text
        .lines()
        .find(|l| l.contains(" final "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        final_row.contains("2 x 1") && final_row.contains("0,1") && final_row.ends_with("yes"),
        "{text}"
    );
    let inspect =
        crate::common::run_cli(&["checkpoints", "inspect", state.to_str().unwrap(), "latest"]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("by 2 process(es) of 1 worker(s)") && text.contains("bars/windows"),
        "{text}"
    );
}

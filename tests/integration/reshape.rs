//! A cluster's checkpoint restored on another shape: the state of processes that no longer
//! exist is read by its new owners from one shared data directory.

use std::path::{Path, PathBuf};

use crate::common::{run_cli, run_cluster, run_cluster_with, tickflow};

const OUTPUTS: [&str; 3] = ["bars.jsonl", "dead_letters.jsonl", "late.jsonl"];

fn outputs(dir: &Path) -> Vec<Vec<u8>> {
    OUTPUTS
        .iter()
        .map(|f| std::fs::read(dir.join("out").join(f)).unwrap_or_default())
        .collect()
}

/// The pending reshapes (`reshape-<id>`) under the data dir `state`.
fn pending(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("reshape-"))
        .collect()
}

/// The newest checkpoint complete on every process, per `tickflow checkpoints list --json`.
fn newest_complete(state: &Path) -> u64 {
    let o = run_cli(&["checkpoints", "list", state.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    rows.iter()
        .find(|r| r["complete"] == true)
        .and_then(|r| r["id"].as_u64())
        .unwrap_or_else(|| panic!("no complete checkpoint in {rows:?}"))
}

fn copy_dir(from: &Path, to: &Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_checkpoint_of_two_processes_restores_on_one_and_on_three_with_identical_outputs() {
    let root = tempfile::tempdir().unwrap();
    let graph = crate::common::checkpointed_example(root.path());
    let reference = root.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    let o = tickflow()
        .current_dir(&reference)
        .arg("run")
        .arg(&graph)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = outputs(&reference);
    assert!(want.iter().all(|o| !o.is_empty()));

    // Two processes on one shared directory (data dir and outputs), process 0 crashing at its
    // fourth commit marker: the other stops too.
    let two = root.path().join("two");
    std::fs::create_dir_all(&two).unwrap();
    let state_args = ["--data-dir", "state"];
    let ended = run_cluster_with(
        &graph,
        (2, 1),
        |_| two.clone(),
        &state_args,
        Some("after-marker:4"),
    );
    assert_ne!(ended[0].0, Some(0), "{}", ended[0].1);
    assert_eq!(ended[1].0, Some(75), "{}", ended[1].1);
    let taken = newest_complete(&two.join("state"));
    assert!(
        outputs(&two) != want,
        "the crash left the outputs unfinished"
    );
    let three = root.path().join("three");
    copy_dir(&two, &three);

    // On one process of two workers: the cluster's state moves into it.
    let o = tickflow()
        .current_dir(&two)
        .arg("run")
        .arg(&graph)
        .args([
            "--workers",
            "2",
            "--data-dir",
            "state",
            "--summary-json",
            "one.json",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("was taken by 2 process(es) x 1 worker(s); restoring it on 1 x 2"),
        "{err}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("one.json")).unwrap()).unwrap();
    assert_eq!(summary["restored_from"].as_u64(), Some(taken), "{summary}");
    assert!(
        outputs(&two) == want,
        "2 -> 1 differs from the uninterrupted run"
    );
    let state = two.join("state");
    assert!(
        pending(&state).is_empty(),
        "the old shape's state is deleted"
    );
    assert!(state.join("graph.json").exists() && !state.join("process-0").exists());

    // On three processes, crashing once after the new shape committed (its first checkpoint
    // holds the whole state), then to the end from that shape's own checkpoint.
    let ended = run_cluster_with(
        &graph,
        (3, 1),
        |_| three.clone(),
        &state_args,
        Some("after-marker:3"),
    );
    assert_ne!(ended[0].0, Some(0), "{}", ended[0].1);
    assert!(
        ended[0].1.contains("restoring it on 3 x 1"),
        "{}",
        ended[0].1
    );
    let state = three.join("state");
    let own = newest_complete(&state);
    assert!(own > taken, "the new shape committed past {taken}: {own}");
    assert!(
        pending(&state).is_empty(),
        "the old shape's state is deleted"
    );
    let summaries = run_cluster(&graph, (3, 1), |_| three.clone(), &state_args);
    assert_eq!(summaries[0]["restored_from"].as_u64(), Some(own));
    assert!(
        outputs(&three) == want,
        "2 -> 3 differs from the uninterrupted run"
    );
    let dirs: Vec<PathBuf> = (0..3).map(|i| state.join(format!("process-{i}"))).collect();
    assert!(dirs.iter().all(|d| d.join("checkpoints").is_dir()));
}

//! `tickflow serve` on two processes: process 0 leads (API commands, event log), process 1
//! follows its events and runs its share of every deployment.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::free_ports;
use crate::serve::{config_text, setup, Server, OPERATOR_KEY, OUTPUTS, VIEWER_KEY};

/// Starts process `i` of a two-process `serve` in `root` (its own data dir and output root,
/// reading inside `reads`), following `leader` if given.
fn start(
    root: &std::path::Path,
    reads: &std::path::Path,
    hosts: &std::path::Path,
    i: usize,
    leader: Option<&str>,
) -> Server {
    let config = root.join("serve.toml");
    if !config.exists() {
        let text = config_text(root, "", "").replace(
            &format!("{:?}", root.join("data").display().to_string()),
            &format!("{:?}", reads.display().to_string()),
        );
        std::fs::write(&config, text).unwrap();
    }
    let mut args = vec![
        "--processes".to_string(),
        "2".into(),
        "--process".into(),
        i.to_string(),
        "--hosts".into(),
        hosts.display().to_string(),
        "--connect-timeout".into(),
        "120".into(),
    ];
    if let Some(url) = leader {
        args.extend(["--leader".to_string(), url.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with_env(root, &args, &[("TICKFLOW_LEADER_KEY", VIEWER_KEY)])
}

#[test]
fn serve_on_two_processes_runs_each_deployment_on_both_and_a_killed_follower_rejoins() {
    let s = setup(300_000);
    let root0 = s.root.path();
    let reads = root0.join("data");
    let other = tempfile::tempdir().unwrap();
    let root1 = other.path();
    let hosts = root0.join("hosts");
    let ports = free_ports(2);
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let mut leader = start(root0, &reads, &hosts, 0, None);
    let follower = start(root1, &reads, &hosts, 1, Some(&leader.base));

    // Commands go to process 0; a follower refuses them, naming the leader.
    let (status, body) = follower.call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&s.toml));
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string().contains("send commands to process 0"),
        "{body}"
    );
    let (status, body) = leader.call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&s.toml));
    assert_eq!(status, 201, "{body}");
    let (status, body) = leader.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 1, "reason": "on two processes"}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    let dep = format!("/api/v1/deployments/{id}");

    // Both run their share: process 0 reads the file, process 1 (the last) writes the sinks.
    // Once a checkpoint is committed on both, SIGKILL the follower mid-run.
    leader.wait_for(&dep, "a checkpoint", |v| !v["last_checkpoint"].is_null());
    let share = |v: &Value| v["nodes"][1]["records_in"].as_u64().unwrap_or(0);
    let running = follower.wait_for(&dep, "the follower's share", |v| {
        v["state"] == "running" && !v["last_checkpoint"].is_null() && share(v) > 0
    });
    follower.sigkill();
    assert_eq!(running["nodes"][1]["name"], "normalize", "{running}");
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = leader.child.try_wait() {
        let log = std::fs::read_to_string(&leader.log).unwrap_or_default();
        panic!("the leader must outlive its deployment's peer, but exited ({status}): {log}");
    }
    let now = leader.get(&dep);
    assert_eq!(now["state"], "running", "finished before the kill: {now}");

    // Restarted, the follower replays the leader's events and rejoins; the deployment resumes
    // from the newest checkpoint complete on both and finishes with exact outputs.
    let follower = start(root1, &reads, &hosts, 1, Some(&leader.base));
    let done = leader.wait_for(&dep, "the end of input", |v| v["state"] == "finished");
    assert_eq!(done["error"], Value::Null);
    for (i, name) in OUTPUTS.iter().enumerate() {
        let got = std::fs::read(root1.join("outputs/d1").join(name)).unwrap();
        assert!(
            got == s.reference[i],
            "{name} after the follower's SIGKILL differs from an uninterrupted run"
        );
    }
    // The leader's audit trail: started, started again from a checkpoint, finished.
    let events = leader.events();
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "deployment_started")
        .collect();
    assert!(started.len() >= 2, "{events:#?}");
    assert!(
        started.last().unwrap()["restored_from"].is_u64(),
        "{events:#?}"
    );
    assert_eq!(events.last().unwrap()["type"], "deployment_finished");
    // The follower folded the same events.
    let started_at = Instant::now();
    while follower.events().len() != events.len() {
        assert!(
            started_at.elapsed() < Duration::from_secs(30),
            "the follower lags"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(follower.get(&dep)["state"], "finished");
}

//! `tickflow serve` on two processes: process 0 leads (API commands, event log), process 1
//! follows its events and runs its share of every deployment.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::free_ports;
use crate::serve::{config_text, setup, Server, OPERATOR_KEY, OUTPUTS, VIEWER_KEY};

/// Starts process `i` of a two-process `serve` in `root` (its own data dir and output root,
/// reading inside `reads`), the leader's API on port `api`. The leader takes its place in the
/// cluster from flags, the follower from its configuration file's `[cluster]`.
fn start(
    root: &std::path::Path,
    reads: &std::path::Path,
    hosts: &std::path::Path,
    i: usize,
    api: u16,
) -> Server {
    let config = root.join("serve.toml");
    let leader = format!("http://127.0.0.1:{api}");
    if !config.exists() {
        let place = match i {
            0 => String::new(),
            _ => format!(
                "[cluster]\nprocesses = 2\nprocess = {i}\nhosts = {:?}\nleader = {leader:?}\n\
                 connect_timeout_secs = 120\n",
                hosts.display().to_string()
            ),
        };
        let text = config_text(root, &place, "").replace(
            &format!("{:?}", root.join("data").display().to_string()),
            &format!("{:?}", reads.display().to_string()),
        );
        std::fs::write(&config, text).unwrap();
    }
    let hosts = hosts.display().to_string();
    let listen = format!("127.0.0.1:{api}");
    let args: &[&str] = match i {
        0 => &[
            "--processes",
            "2",
            "--process",
            "0",
            "--hosts",
            &hosts,
            "--connect-timeout",
            "120",
            "--listen",
            &listen,
        ],
        _ => &[],
    };
    Server::start_with_env(root, args, &[("TICKFLOW_LEADER_KEY", VIEWER_KEY)])
}

#[test]
fn serve_on_two_processes_runs_each_deployment_on_both_and_a_killed_process_rejoins() {
    let s = setup(600_000);
    let root0 = s.root.path();
    let reads = root0.join("data");
    let other = tempfile::tempdir().unwrap();
    let root1 = other.path();
    let hosts = root0.join("hosts");
    // Deployment 1's processes listen on their host's port + 1: pick ports where that is free.
    let ports = loop {
        let ports = free_ports(3);
        let next_free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok();
        if next_free(ports[0]) && next_free(ports[1]) {
            break ports;
        }
    };
    let api = ports[2];
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let mut leader = start(root0, &reads, &hosts, 0, api);
    let follower = start(root1, &reads, &hosts, 1, api);

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
    // from the newest checkpoint complete on both.
    let follower = start(root1, &reads, &hosts, 1, api);
    let rejoined = leader.wait_for(&dep, "a checkpoint after the rejoin", |v| {
        let from = v["restored_from"].as_u64();
        from.is_some() && v["last_checkpoint"]["id"].as_u64() > from
    });
    assert_eq!(
        rejoined["state"], "running",
        "finished too soon: {rejoined}"
    );

    // SIGKILL of the leader: the follower stays up, its share ends and waits; the restarted
    // leader replays its log, starts the deployment again, and both finish it.
    leader.sigkill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(follower.call("GET", "/health/live", None, None).0, 200);
    let leader = start(root0, &reads, &hosts, 0, api);
    let done = leader.wait_for(&dep, "the end of input", |v| v["state"] == "finished");
    assert_eq!(done["error"], Value::Null);
    for (i, name) in OUTPUTS.iter().enumerate() {
        let got = std::fs::read(root1.join("outputs/d1").join(name)).unwrap();
        assert!(
            got == s.reference[i],
            "{name} after SIGKILL of the follower, then of the leader, differs from an \
             uninterrupted run"
        );
    }
    // The leader's audit trail: started, started again from a checkpoint (twice), finished.
    let events = leader.events();
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "deployment_started")
        .collect();
    assert!(started.len() >= 3, "{events:#?}");
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

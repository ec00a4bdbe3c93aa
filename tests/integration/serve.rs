//! `tickflow serve` end to end over a real socket: submit, deploy, read a projection, pause,
//! resume, SIGKILL and restart; illegal commands; the event log on disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

pub(crate) const OPERATOR_KEY: &str = "op-secret-1";
pub(crate) const VIEWER_KEY: &str = "viewer-secret-1";
pub(crate) const OUTPUTS: [&str; 3] = ["bars.jsonl", "dead_letters.jsonl", "late.jsonl"];

fn hash(key: &str) -> String {
    use std::io::Write;
    let mut child = tickflow()
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The test server's configuration: `top` holds extra top-level keys, `api` extra `[api]`
/// keys.
pub(crate) fn config_text(root: &Path, top: &str, api: &str) -> String {
    format!(
        "workers = 2\n{top}\n[paths]\nread_roots = [{:?}]\noutput_root = {:?}\n\
         [api]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n{api}\n\
         [[api.keys]]\nname = \"ops-alice\"\nrole = \"operator\"\nsha256 = \"{}\"\n\
         [[api.keys]]\nname = \"viewer-bob\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
        root.join("data").display().to_string(),
        root.join("outputs").display().to_string(),
        hash(OPERATOR_KEY),
        hash(VIEWER_KEY)
    )
}

/// A running `tickflow serve` and its address.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) log: PathBuf,
}

impl Server {
    /// Starts `tickflow serve` on a free port with the test keys, data in `root/engine`,
    /// reading inside `root/data` and writing file sinks under `root/outputs`.
    pub(crate) fn start(root: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(root, extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub(crate) fn start_with_env(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let config = root.join("serve.toml");
        if !config.exists() {
            std::fs::write(&config, config_text(root, "", "")).unwrap();
        }
        let log = unique(root.join("serve.log"));
        let child = tickflow()
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(root.join("engine"))
            .args(extra)
            .current_dir(root)
            .env("TICKFLOW_LOG", "info")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            base: String::new(),
            log,
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            if let Some(addr) = text
                .split("listening on http://")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                server.base = format!("http://{addr}");
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("serve exited with {status}: {text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let resp = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, Some(VIEWER_KEY), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Submits a graph version with the operator key; it must be accepted (201).
    pub(crate) fn submit(&self, toml: &str) {
        let (status, body) = self.call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(toml));
        assert_eq!(status, 201, "{body}");
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(OPERATOR_KEY), Some(&body.to_string()))
    }

    /// Polls `GET path` until `done` holds (at most 120 s).
    pub(crate) fn wait_for(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let v = self.get(path);
            if done(&v) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}: {v}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub(crate) fn events(&self) -> Vec<Value> {
        self.get("/api/v1/events?limit=10000")["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The events of type `kind`, oldest first.
    pub(crate) fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    pub(crate) fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique(path: PathBuf) -> PathBuf {
    let mut p = path.clone();
    let mut n = 0;
    while p.exists() {
        n += 1;
        p = path.with_extension(format!("{n}.log"));
    }
    p
}

/// Generated ticks, the example-shaped graph with a projection of the latest bar per
/// instrument, and the outputs of an uninterrupted `tickflow run` of it.
pub(crate) struct Setup {
    pub(crate) root: tempfile::TempDir,
    pub(crate) toml: String,
    pub(crate) reference: Vec<Vec<u8>>,
}

pub(crate) fn setup(ticks: u64) -> Setup {
    setup_at(ticks, 2000)
}

/// [`setup`] with `rate` ticks per second of event time.
pub(crate) fn setup_at(ticks: u64, rate: u64) -> Setup {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let rate = rate.to_string();
    gen(
        &data,
        ticks,
        200,
        5,
        &["--bad-ratio", "0.02", "--rate", &rate],
    );
    let out = root.path().join("out");
    let graph = write_graph(
        root.path(),
        &data,
        &out,
        Win {
            lateness: "30s",
            ..TUMBLING
        },
    );
    let mut toml = std::fs::read_to_string(&graph).unwrap();
    toml.push_str(
        "\n[sinks.latest_bars]\ntype = \"projection\"\ninput = \"bars\"\nkey = \"instrument_id\"\n\
         \n[checkpoint]\ninterval = \"5s\"\nmin_pause = \"0ms\"\n",
    );
    std::fs::write(&graph, &toml).unwrap();
    run_graph(&graph, 2);
    let reference = OUTPUTS
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    std::fs::remove_dir_all(&out).unwrap();
    // Over the API, file sinks are relative: they write under the server's output root, in
    // the deployment's own directory.
    let toml = toml.replace(&format!("{}/", out.display()), "");
    Setup {
        root,
        toml,
        reference,
    }
}

#[test]
fn serve_deploys_pauses_resumes_and_survives_sigkill_with_exact_outputs() {
    let s = setup(300_000);
    let root = s.root.path();
    let server = Server::start(root, &[]);
    assert_eq!(server.call("GET", "/health/live", None, None).0, 200);

    let (status, body) = server.call(
        "POST",
        "/api/v1/graphs?reason=first",
        Some(OPERATOR_KEY),
        Some(&s.toml),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["graph"]["version"], 1);
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 1, "reason": "go live"}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    let dep = format!("/api/v1/deployments/{id}");

    // Pause once the first checkpoint is committed: nothing is read while paused.
    server.wait_for(&dep, "a checkpoint", |v| !v["last_checkpoint"].is_null());
    let (status, body) = server.post(&format!("{dep}/pause"), &json!({"reason": "vendor outage"}));
    assert_eq!(status, 200, "{body}");
    let read = |v: &Value| v["nodes"][0]["records_out"]["out"].as_u64().unwrap();
    // A source sees the pause at its next activation: a batch under way still completes.
    std::thread::sleep(Duration::from_millis(200));
    let before = server.get(&dep);
    assert_eq!(before["state"], "paused");
    std::thread::sleep(Duration::from_millis(400));
    let after = server.get(&dep);
    assert_eq!(
        read(&before),
        read(&after),
        "a paused deployment kept reading"
    );
    assert!(
        read(&after) < 300_000,
        "the run finished before it could be paused"
    );

    // Resume; once a bar is readable through the projection, SIGKILL the server mid-run.
    let (status, body) = server.post(&format!("{dep}/resume"), &json!({"reason": "vendor back"}));
    assert_eq!(status, 200, "{body}");
    let keys = server.wait_for(
        &format!("{dep}/views/latest_bars"),
        "a projected bar",
        |v| v["count"].as_u64().unwrap_or(0) > 0,
    );
    let key = keys["keys"][0].as_str().unwrap().to_string();
    let view = server.get(&format!("{dep}/views/latest_bars?key={key}"));
    let running = server.get(&dep);
    server.sigkill();
    assert_eq!(view["record"]["instrument_id"], key.as_str(), "{view}");
    assert!(view["record"]["vwap"].is_string(), "{view}");
    assert_eq!(
        running["state"], "running",
        "finished before the kill: {running}"
    );

    // Restart: the deployment runs again, from its checkpoint, and ends with exact outputs.
    let server = Server::start(root, &[]);
    // Replay says "running" at once; the restart's own `deployment_started` event records
    // the checkpoint it resumed from.
    let restarted = server.wait_for(&dep, "the restarted deployment", |v| {
        !v["restored_from"].is_null() || v["state"] != "running"
    });
    let resumed_from = restarted["restored_from"].as_u64();
    assert!(
        resumed_from.is_some(),
        "did not resume from a checkpoint: {restarted}"
    );
    server.wait_for("/health/ready", "readiness", |v| v["status"] == "ready");
    let done = server.wait_for(&dep, "the end of input", |v| v["state"] == "finished");
    assert_eq!(done["error"], Value::Null);
    for (i, name) in OUTPUTS.iter().enumerate() {
        let got = std::fs::read(root.join("outputs/d1").join(name)).unwrap();
        assert!(
            got == s.reference[i],
            "{name} after pause, resume and SIGKILL differs from an uninterrupted run"
        );
    }
    // The projection holds each instrument's last bar (from the restored store + the rest).
    let bars = String::from_utf8(s.reference[0].clone()).unwrap();
    let mut last = std::collections::BTreeMap::new();
    for line in bars.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        last.insert(v["instrument_id"].as_str().unwrap().to_string(), v);
    }
    let view = server.get(&format!("{dep}/views/latest_bars"));
    assert_eq!(view["count"].as_u64().unwrap() as usize, last.len());
    for (k, want) in last.iter().take(20) {
        let got = server.get(&format!("{dep}/views/latest_bars?key={k}"));
        assert_eq!(&got["record"], want, "latest bar of {k}");
    }

    // The audit trail tells the story, with actors and reasons.
    let events = server.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "graph_submitted",
            "deployment_requested",
            "deployment_started",
            "deployment_paused",
            "deployment_resumed",
            "deployment_started",
            "deployment_finished"
        ],
        "{events:#?}"
    );
    assert_eq!(events[3]["actor"], "ops-alice");
    assert_eq!(events[3]["reason"], "vendor outage");
    assert_eq!(events[5]["actor"], "system");
    assert_eq!(events[5]["restored_from"].as_u64(), resumed_from);

    // The state as it was while paused, folded from the log.
    let paused_at = events[3]["time"].as_str().unwrap();
    let then = server.get(&format!(
        "/api/v1/state?at={}",
        paused_at.replace('+', "%2B")
    ));
    assert_eq!(
        then["deployments"][id.to_string()]["state"],
        "paused",
        "{then}"
    );

    // The metrics endpoint reports the deployment and the API.
    let (status, metrics) = server.call("GET", "/metrics", Some(VIEWER_KEY), None);
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    for needle in [
        "tickflow_records_in_total{deployment=\"1\"",
        "tickflow_dead_letters_total{",
        "tickflow_checkpoints_total{",
        "tickflow_api_requests_total{route=\"/api/v1/deployments/{id}\",method=\"GET\",status=\"200\"}",
        "tickflow_event_log_appends_total",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    // The CLI reads the same log.
    let o = run_cli(&["replay", &root.join("engine").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("7 event(s) verified"), "{out}");
    assert!(out.contains("deployment 1: test-bars v1 finished"), "{out}");
}

#[test]
fn illegal_commands_are_refused_and_append_nothing() {
    let s = setup(20_000);
    let server = Server::start(s.root.path(), &[]);
    // Every validation error of a bad graph, with its TOML key and line.
    let bad = s
        .toml
        .replace("size = \"1m\"", "size = \"-1m\"")
        .replace("type = \"enrich\"", "type = \"enrichh\"");
    let (status, body) = server.call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&bad));
    assert_eq!(status, 422, "{body}");
    let details = body["details"].as_array().unwrap();
    assert!(details.len() >= 2, "{body}");
    assert!(
        details
            .iter()
            .all(|d| d["line"].is_u64() && d["path"].is_string()),
        "{body}"
    );
    let (status, _) = server.call(
        "POST",
        "/api/v1/graphs",
        Some(OPERATOR_KEY),
        Some(&"#".repeat(70_000)),
    );
    assert_eq!(status, 413, "a body over max_body_bytes");

    assert_eq!(
        server
            .call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&s.toml))
            .0,
        201
    );
    // The same version again is accepted as is (no event); changed, it is refused.
    assert_eq!(
        server
            .call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&s.toml))
            .0,
        200
    );
    let changed = s.toml.replace("EUR = \"1.08\"", "EUR = \"1.09\"");
    assert_eq!(
        server
            .call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&changed))
            .0,
        409
    );
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 1}),
    );
    assert_eq!(status, 201, "{body}");
    let events_before = server.events();

    let refused = [
        ("/api/v1/deployments/1/resume", json!({"reason": "r"}), 409),
        (
            "/api/v1/deployments",
            json!({"graph": "test-bars", "version": 7}),
            422,
        ),
        (
            "/api/v1/deployments",
            json!({"graph": "nope", "version": 1}),
            422,
        ),
        (
            "/api/v1/deployments/1/rollback",
            json!({"reason": "r"}),
            409,
        ),
        ("/api/v1/deployments/9/pause", json!({"reason": "r"}), 404),
        ("/api/v1/deployments/1/pause", json!({"because": "r"}), 422),
        ("/api/v1/deployments/1/stop", json!({"reason": " "}), 422),
    ];
    for (path, body, want) in refused {
        let (status, answer) = server.post(path, &body);
        assert_eq!(status, want, "POST {path} {body}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    assert_eq!(
        server.events(),
        events_before,
        "a refused command appended events"
    );

    // Rollback to the previous version: v2 (same state shape, other fx) then back to v1.
    let v2 = s
        .toml
        .replace("version = 1", "version = 2")
        .replace("EUR = \"1.08\"", "EUR = \"1.10\"");
    assert_eq!(
        server
            .call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&v2))
            .0,
        201
    );
    server.wait_for("/api/v1/deployments/1", "deployment 1 to start", |v| {
        v["started"] == true
    });
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 2}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.get("/api/v1/deployments/1")["state"], "stopped");
    let d2 = server.get("/api/v1/deployments/2");
    assert_eq!(d2["continues"], 1, "v2 has v1's state shape: {d2}");
    server.wait_for("/api/v1/deployments/2", "deployment 2 to start", |v| {
        v["started"] == true
    });
    let (status, body) = server.post(
        "/api/v1/deployments/2/rollback",
        &json!({"reason": "bad fx"}),
    );
    assert_eq!(status, 200, "{body}");
    let d2 = server.get("/api/v1/deployments/2");
    assert_eq!(d2["state"], "rolled_back");
    let d3 = server.wait_for("/api/v1/deployments/3", "the rollback target", |v| {
        v["started"] == true
    });
    assert_eq!(
        (d3["version"].as_i64(), d3["rollback_of"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        d3["continues"], 2,
        "compatible: continues from v2's checkpoint: {d3}"
    );
    // A stopped deployment cannot be rolled back.
    assert_eq!(
        server
            .post(
                "/api/v1/deployments/2/rollback",
                &json!({"reason": "again"})
            )
            .0,
        409
    );
    // Viewers cannot change anything.
    let (status, _) = server.call(
        "POST",
        "/api/v1/deployments/3/stop",
        Some(VIEWER_KEY),
        Some("{\"reason\":\"x\"}"),
    );
    assert_eq!(status, 403);
    let (status, _) = server.call("GET", "/api/v1/deployments", Some("wrong"), None);
    assert_eq!(status, 401);
}

/// Flips one bit of `path` at `offset`.
fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_torn_event_log_tail_is_cut_and_a_damaged_record_stops_startup() {
    let s = setup(2_000);
    let root = s.root.path();
    let server = Server::start(root, &[]);
    assert_eq!(
        server
            .call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&s.toml))
            .0,
        201
    );
    let (status, _) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 1}),
    );
    assert_eq!(status, 201);
    server.wait_for("/api/v1/deployments/1", "the run to finish", |v| {
        v["state"] == "finished"
    });
    let n = server.events().len();
    drop(server);
    let engine = root.join("engine");
    let log = engine.join("events.log");
    let bytes = std::fs::read(&log).unwrap();
    // Where the last record starts: replay of the log without it shows one event less.
    let copy = root.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let count = |dir: &Path| -> Option<usize> {
        let o = run_cli(&["replay", &dir.display().to_string(), "--json"]);
        o.status.success().then(|| {
            let state: Value = serde_json::from_slice(&o.stdout).unwrap();
            state["last_seq"].as_u64().unwrap() as usize
        })
    };
    let mut last_start = None;
    for cut in (0..bytes.len()).rev() {
        std::fs::write(copy.join("events.log"), &bytes[..cut]).unwrap();
        let seen = count(&copy).expect("a truncated log is readable");
        if seen < n - 1 {
            break;
        }
        assert_eq!(
            seen,
            n - 1,
            "cut at {cut}: the complete prefix, nothing more"
        );
        last_start = Some(cut);
    }
    let last_start = last_start.unwrap();
    assert!(
        bytes.len() - last_start > 16,
        "the last record spans header and payload"
    );
    // serve cuts a torn tail, reports it, and keeps the complete prefix.
    std::fs::write(&log, &bytes[..bytes.len() - 3]).unwrap();
    let server = Server::start(root, &[]);
    assert_eq!(server.events().len(), n - 1);
    let text = std::fs::read_to_string(&server.log).unwrap();
    assert!(text.contains(&format!("at offset {last_start}")), "{text}");
    drop(server);
    // A flipped bit in an earlier record stops startup, naming the offset; --repair starts.
    flip(&log, 40);
    let o = tickflow()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&engine)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("at byte offset 0") && err.contains("--repair"),
        "{err}"
    );
    let server = Server::start(root, &["--repair"]);
    assert_eq!(
        server.events().len(),
        0,
        "repair keeps only what precedes the damage"
    );
    // The damaged original is kept beside the log, byte for byte.
    let kept: Vec<PathBuf> = std::fs::read_dir(&engine)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("events.log.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let mut damaged = bytes[..last_start].to_vec();
    damaged[40] ^= 0x10;
    assert_eq!(std::fs::read(&kept[0]).unwrap(), damaged);
    // Ids and directories are never reused: deployment 1's directory is still on disk, so
    // the first deployment after the repair is 2.
    assert_eq!(
        server
            .call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&s.toml))
            .0,
        201
    );
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 1, "reason": "after repair"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], 2, "{body}");
    let d = server.wait_for("/api/v1/deployments/2", "the run", |v| {
        v["state"] == "finished"
    });
    assert_eq!(d["state_dir"], "d2");
}

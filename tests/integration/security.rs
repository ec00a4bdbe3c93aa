//! The API as a trust boundary (issue 11), over a real socket against a real `tickflow
//! serve`: graphs reach only the configured roots, names and reasons cannot forge the audit
//! trail, failures surface as events, numbers are exact or refused. (The HTTP layer itself is
//! in `http.rs`.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::common::*;
use crate::serve::{config_text, Server, OPERATOR_KEY, VIEWER_KEY};

/// What must never show up in a response or a log line: the decoy's content.
const SECRET: &str = "decoy-secret-7f3a9c";

/// A graph reading `source` and `reference`, writing bars to `sink`.
pub(crate) fn graph(name: &str, source: &str, reference: &str, sink: &str) -> String {
    format!(
        r#"[graph]
name = "{name}"
version = 1

[sources.ticks]
type = "file"
path = "{source}"

[operators.normalize]
type = "normalize"
input = "ticks"

[operators.enrich]
type = "enrich"
input = "normalize"
reference = "{reference}"

[operators.bars]
type = "window"
input = "enrich"
kind = "tumbling"
size = "1m"

[sinks.bars]
type = "file"
input = "bars"
path = "{sink}"

[sinks.dead]
type = "file"
input = ["normalize.dead_letter", "enrich.dead_letter"]
path = "dead.jsonl"
"#
    )
}

pub(crate) struct Boundary {
    root: tempfile::TempDir,
    pub(crate) server: Server,
    decoys: Vec<(PathBuf, Vec<u8>, SystemTime)>,
}

impl Boundary {
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// Submits `toml`; returns status and body.
    pub(crate) fn submit(&self, toml: &str) -> (u16, Value) {
        self.server
            .call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(toml))
    }

    /// Submits graph `m` (the data's ticks to bars, checkpoints every 2 s) and deploys it as
    /// deployment 1 with `reason`.
    pub(crate) fn deploy_checkpointed(&self, reason: &str) {
        let toml = format!(
            "{}\n[checkpoint]\ninterval = \"2s\"\nmin_pause = \"0ms\"\n",
            graph("m", "ticks.jsonl", "instruments.csv", "bars.jsonl")
        );
        assert_eq!(self.submit(&toml).0, 201);
        let (status, body) = self.server.post(
            "/api/v1/deployments",
            &json!({"graph": "m", "version": 1, "reason": reason}),
        );
        assert_eq!(status, 201, "{body}");
    }

    /// The decoys are as they were, byte for byte and in modification time.
    pub(crate) fn decoys_untouched(&self) {
        for (path, bytes, mtime) in &self.decoys {
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
            assert_eq!(meta.modified().unwrap(), *mtime, "{}", path.display());
        }
    }
}

/// A server reading inside `root/data`, writing under `root/outputs`, with decoy files
/// outside both (and a symbolic link inside the read root that points at one).
pub(crate) fn boundary(top: &str, api: &str) -> Boundary {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(&data, 2_000, 20, 3, &["--bad-ratio", "0.05"]);
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.jsonl");
    std::fs::write(&secret, format!("{{\"raw\": \"{SECRET}\"}}\n{SECRET}\n")).unwrap();
    let csv = outside.join("instruments.csv");
    std::fs::write(&csv, format!("symbol,instrument_id\n{SECRET},x\n")).unwrap();
    std::os::unix::fs::symlink(&secret, data.join("escape.jsonl")).unwrap();
    std::fs::create_dir_all(data.join("a-directory")).unwrap();
    std::fs::write(
        root.path().join("serve.toml"),
        config_text(root.path(), top, api),
    )
    .unwrap();
    let server = Server::start(root.path(), &[]);
    let decoys = [secret, csv]
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, bytes, mtime)
        })
        .collect();
    Boundary {
        root,
        server,
        decoys,
    }
}

#[test]
fn every_path_a_graph_names_stays_inside_the_configured_roots() {
    let b = boundary("", "");
    let root = b.root().to_path_buf();
    let secret = root.join("outside/secret.jsonl");
    let engine = root.join("engine");
    let s = |p: &Path| p.display().to_string();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        // (what, graph, TOML key that must be named, rule text)
        (
            "absolute source outside",
            graph("g", &s(&secret), "instruments.csv", "bars.jsonl"),
            "sources.ticks.path",
            "outside the read roots",
        ),
        (
            "source with ..",
            graph(
                "g",
                "../outside/secret.jsonl",
                "instruments.csv",
                "bars.jsonl",
            ),
            "sources.ticks.path",
            "..",
        ),
        (
            "symbolic link escaping",
            graph("g", "escape.jsonl", "instruments.csv", "bars.jsonl"),
            "sources.ticks.path",
            "symbolic link",
        ),
        (
            "the event log as source",
            graph(
                "g",
                &s(&engine.join("events.log")),
                "instruments.csv",
                "bars.jsonl",
            ),
            "sources.ticks.path",
            "outside the read roots",
        ),
        (
            "a directory as source",
            graph("g", "a-directory", "instruments.csv", "bars.jsonl"),
            "sources.ticks.path",
            "not a regular file",
        ),
        (
            "reference outside",
            graph(
                "g",
                "ticks.jsonl",
                &s(&root.join("outside/instruments.csv")),
                "bars.jsonl",
            ),
            "operators.enrich.reference",
            "outside the read roots",
        ),
        (
            "absolute sink onto the event log",
            graph(
                "g",
                "ticks.jsonl",
                "instruments.csv",
                &s(&engine.join("events.log")),
            ),
            "sinks.bars.path",
            "relative",
        ),
        (
            "sink into the data directory",
            graph("g", "ticks.jsonl", "instruments.csv", &s(&engine)),
            "sinks.bars.path",
            "relative",
        ),
        (
            "sink with ..",
            graph(
                "g",
                "ticks.jsonl",
                "instruments.csv",
                "../../outside/x.jsonl",
            ),
            "sinks.bars.path",
            "..",
        ),
    ];
    let events = b.server.events().len();
    for (what, toml, key, rule) in &cases {
        let (status, body) = b.submit(toml);
        assert_eq!(status, 422, "{what}: {body}");
        let details = body["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["path"] == *key
                    && d["message"].as_str().is_some_and(|m| m.contains(rule))),
            "{what}: no error naming {key} with `{rule}`: {body}"
        );
        assert!(!body.to_string().contains(SECRET), "{what} leaked: {body}");
    }
    assert_eq!(
        b.server.events().len(),
        events,
        "a refused graph was recorded"
    );

    // Inside the roots it works, and two deployments with the same sink path each write
    // their own file under the output root.
    for name in ["first", "second"] {
        let (status, body) = b.submit(&graph(name, "ticks.jsonl", "instruments.csv", "bars.jsonl"));
        assert_eq!(status, 201, "{body}");
        let (status, body) = b.server.post(
            "/api/v1/deployments",
            &json!({"graph": name, "version": 1, "reason": "inside the roots"}),
        );
        assert_eq!(status, 201, "{body}");
    }
    for id in [1, 2] {
        b.server
            .wait_for(&format!("/api/v1/deployments/{id}"), "the end", |v| {
                v["state"] == "finished"
            });
        let bars = std::fs::read_to_string(root.join(format!("outputs/d{id}/bars.jsonl"))).unwrap();
        assert!(bars.lines().count() > 10, "deployment {id} wrote its bars");
    }
    assert_eq!(
        std::fs::read(root.join("outputs/d1/bars.jsonl")).unwrap(),
        std::fs::read(root.join("outputs/d2/bars.jsonl")).unwrap(),
        "the same graph over the same ticks, each in its own file"
    );
    b.decoys_untouched();
    let log = std::fs::read_to_string(&b.server.log).unwrap();
    assert!(
        !log.contains(SECRET),
        "the server log holds a decoy's bytes"
    );
}

#[test]
fn without_read_roots_file_inputs_are_refused_naming_the_setting() {
    let root = tempfile::tempdir().unwrap();
    gen(&root.path().join("data"), 100, 5, 1, &[]);
    // The default configuration grants no roots.
    std::fs::write(
        root.path().join("serve.toml"),
        config_text(root.path(), "", "")
            .replace("read_roots = [", "# read_roots = [")
            .replace("output_root =", "# output_root ="),
    )
    .unwrap();
    let server = Server::start(root.path(), &[]);
    let toml = graph("g", "ticks.jsonl", "instruments.csv", "bars.jsonl");
    let (status, body) = server.call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&toml));
    assert_eq!(status, 422, "{body}");
    let text = body.to_string();
    for needle in [
        "sources.ticks.path",
        "operators.enrich.reference",
        "sinks.bars.path",
        "paths.read_roots",
        "paths.output_root",
    ] {
        assert!(text.contains(needle), "{needle} not named: {body}");
    }
}

#[test]
fn run_refuses_a_sink_over_its_input_or_inside_its_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(&data, 100, 5, 1, &[]);
    let ticks = data.join("ticks.jsonl");
    let before = std::fs::read(&ticks).unwrap();
    let s = |p: &Path| p.display().to_string();
    let g = root.path().join("g.toml");
    let reference = s(&data.join("instruments.csv"));
    let dead = s(&root.path().join("dead.jsonl"));
    for (sink, args, want) in [
        (s(&ticks), vec![], "reads"),
        (s(&data.join("instruments.csv")), vec![], "reads"),
        (
            s(&root.path().join("state/bars.jsonl")),
            vec!["--data-dir".to_string(), s(&root.path().join("state"))],
            "data directory",
        ),
        (s(&data), vec![], "directory"),
    ] {
        let text = graph("g", &s(&ticks), &reference, &sink).replace("dead.jsonl", &dead);
        std::fs::write(&g, text).unwrap();
        let mut cmd = vec!["run".to_string(), s(&g)];
        cmd.extend(args);
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let o = run_cli(&args);
        assert!(!o.status.success(), "sink {sink} was accepted");
        assert!(stderr(&o).contains(want), "{sink}: {}", stderr(&o));
    }
    assert_eq!(
        std::fs::read(&ticks).unwrap(),
        before,
        "the input was touched"
    );
}

#[test]
fn control_characters_in_names_and_reasons_are_refused_and_never_printed() {
    let b = boundary("", "");
    let ok = graph("g", "ticks.jsonl", "instruments.csv", "bars.jsonl");
    for bad in ["g\u{0}x", "g\nx", "g\u{1b}[31m", "", &"x".repeat(65), "a b"] {
        let toml = ok.replace("name = \"g\"", &format!("name = {}", json!(bad)));
        let (status, body) = b.submit(&toml);
        assert_eq!(status, 422, "graph name {bad:?}: {body}");
        assert!(body.to_string().contains("graph.name"), "{body}");
        let node = ok.replace("[sinks.dead]", &format!("[sinks.{}]", json!(bad)));
        let (status, body) = b.submit(&node);
        assert_eq!(status, 422, "sink name {bad:?}: {body}");
    }
    let (status, body) = b.submit(&ok);
    assert_eq!(status, 201, "{body}");
    let (status, body) = b.server.post(
        "/api/v1/deployments",
        &json!({"graph": "g", "version": 1, "reason": "fake\n     9  2026-01-01 admin deployment_rolled_back"}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, _) = b.server.post(
        "/api/v1/deployments",
        &json!({"graph": "g", "version": 1, "reason": "colour \u{1b}[2J"}),
    );
    assert_eq!(status, 422);
    let (status, body) = b.server.post(
        "/api/v1/deployments",
        &json!({"graph": "g", "version": 1, "reason": "ünïcode is fine"}),
    );
    assert_eq!(status, 201, "{body}");
    b.server.wait_for("/api/v1/deployments/1", "the end", |v| {
        v["state"] == "finished"
    });
    let o = run_cli(&["events", &b.root().join("engine").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("ünïcode is fine"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in `tickflow events`: {text:?}"
    );
    // `| head` closes the pipe early: no panic.
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {:?} events {:?} --json | head -c 10 >/dev/null",
            env!("CARGO_BIN_EXE_tickflow"),
            b.root().join("engine")
        ))
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// A small tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "this test mounts a small tmpfs to fill a disk (CI runs as root): {}",
            stderr(&o)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn grow(&self, bytes: u64) {
        let o = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_sink_whose_disk_fills_fails_the_deployment_and_a_redeploy_ends_exactly() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(
        &data,
        200_000,
        300,
        9,
        &["--bad-ratio", "0.02", "--rate", "2000"],
    );
    // The uninterrupted run's outputs.
    let expected_dir = root.path().join("expected");
    std::fs::create_dir_all(&expected_dir).unwrap();
    let text = graph(
        "full",
        &data.join("ticks.jsonl").display().to_string(),
        &data.join("instruments.csv").display().to_string(),
        &expected_dir.join("bars.jsonl").display().to_string(),
    )
    .replace(
        "path = \"dead.jsonl\"",
        &format!(
            "path = {:?}",
            expected_dir.join("dead.jsonl").display().to_string()
        ),
    );
    let with_checkpoints =
        |t: &str| format!("{t}\n[checkpoint]\ninterval = \"5s\"\nmin_pause = \"0ms\"\n");
    std::fs::write(root.path().join("g.toml"), with_checkpoints(&text)).unwrap();
    let o = run_cli(&["run", &root.path().join("g.toml").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: Vec<Vec<u8>> = ["bars.jsonl", "dead.jsonl"]
        .iter()
        .map(|f| std::fs::read(expected_dir.join(f)).unwrap())
        .collect();
    let total: u64 = expected.iter().map(|e| e.len() as u64).sum();
    assert!(
        total > 1 << 20,
        "outputs large enough to fill a small disk: {total}"
    );

    // The output root is a disk that holds a third of the outputs.
    let outputs = root.path().join("outputs");
    let disk = Tmpfs::mount(&outputs, total / 3);
    std::fs::write(
        root.path().join("serve.toml"),
        config_text(root.path(), "", ""),
    )
    .unwrap();
    let server = Server::start(root.path(), &[]);
    let toml = with_checkpoints(&graph(
        "full",
        "ticks.jsonl",
        "instruments.csv",
        "bars.jsonl",
    ));
    let (status, body) = server.call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&toml));
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "full", "version": 1, "reason": "fill the disk"}),
    );
    assert_eq!(status, 201, "{body}");
    // From the moment the disk is (nearly) full, the failure shows within 5 s.
    let d1 = outputs.join("d1");
    let started = Instant::now();
    while dir_bytes(&d1) + 64 * 1024 < total / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the disk never filled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let full_at = Instant::now();
    let failed = server.wait_for("/api/v1/deployments/1", "the failure", |v| {
        v["state"] == "failed" || v["state"] == "finished"
    });
    assert!(
        full_at.elapsed() < Duration::from_secs(5),
        "the failure took {:?}",
        full_at.elapsed()
    );
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("sink"), "{error}");
    let events = server.events();
    assert!(
        events.iter().any(|e| e["type"] == "deployment_failed"),
        "{events:?}"
    );
    let (_, ready) = server.call("GET", "/health/ready", None, None);
    assert_eq!(
        ready["status"], "ready",
        "a failed deployment is not a starting one"
    );
    assert_eq!(ready["failed_deployments"], json!([1]), "{ready}");
    let (_, metrics) = server.call("GET", "/metrics", Some(VIEWER_KEY), None);
    let info = "tickflow_deployment_info{deployment=\"1\",graph=\"full\",state=\"failed\"} 1";
    assert!(metrics.as_str().unwrap().contains(info), "{metrics}");

    // The fault removed, the same version deployed again continues from the newest
    // checkpoint and ends with exactly the outputs of an uninterrupted run.
    disk.grow(total * 4);
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "full", "version": 1, "reason": "disk grown"}),
    );
    assert_eq!(status, 201, "{body}");
    let d2 = server.wait_for("/api/v1/deployments/2", "the redeploy", |v| {
        v["state"] == "finished" || v["state"] == "failed"
    });
    assert_eq!(d2["state"], "finished", "{d2}");
    assert_eq!(d2["continues"], 1, "{d2}");
    for (i, f) in ["bars.jsonl", "dead.jsonl"].iter().enumerate() {
        assert!(
            std::fs::read(d1.join(f)).unwrap() == expected[i],
            "{f} differs from an uninterrupted run"
        );
    }
    drop(server);
}

#[test]
fn overflowing_decimals_and_invalid_utf8_become_dead_letters_and_leave_other_bars_alone() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(&data, 20_000, 50, 4, &["--bad-ratio", "0"]);
    let run = |name: &str| -> (Vec<String>, Vec<serde_json::Value>) {
        let out = root.path().join(name);
        let dir = root.path().join(format!("{name}-graph"));
        std::fs::create_dir_all(&dir).unwrap();
        let g = write_graph(&dir, &data, &out, TUMBLING);
        run_graph(&g, 2);
        let dead = std::fs::read_to_string(out.join("dead_letters.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (sorted_lines(&out.join("bars.jsonl")), dead)
    };
    let (bars, dead) = run("clean");
    assert!(dead.is_empty());
    // The same ticks with hostile lines among them: unique venues and sequence numbers, so
    // no clean tick is taken for a duplicate.
    let ticks = data.join("ticks.jsonl");
    let clean = std::fs::read(&ticks).unwrap();
    let first_line: serde_json::Value =
        serde_json::from_slice(clean.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let symbol = first_line["symbol"].as_str().unwrap();
    let ts = &first_line["ts"];
    let bad: Vec<Vec<u8>> = vec![
        format!(r#"{{"venue":"ZZ1","symbol":"{symbol}","ts":{ts},"price":"100000000000000000000","size":"1","seq":1}}"#).into_bytes(),
        format!(r#"{{"venue":"ZZ2","symbol":"{symbol}","ts":{ts},"price":"1","size":"79228162514264337593543950335","seq":1}}"#).into_bytes(),
        format!(r#"{{"venue":"ZZ3","symbol":"{symbol}","ts":{ts},"price":"9999999999999","size":"1","seq":1,"currency":"GBP"}}"#).into_bytes(),
        [
            &b"{\"venue\":\"ZZ\xff\xfe4\",\"symbol\":\""[..],
            symbol.as_bytes(),
            format!(r#"","ts":{ts},"price":"1","size":"1","seq":1}}"#).as_bytes(),
        ]
        .concat(),
    ];
    let mut hostile = Vec::new();
    for (i, line) in clean.split_inclusive(|b| *b == b'\n').enumerate() {
        hostile.extend_from_slice(line);
        if i % 5_000 == 1 {
            if let Some(b) = bad.get(i / 5_000) {
                hostile.extend_from_slice(b);
                hostile.push(b'\n');
            }
        }
    }
    std::fs::write(&ticks, &hostile).unwrap();
    let (bars_after, dead_after) = run("hostile");
    assert!(bars_after == bars, "the other ticks' bars changed");
    assert_eq!(dead_after.len(), 4, "{dead_after:#?}");
    let reasons: Vec<&str> = dead_after
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "invalid_value").count(),
        3,
        "{dead_after:#?}"
    );
    let utf8 = dead_after
        .iter()
        .find(|d| d["reason"] == "malformed")
        .unwrap();
    assert!(
        utf8["message"].as_str().unwrap().contains("UTF-8"),
        "{utf8}"
    );
    // The original bytes come back from the dead letter.
    let b64 = utf8["raw_base64"].as_str().unwrap();
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b64.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(decoded.stdout, bad[3]);
}

#[test]
fn a_deployment_that_would_write_over_a_file_another_reads_is_refused_at_deploy() {
    // Deployments may read what others wrote: the output root is a read root too.
    let root = tempfile::tempdir().unwrap();
    gen(&root.path().join("data"), 100_000, 50, 5, &[]);
    let outputs = root.path().join("outputs");
    std::fs::create_dir_all(&outputs).unwrap();
    let config = config_text(root.path(), "", "").replacen(
        "read_roots = [",
        &format!("read_roots = [{:?}, ", outputs.display().to_string()),
        1,
    );
    std::fs::write(root.path().join("serve.toml"), config).unwrap();
    let server = Server::start(root.path(), &[]);
    let submit = |toml: &str| server.submit(toml);
    let deploy = |graph: &str| {
        server.post(
            "/api/v1/deployments",
            &json!({"graph": graph, "version": 1, "reason": "test"}),
        )
    };
    // `a` writes every enriched tick to all.jsonl, in outputs/d1/.
    submit(&format!(
        "{}\n[sinks.all]\ntype = \"file\"\ninput = \"enrich\"\npath = \"all.jsonl\"\n",
        graph("a", "ticks.jsonl", "instruments.csv", "bars.jsonl")
    ));
    assert_eq!(deploy("a").0, 201);
    server.wait_for("/api/v1/deployments/1", "a's end", |v| {
        v["state"] == "finished"
    });
    // `r` reads it, and is held paused (active).
    submit(&graph("r", "d1/all.jsonl", "instruments.csv", "bars.jsonl"));
    assert_eq!(deploy("r").0, 201);
    let (status, body) = server.post("/api/v1/deployments/2/pause", &json!({"reason": "hold it"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/api/v1/deployments/2")["state"], "paused");
    // `a` again would continue d1 and rewrite all.jsonl under r: refused before anything is
    // recorded, naming the key and the deployment in the way.
    let before = server.events().len();
    let (status, body) = deploy("a");
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("sinks.all.path") && message.contains("deployment 2"),
        "{message}"
    );
    assert_eq!(
        server.events().len(),
        before,
        "a refused deploy appended events"
    );
    // Once r is stopped, the same deploy goes through.
    let (status, _) = server.post("/api/v1/deployments/2/stop", &json!({"reason": "done"}));
    assert_eq!(status, 200);
    let (status, body) = deploy("a");
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_panic_on_a_worker_fails_the_run_and_the_deployment_never_hangs() {
    // `tickflow run`: exits non-zero naming the panic, instead of the other worker waiting
    // for ever.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(&data, 50_000, 50, 2, &["--rate", "2000"]);
    let dir = root.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let g = write_graph(&dir, &data, &root.path().join("out"), TUMBLING);
    let o = tickflow()
        .arg("run")
        .arg(&g)
        .args(["--workers", "2", "--data-dir"])
        .arg(root.path().join("state"))
        .env("TICKFLOW_FAULT", "after-state-write:3:panic")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("panicked") && err.contains("injected panic"),
        "{err}"
    );

    // `tickflow serve`: the deployment fails with an event; the server stays up.
    std::fs::write(
        root.path().join("serve.toml"),
        config_text(root.path(), "", ""),
    )
    .unwrap();
    let server = Server::start_with_env(
        root.path(),
        &[],
        &[("TICKFLOW_FAULT", "after-state-write:3:panic")],
    );
    let toml = format!(
        "{}\n[checkpoint]\ninterval = \"2s\"\nmin_pause = \"0ms\"\n",
        graph("p", "ticks.jsonl", "instruments.csv", "bars.jsonl")
    );
    let (status, body) = server.call("POST", "/api/v1/graphs", Some(OPERATOR_KEY), Some(&toml));
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "p", "version": 1, "reason": "panic"}),
    );
    assert_eq!(status, 201, "{body}");
    let d = server.wait_for("/api/v1/deployments/1", "the failure", |v| {
        v["state"] != "starting" && v["state"] != "running"
    });
    assert_eq!(d["state"], "failed", "{d}");
    assert!(
        d["error"].as_str().unwrap().contains("injected panic"),
        "{d}"
    );
    assert!(server
        .events()
        .iter()
        .any(|e| e["type"] == "deployment_failed"));
    assert_eq!(server.call("GET", "/health/live", None, None).0, 200);
}

//! The HTTP layer of `tickflow serve` as a hostile client meets it, over a real socket: one
//! JSON shape for every error, slow and silent connections cut off, the API answering while a
//! large graph starts and stops, metrics that `promtool` accepts, and schemathesis against
//! the live OpenAPI document.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::security::{boundary, graph};
use crate::serve::{OPERATOR_KEY, VIEWER_KEY};

#[test]
fn every_error_answers_in_one_json_shape() {
    let b = boundary("", "");
    let s = &b.server;
    let check = |status: u16, body: &Value, want: u16| {
        assert_eq!(status, want, "{body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{want} is not the JSON error shape: {body}"
        );
    };
    let (status, body) = s.call("GET", "/no/such/route", Some(VIEWER_KEY), None);
    check(status, &body, 404);
    let (status, body) = s.call("DELETE", "/api/v1/graphs", Some(OPERATOR_KEY), None);
    check(status, &body, 405);
    let (status, body) = s.call("GET", "/api/v1/deployments/abc", Some(VIEWER_KEY), None);
    check(status, &body, 400);
    let (status, body) = s.call(
        "POST",
        "/api/v1/graphs",
        Some(OPERATOR_KEY),
        Some(&"#".repeat(70_000)),
    );
    check(status, &body, 413);
    let (status, body) = s.call("GET", "/api/v1/events?limit=x", Some(VIEWER_KEY), None);
    check(status, &body, 400);
    let (status, body) = s.call("GET", "/api/v1/graphs", Some("wrong-key-zz9"), None);
    check(status, &body, 401);
    // The scheme's name in any case.
    let resp = ureq::get(&format!("{}/api/v1/graphs", s.base))
        .set("Authorization", &format!("bearer {VIEWER_KEY}"))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Refused logins are counted (and logged without the key).
    let (_, metrics) = s.call("GET", "/metrics", Some(VIEWER_KEY), None);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("tickflow_api_refused_logins_total{reason=\"unknown_key\"} 1"),
        "{text}"
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("login refused") && !log.contains("wrong-key-zz9"),
        "{log}"
    );
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn slow_clients_are_cut_off_and_their_descriptors_released() {
    let b = boundary(
        "",
        "header_read_timeout_secs = 1\nidle_timeout_secs = 2\nmax_connections = 64",
    );
    let addr = b.server.base.trim_start_matches("http://").to_string();
    let pid = b.server.child.id();
    assert_eq!(b.server.call("GET", "/health/live", None, None).0, 200);
    std::thread::sleep(Duration::from_millis(200));
    let baseline = open_fds(pid);
    // Half a request each: a request line and one header, never the blank line.
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /api/v1/graphs HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            c
        })
        .collect();
    // Plus silent ones that send nothing at all.
    slow.extend((0..50).map(|_| TcpStream::connect(&addr).unwrap()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        open_fds(pid) >= baseline + 50,
        "connections were not accepted"
    );
    // Beyond the limit, more are closed at once, and the server still answers.
    let started = Instant::now();
    for c in &mut slow {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        // Closed: end of file (possibly after a 408 answer) or a reset.
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "slow connections stayed open {:?}",
        started.elapsed()
    );
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(pid) > baseline + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds(pid) <= baseline + 2,
        "descriptors not released: {} vs {baseline}",
        open_fds(pid)
    );
    assert_eq!(b.server.call("GET", "/health/live", None, None).0, 200);
}

#[test]
fn stopping_a_large_starting_graph_keeps_the_api_responsive() {
    let b = boundary("max_graph_nodes = 400", "");
    // 300 chained windows: slow to build.
    let mut toml = graph("big", "ticks.jsonl", "instruments.csv", "bars.jsonl");
    let mut input = "enrich".to_string();
    for i in 0..300 {
        toml.push_str(&format!(
            "\n[operators.w{i}]\ntype = \"window\"\ninput = \"{input}\"\nkind = \"tumbling\"\nsize = \"1m\"\n"
        ));
        input = format!("w{i}.late");
    }
    toml.push_str(&format!(
        "\n[sinks.last]\ntype = \"file\"\ninput = \"{input}\"\npath = \"last.jsonl\"\n"
    ));
    let (status, body) = b.submit(&toml);
    assert_eq!(status, 201, "{body}");
    // Over the node limit: 422 naming it.
    let mut over = toml.replace("name = \"big\"", "name = \"bigger\"");
    for i in 0..120 {
        over.push_str(&format!(
            "\n[sinks.s{i}]\ntype = \"stdout\"\ninput = \"bars\"\n"
        ));
    }
    let (status, body) = b.submit(&over);
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("at most 400"), "{body}");

    let live = || {
        let started = Instant::now();
        let resp = ureq::get(&format!("{}/health/live", b.server.base))
            .timeout(Duration::from_secs(1))
            .call();
        assert!(
            resp.is_ok(),
            "/health/live did not answer within 1 s ({:?})",
            started.elapsed()
        );
    };
    let (status, body) = b.server.post(
        "/api/v1/deployments",
        &json!({"graph": "big", "version": 1, "reason": "large"}),
    );
    assert_eq!(status, 201, "{body}");
    live();
    let started = Instant::now();
    let resp = ureq::post(&format!("{}/api/v1/deployments/1/stop", b.server.base))
        .set("Authorization", &format!("Bearer {OPERATOR_KEY}"))
        .timeout(Duration::from_secs(1))
        .send_string("{\"reason\": \"too big\"}");
    assert!(resp.is_ok(), "stop did not answer within 1 s: {resp:?}");
    for _ in 0..20 {
        live();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(b.server.get("/api/v1/deployments/1")["state"], "stopped");
}

/// `promtool check metrics` over `text`: its complaints (empty when clean).
fn promtool(text: &str) -> String {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (deploy/install-deps.sh --test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    if !o.status.success() && out.trim().is_empty() {
        out = format!("promtool failed: {}", o.status);
    }
    out.trim().to_string()
}

#[test]
fn metrics_pass_promtool_and_ended_deployments_leave_them() {
    let b = boundary("metrics_grace_secs = 2", "");
    b.deploy_checkpointed("metrics");
    let metrics = || {
        let (status, body) = b.server.call("GET", "/metrics", Some(VIEWER_KEY), None);
        assert_eq!(status, 200);
        body.as_str().unwrap().to_string()
    };
    // Right after the end the series are there, the align time a histogram.
    b.server.wait_for("/api/v1/deployments/1", "the end", |v| {
        v["state"] == "finished"
    });
    let text = metrics();
    assert!(
        text.contains("tickflow_records_in_total{deployment=\"1\""),
        "{text}"
    );
    assert!(
        text.contains("# TYPE tickflow_checkpoint_align_seconds histogram")
            && text
                .contains("tickflow_checkpoint_align_seconds_bucket{le=\"+Inf\",deployment=\"1\""),
        "{text}"
    );
    let count: u64 = text
        .lines()
        .find(|l| l.starts_with("tickflow_checkpoint_align_seconds_count{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(count > 0, "no checkpoint observed: {text}");
    let complaints = promtool(&text);
    assert!(complaints.is_empty(), "promtool: {complaints}\n{text}");
    // After the grace period they are gone.
    std::thread::sleep(Duration::from_millis(2_500));
    let text = metrics();
    assert!(!text.contains("deployment=\"1\""), "{text}");
    assert!(promtool(&text).is_empty());
}

/// The Python of the test tools' venv (confluent-kafka, schemathesis).
fn tools_python() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kafka-broker.sh");
    let o = std::process::Command::new("bash")
        .arg(script)
        .arg("python")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_openapi_document() {
    let b = boundary("", "");
    // Something to find: a submitted graph and a deployment with id 1.
    let toml = graph("fuzzed", "ticks.jsonl", "instruments.csv", "bars.jsonl");
    assert_eq!(b.submit(&toml).0, 201);
    let (status, _) = b.server.post(
        "/api/v1/deployments",
        &json!({"graph": "fuzzed", "version": 1, "reason": "fuzz"}),
    );
    assert_eq!(status, 201);
    let (status, doc) = b
        .server
        .call("GET", "/api/v1/openapi.json", Some(VIEWER_KEY), None);
    assert_eq!(status, 200);
    let schema = b.root().join("openapi.json");
    std::fs::write(&schema, doc.to_string()).unwrap();
    // TICKFLOW_FUZZ_SECONDS runs it longer (CI: 45 s).
    let seconds = std::env::var("TICKFLOW_FUZZ_SECONDS").unwrap_or_else(|_| "45".into());
    let st = tools_python().with_file_name("schemathesis");
    let o = std::process::Command::new(&st)
        .arg("run")
        .arg(&schema)
        .args(["--url", &b.server.base])
        .args(["-H", &format!("Authorization: Bearer {OPERATOR_KEY}")])
        // Every check but the one that expects any schema-valid input to be accepted: a
        // TOML graph's validity, or whether a graph was submitted, is not in a JSON Schema.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "40", "--max-time", &seconds])
        .args(["--request-timeout", "5", "--seed", "11"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "schemathesis found problems:\n{out}\n{}",
        stderr(&o)
    );
    assert!(out.contains("passed"), "{out}");
    b.decoys_untouched();
    // The server is still up and answers.
    assert_eq!(b.server.call("GET", "/health/live", None, None).0, 200);
}

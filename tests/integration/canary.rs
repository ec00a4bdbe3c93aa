//! Canary rollouts: both versions in one dataflow, keys moved to the new version step by
//! step, each step checked; a bad version is rolled back before it owns any key, a good one
//! promoted; the production sinks hold every record once, as an uninterrupted run of one
//! version writes them, through a SIGKILL of the server in the middle of a step.

use serde_json::{json, Value};

use crate::common::tickflow;
use crate::serve::{setup_at, Server, Setup, OPERATOR_KEY, OUTPUTS, VIEWER_KEY};

/// The setup's graph replayed at `rate` ticks per second of wall clock.
fn paced(toml: &str, rate: u64) -> String {
    let at = "[sources.ticks]\ntype = \"file\"\n";
    assert!(toml.contains(at), "{toml}");
    toml.replacen(at, &format!("{at}replay_rate = {rate}\n"), 1)
}

/// Ticks (`ticks` over `ticks / 200` s of event time), a server, v1 replayed at `rate` ticks
/// a second and `v2` (made from the unpaced graph) submitted, and v1 deployed and read into its
/// input: what every rollout starts from. Returns the setup, the server and production's id.
fn rolling(ticks: u64, rate: u64, v2: impl Fn(&str) -> String) -> (Setup, Server, u64) {
    let s = setup_at(ticks, 200);
    let server = Server::start(s.root.path(), &[]);
    let next = v2(&s.toml.replace("version = 1", "version = 2"));
    assert!(next.contains("version = 2"));
    server.submit(&paced(&s.toml, rate));
    server.submit(&next);
    let prod = deploy(&server, json!({"graph": "test-bars", "version": 1}));
    wait_midway(&server, prod);
    (s, server, prod)
}

fn deploy(server: &Server, body: Value) -> u64 {
    let (status, reply) = server.post("/api/v1/deployments", &body);
    assert_eq!(status, 201, "{reply}");
    reply["id"].as_u64().unwrap()
}

/// Waits until production (`id`) has read into the input, so the canary starts mid-stream.
fn wait_midway(server: &Server, id: u64) {
    let from = chrono::DateTime::parse_from_rfc3339("2024-03-01T14:31:00Z")
        .unwrap()
        .timestamp_millis() as u64;
    server.wait_for(
        &format!("/api/v1/deployments/{id}"),
        "production mid-input",
        |v| v["watermark_ms"].as_u64().is_some_and(|w| w >= from),
    );
}

/// Every output of the production directory equals the uninterrupted run's, byte for byte.
fn assert_exact(root: &std::path::Path, dir: u64, reference: &[Vec<u8>], what: &str) {
    for (i, name) in OUTPUTS.iter().enumerate() {
        let got = std::fs::read(root.join(format!("outputs/d{dir}/{name}"))).unwrap();
        if got == reference[i] {
            continue;
        }
        let lines = |b: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(b)
                .lines()
                .map(String::from)
                .collect()
        };
        let (got, want) = (lines(&got), lines(&reference[i]));
        let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).take(3).collect();
        let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).take(3).collect();
        panic!(
            "{what}: production {name} differs from an uninterrupted run ({} lines, expected \
             {}); missing {missing:?}; extra {extra:?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn a_canary_that_dead_letters_a_currency_is_rolled_back_before_it_owns_a_key() {
    // Twelve minutes of event time, replayed over about 12 s; v2 lost the EUR rate: every EUR
    // tick is a dead letter.
    let (s, server, prod) = rolling(144_000, 12_000, |v2| v2.replace("EUR = \"1.08\", ", ""));
    let root = s.root.path();
    let canary = deploy(
        &server,
        json!({"graph": "test-bars", "version": 2, "strategy": "canary", "reason": "eur fix",
               "canary": {"steps": [25, 50, 100], "step_length": "1s",
                          "checks": {"max_dead_letter_rate": 0.035}}}),
    );
    let d = server.wait_for(
        &format!("/api/v1/deployments/{canary}"),
        "the rollback",
        |v| v["state"] != "running" && v["state"] != "starting",
    );
    assert_eq!(d["state"], "rolled_back", "{d}");
    assert_eq!(d["rollout"]["state"], "rolled_back", "{d}");
    assert_eq!(
        d["rollout"]["step"], 0,
        "rolled back at its first step: {d}"
    );
    assert_eq!(d["rollout"]["share_pct"], 0, "{d}");
    let rolled = server.events_of("rollout_rolled_back");
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    let failed: Vec<&Value> = rolled[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{rolled:?}");
    assert_eq!(failed[0]["metric"], "dead_letter_rate", "{rolled:?}");
    let value = failed[0]["value"].as_f64().unwrap();
    assert!(value > 0.035, "{rolled:?}");
    let reason = rolled[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("dead_letter_rate") && reason.contains(&format!("{value:.4}")),
        "{reason}"
    );
    assert_eq!(rolled[0]["actor"], "system");
    // The divergence is reported beside (how many bars were compared by then depends on
    // how far production got: not asserted).
    assert!(
        rolled[0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["metric"] == "divergence" && c["value"].is_f64()),
        "{rolled:?}"
    );
    assert!(server.events_of("rollout_step_started").is_empty());

    // The current version took back the canary's checkpoint and finishes the input: the
    // production outputs are an uninterrupted v1 run's.
    let to = rolled[0]["to"].as_u64().unwrap();
    let back = server.wait_for(&format!("/api/v1/deployments/{to}"), "the end", |v| {
        v["state"] == "finished" || v["state"] == "failed"
    });
    assert_eq!(back["state"], "finished", "{back}");
    assert_eq!(
        (back["version"].as_i64(), back["rollback_of"].as_u64()),
        (Some(1), Some(canary))
    );
    assert_exact(root, prod, &s.reference, "after a rolled-back canary");
}

#[test]
fn a_good_canary_moves_keys_step_by_step_through_a_sigkill_and_is_promoted() {
    // v2 changes nothing its outputs depend on (it reads at full speed: it catches up with
    // production from the beginning of the input).
    let (s, server, prod) = rolling(180_000, 10_000, |v2| {
        v2.replace("[graph]\n", "[graph]\ndescription = \"v2\"\n")
    });
    let root = s.root.path();
    // A bad request is refused with its key.
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 2, "strategy": "canary",
                "canary": {"steps": [50, 25]}}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("canary.steps"), "{body}");
    let canary = deploy(
        &server,
        json!({"graph": "test-bars", "version": 2, "strategy": "canary",
               "canary": {"steps": [20, 60, 100], "step_length": "1500ms"}}),
    );
    let dep = format!("/api/v1/deployments/{canary}");
    // A rollout can be held and let go.
    let (status, body) = server.post(&format!("{dep}/rollout/pause"), &json!({"reason": "look"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get(&dep)["rollout"]["state"], "paused");
    let (status, _) = server.post(&format!("{dep}/rollout/pause"), &json!({"reason": "again"}));
    assert_eq!(status, 409);
    let (status, body) = server.post(&format!("{dep}/rollout/resume"), &json!({"reason": "ok"}));
    assert_eq!(status, 200, "{body}");
    // SIGKILL in the middle of the first step; the restarted server goes on from it.
    server.wait_for(&dep, "the first step", |v| v["rollout"]["step"] == 1);
    let state = server.get(&dep);
    server.sigkill();
    assert_eq!(state["rollout"]["share_pct"], 20, "{state}");
    let server = Server::start(root, &[]);
    let d = server.wait_for(&dep, "the promotion", |v| {
        v["rollout"]["state"] != "running" && v["rollout"]["state"] != "paused"
    });
    assert_eq!(d["rollout"]["state"], "promoted", "{d}");
    assert_eq!(d["rollout"]["step"], 3, "{d}");
    let steps = server.events_of("rollout_step_started");
    let shares: Vec<u64> = steps
        .iter()
        .map(|e| e["share_pct"].as_u64().unwrap())
        .collect();
    assert_eq!(shares, [20, 60, 100], "{steps:?}");
    let from: Vec<u64> = steps
        .iter()
        .map(|e| e["from_ms"].as_u64().unwrap())
        .collect();
    assert!(from.windows(2).all(|w| w[0] <= w[1]), "{from:?}");
    for e in &steps {
        let checks = e["checks"].as_array().unwrap();
        assert!(checks.iter().all(|c| c["passed"] == true), "{e}");
        // The same outputs: every bar compared matched.
        let divergence = checks.iter().find(|c| c["metric"] == "divergence").unwrap();
        assert_eq!(divergence["value"], 0.0, "{e}");
    }
    // The control state as it was at the first step shows the rollout there.
    let at = steps[0]["time"].as_str().unwrap();
    let then = server.get(&format!("/api/v1/state?at={at}"));
    let rollout = &then["deployments"][canary.to_string()]["rollout"];
    assert_eq!(
        (rollout["step"].as_u64(), rollout["share_pct"].as_u64()),
        (Some(1), Some(20)),
        "{then}"
    );
    assert_eq!(rollout["state"], "running");
    let promoted = server.events_of("rollout_promoted");
    assert_eq!(promoted.len(), 1);
    let to = promoted[0]["to"].as_u64().unwrap();
    let done = server.wait_for(&format!("/api/v1/deployments/{to}"), "the end", |v| {
        v["state"] == "finished" || v["state"] == "failed"
    });
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["version"], 2);
    // Each key's output came from one version at a time: byte for byte the outputs of one
    // uninterrupted run (v2's are v1's), so every (instrument, window) bar once, none missing.
    assert_exact(root, prod, &s.reference, "after a promoted canary");
    // The terminal view of the rollout, with a viewer key.
    let o = tickflow()
        .args([
            "rollout",
            "status",
            &canary.to_string(),
            "--once",
            "--server",
            &server.base,
        ])
        .env("TICKFLOW_API_KEY", VIEWER_KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "canary rollout promoted",
        "step 3 of 3",
        "100 % of keys",
        "dead_letter_rate",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
    // The audit trail: who asked, every step, the promotion.
    let requested = server.events_of("deployment_requested");
    assert!(requested
        .iter()
        .any(|e| e["id"] == canary && e["canary"]["current"] == prod));
}

#[test]
fn a_blue_green_switches_every_key_at_once_after_its_smoke_period_and_is_promoted() {
    let (s, server, prod) = rolling(120_000, 8_000, str::to_string);
    let root = s.root.path();
    // From the command line, with an operator key.
    let cli = |args: &[&str]| {
        let o = tickflow()
            .arg("rollout")
            .args(args)
            .args(["--server", &server.base])
            .env("TICKFLOW_API_KEY", OPERATOR_KEY)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        (
            o.status.success(),
            out,
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (ok, _, err) = cli(&["start", "test-bars", "2", "--steps", "50,20"]);
    assert!(!ok && err.contains("canary.steps"), "{err}");
    let (ok, out, err) = cli(&[
        "start",
        "test-bars",
        "2",
        "--strategy",
        "blue_green",
        "--step-length",
        "1s",
        "--reason",
        "switch",
    ]);
    assert!(ok, "{out} {err}");
    let green = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_u64()
        .unwrap();
    // Held and let go from the command line, the reasons in the log.
    let id = green.to_string();
    let (ok, out, err) = cli(&["pause", &id, "--reason", "look first"]);
    assert!(ok, "{out} {err}");
    assert_eq!(
        server.get(&format!("/api/v1/deployments/{green}"))["rollout"]["state"],
        "paused"
    );
    let (ok, _, err) = cli(&["pause", &id, "--reason", "again"]);
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, _, err) = cli(&["resume", &id]);
    assert!(
        !ok && err.contains("--reason"),
        "a reason is required: {err}"
    );
    let (ok, out, err) = cli(&["resume", &id, "--reason", "looked"]);
    assert!(ok, "{out} {err}");
    let paused = server.events_of("rollout_paused");
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert_eq!(paused[0]["reason"], "look first");
    let d = server.wait_for(&format!("/api/v1/deployments/{green}"), "the switch", |v| {
        v["rollout"]["state"] != "running"
    });
    assert_eq!(d["rollout"]["state"], "promoted", "{d}");
    assert_eq!(d["rollout"]["strategy"], "blue_green", "{d}");
    let steps = server.events_of("rollout_step_started");
    let shares: Vec<u64> = steps
        .iter()
        .map(|e| e["share_pct"].as_u64().unwrap())
        .collect();
    assert_eq!(shares, [100], "one switch of every key: {steps:?}");
    let to = server.events_of("rollout_promoted")[0]["to"]
        .as_u64()
        .unwrap();
    server.wait_for(&format!("/api/v1/deployments/{to}"), "the end", |v| {
        v["state"] == "finished"
    });
    assert_exact(root, prod, &s.reference, "after a blue-green switch");
}

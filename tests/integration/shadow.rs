//! Shadow deployments: a new version beside the production one on the same input, its outputs
//! redirected, a keyed diff of the two as they run, and promotion by a replace deploy.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::common::tickflow;
use crate::serve::{setup_at, Server, OPERATOR_KEY};

fn bar_key(b: &Value) -> String {
    format!(
        "{} {} {}",
        b["instrument_id"].as_str().unwrap(),
        b["window_start"].as_str().unwrap(),
        b["window_end"].as_str().unwrap()
    )
}

fn bars(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn end_ms(b: &Value) -> u64 {
    chrono::DateTime::parse_from_rfc3339(b["window_end"].as_str().unwrap())
        .unwrap()
        .timestamp_millis() as u64
}

#[test]
fn a_shadow_diffs_against_production_like_a_backtest_and_is_promoted_without_gap_or_duplicate() {
    // Ten minutes of event time.
    let s = setup_at(300_000, 500);
    let root = s.root.path();
    let server = Server::start(root, &[]);
    let v2 = s
        .toml
        .replace("version = 1", "version = 2")
        .replace("EUR = \"1.08\"", "EUR = \"1.10\"");
    for toml in [&s.toml, &v2] {
        server.submit(toml);
    }
    let deploy = |version: i64, strategy: &str| {
        let (status, body) = server.post(
            "/api/v1/deployments",
            &json!({"graph": "test-bars", "version": version, "reason": "test",
                    "strategy": strategy}),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_u64().unwrap()
    };
    // A shadow needs a production deployment to run beside.
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 1, "strategy": "shadow"}),
    );
    assert_eq!(status, 409, "{body}");

    // Production v1, held mid-input: `tickflow gen` starts at 14:30:00 of 2024-03-01, and
    // at 500 ticks/s the input runs to 14:40; it is paused once its watermark is past 14:35.
    let prod = deploy(1, "replace");
    let dep = format!("/api/v1/deployments/{prod}");
    let halfway = chrono::DateTime::parse_from_rfc3339("2024-03-01T14:35:00Z")
        .unwrap()
        .timestamp_millis() as u64;
    server.wait_for(&dep, "half of the input", |v| {
        v["watermark_ms"]
            .as_u64()
            .is_some_and(|w| w >= halfway && w < u64::MAX)
    });
    let (status, body) = server.post(
        &format!("/api/v1/deployments/{prod}/pause"),
        &json!({"reason": "hold"}),
    );
    assert_eq!(status, 200, "{body}");

    // A shadow of the same version: zero differences, as far as both have gone.
    let same = deploy(1, "shadow");
    server.wait_for(
        &format!("/api/v1/deployments/{same}"),
        "the shadow's end",
        |v| v["state"] == "finished",
    );
    let d = server.get(&format!("/api/v1/deployments/{same}/diff"));
    assert_eq!(d["same"], true, "{d}");
    assert!(d["sinks"]["bars"]["matched"].as_u64().unwrap() > 0, "{d}");
    assert!(d["through_ms"].is_u64(), "{d}");
    assert!(
        root.join(format!("outputs/d{same}/shadow/bars.jsonl"))
            .exists(),
        "the shadow writes its own files"
    );
    assert_eq!(
        server.get(&format!("/api/v1/deployments/{prod}"))["state"],
        "paused"
    );

    // A shadow of v2 (EUR rate changed): the bars of EUR ticks differ, in price fields; the
    // same as a backtest of the two versions through the same event time.
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 2, "strategy": "shadow",
                "shadow": {"max_divergence": 0.001}}),
    );
    assert_eq!(status, 201, "{body}");
    let shadow = body["id"].as_u64().unwrap();
    server.wait_for(
        &format!("/api/v1/deployments/{shadow}"),
        "the shadow's end",
        |v| v["state"] == "finished",
    );
    let d = server.get(&format!("/api/v1/deployments/{shadow}/diff"));
    assert_eq!(d["same"], false, "{d}");
    let through = d["through_ms"].as_u64().unwrap();
    let fields: BTreeSet<&str> = d["sinks"]["bars"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        fields.is_subset(&["close", "high", "low", "open", "vwap"].into()),
        "{d}"
    );
    // Its alert: one event naming the sink, its divergence and the threshold; the counts in
    // /metrics.
    let started = std::time::Instant::now();
    let crossed = loop {
        let found: Vec<Value> = server
            .events()
            .into_iter()
            .filter(|e| e["type"] == "shadow_threshold_crossed")
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no alert"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(crossed.len(), 1, "{crossed:?}");
    assert_eq!(crossed[0]["id"], shadow);
    assert_eq!(crossed[0]["threshold"], 0.001);
    assert!(
        crossed[0]["divergence"].as_f64().unwrap() > 0.001,
        "{crossed:?}"
    );
    assert!(
        crossed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("divergence"),
        "{crossed:?}"
    );
    let (_, metrics) = server.call("GET", "/metrics", Some(OPERATOR_KEY), None);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains(&format!(
            "tickflow_shadow_keys{{deployment=\"{shadow}\",sink=\"bars\",outcome=\"differing\"}}"
        )),
        "{metrics}"
    );
    let (old, new) = (root.join("v1.toml"), root.join("v2.toml"));
    std::fs::write(&old, &s.toml).unwrap();
    std::fs::write(&new, &v2).unwrap();
    let out = root.join("backtest");
    let o = tickflow()
        .arg("diff")
        .arg(&old)
        .arg(&new)
        .arg("--input")
        .arg(root.join("data/ticks.jsonl"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    // 1-minute bars, 30 s lateness: final once the watermark is 90 s past their end.
    let finals = |dir: &str| -> BTreeMap<String, Value> {
        bars(&out.join(dir).join("bars.jsonl"))
            .into_iter()
            .filter(|b| end_ms(b) + 90_000 <= through)
            .map(|b| (bar_key(&b), b))
            .collect()
    };
    let (a, b) = (finals("old"), finals("new"));
    let differing = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count() as u64;
    assert!(differing > 0);
    assert_eq!(
        d["sinks"]["bars"]["differing"].as_u64(),
        Some(differing),
        "{d}"
    );
    assert_eq!(
        d["sinks"]["bars"]["matched"].as_u64(),
        Some(a.len() as u64 - differing)
    );

    // Promoted by deploying v2 over production: it continues production's checkpoint, so the
    // production bars hold every (instrument, window) of the input once, none missing.
    let promoted = deploy(2, "replace");
    let done = server.wait_for(&format!("/api/v1/deployments/{promoted}"), "the end", |v| {
        v["state"] == "finished"
    });
    assert_eq!(done["continues"].as_u64(), Some(prod), "{done}");
    let production = bars(&root.join(format!("outputs/d{prod}/bars.jsonl")));
    let mut seen = BTreeSet::new();
    for b in &production {
        assert!(
            seen.insert(format!("{} {}", bar_key(b), b["revision"])),
            "written twice: {b}"
        );
    }
    let keys = |list: &[Value]| list.iter().map(bar_key).collect::<BTreeSet<_>>();
    let reference: Vec<Value> = String::from_utf8(s.reference[0].clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        keys(&production),
        keys(&reference),
        "every bar once, none missing"
    );
}

//! `tickflow diff`: two versions of a graph backtested on the same recorded input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::common::{gen, tickflow};

/// The example graph on `data`, with `fx` as normalize's rates.
fn graph(root: &Path, data: &Path, name: &str, fx: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/market-bars.toml"),
    )
    .unwrap()
    .replace("examples/data", data.to_str().unwrap())
    .replace("fx = { EUR = \"1.08\", GBP = \"1.27\" }", fx);
    assert!(example.contains(fx));
    let path = root.join(name);
    std::fs::write(&path, example).unwrap();
    path
}

fn diff(old: &Path, new: &Path, input: &Path, out: &Path) -> (Option<i32>, Value) {
    let o = tickflow()
        .arg("diff")
        .arg(old)
        .arg(new)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--json", "--samples", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code(), report)
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The (instrument, window) of every bar an EUR tick went into, from the raw input and what
/// the run left out of the bars (dead letters by line, late ticks and later duplicates by
/// `(venue, seq)`), computed here from the contract, not by the engine.
fn bars_with_eur(data: &Path, out: &Path) -> BTreeSet<String> {
    let ids: BTreeMap<String, String> = std::fs::read_to_string(data.join("instruments.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    let dead: BTreeSet<u64> = read_lines(&out.join("dead_letters.jsonl"))
        .iter()
        .filter_map(|d| d["line"].as_u64())
        .collect();
    let tick_key = |t: &Value| format!("{} {}", t["venue"], t["seq"]);
    let late: BTreeSet<String> = read_lines(&out.join("late.jsonl"))
        .iter()
        .map(tick_key)
        .collect();
    let mut seen = BTreeSet::new();
    let mut bars = BTreeSet::new();
    let text = std::fs::read_to_string(data.join("ticks.jsonl")).unwrap();
    for (i, line) in text.lines().enumerate() {
        if dead.contains(&(i as u64 + 1)) {
            continue;
        }
        let t: Value = serde_json::from_str(line).unwrap();
        if !seen.insert(tick_key(&t)) || late.contains(&tick_key(&t)) {
            continue;
        }
        let currency = t["currency"].as_str().map(|c| c.trim().to_uppercase());
        if currency.as_deref() != Some("EUR") {
            continue;
        }
        let symbol = t["symbol"].as_str().unwrap().trim().to_uppercase();
        // RFC 3339 text or epoch milliseconds.
        let secs = match &t["ts"] {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp(),
            n => n.as_i64().unwrap().div_euclid(1000),
        };
        let start = secs - secs.rem_euclid(60);
        let start = chrono::DateTime::from_timestamp(start, 0).unwrap();
        bars.insert(format!(
            "{} {} {}",
            ids[&symbol],
            start.format("%Y-%m-%dT%H:%M:%SZ"),
            (start + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    bars
}

#[test]
fn a_backtest_of_an_unchanged_graph_is_empty_and_an_fx_change_differs_in_exactly_its_bars() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(&data, 60_000, 150, 21, &["--bad-ratio", "0.02"]);
    let input = data.join("ticks.jsonl");
    let fx = "fx = { EUR = \"1.08\", GBP = \"1.27\" }";
    let old = graph(root.path(), &data, "old.toml", fx);

    // The same graph twice: no difference, exit 0.
    let (code, same) = diff(&old, &old, &input, &root.path().join("same"));
    assert_eq!(code, Some(0), "{same}");
    assert_eq!(same["same"], true);
    assert!(
        same["sinks"]["bars"]["matched"].as_u64().unwrap() > 100,
        "{same}"
    );
    assert_eq!(same["input_records"], 60_000);

    // A new EUR rate: only bars an EUR tick went into differ, every one of them, and only
    // in their price fields.
    let new = graph(
        root.path(),
        &data,
        "new.toml",
        "fx = { EUR = \"1.10\", GBP = \"1.27\" }",
    );
    let out = root.path().join("fx");
    let (code, report) = diff(&old, &new, &input, &out);
    assert_eq!(code, Some(1), "{report}");
    let bars = &report["sinks"]["bars"];
    assert_eq!(
        (bars["only_old"].as_u64(), bars["only_new"].as_u64()),
        (Some(0), Some(0))
    );
    let fields: BTreeSet<&str> = bars["fields"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        fields.is_subset(&["close", "high", "low", "open", "vwap"].into())
            && fields.contains("vwap"),
        "{fields:?}"
    );
    // Dead letters are the same; late ticks differ only in the price of EUR ones.
    assert_eq!(report["sinks"]["dead_letters"]["differing"], 0, "{report}");
    let late = &report["sinks"]["late"];
    assert!(
        late["fields"]
            .as_object()
            .unwrap()
            .keys()
            .all(|f| f == "price"),
        "{report}"
    );
    let eur = bars_with_eur(&data, &out.join("old"));
    assert_eq!(
        bars["differing"].as_u64(),
        Some(eur.len() as u64),
        "{report}"
    );
    // Every differing bar is one of them (the samples name them; the whole set by counting
    // the keys whose records differ between the two outputs).
    let keyed = |dir: &str| -> BTreeMap<String, Value> {
        read_lines(&out.join(dir).join("bars.jsonl"))
            .into_iter()
            .map(|b| {
                let key = format!(
                    "{} {} {}",
                    b["instrument_id"].as_str().unwrap(),
                    b["window_start"].as_str().unwrap(),
                    b["window_end"].as_str().unwrap()
                );
                (key, b)
            })
            .collect()
    };
    let (a, b) = (keyed("old"), keyed("new"));
    let differing: BTreeSet<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(differing, eur);
    for sample in bars["samples"].as_array().unwrap() {
        assert!(eur.contains(sample["key"].as_str().unwrap()), "{sample}");
    }

    // A graph with two sources cannot be backtested on one recording: a clear error.
    let two = root.path().join("two.toml");
    let text = std::fs::read_to_string(&old).unwrap();
    std::fs::write(
        &two,
        format!(
            "{text}\n[sources.more]\ntype = \"file\"\npath = {:?}\n",
            input.display().to_string()
        ),
    )
    .unwrap();
    let o = tickflow()
        .arg("diff")
        .arg(&old)
        .arg(&two)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("replaces the graph's one source") && err.contains("has 2"),
        "{err}"
    );
}

#[test]
fn a_backtest_over_the_api_gives_the_cli_s_diff_and_stays_inside_the_read_roots() {
    use crate::serve::{setup, Server, OPERATOR_KEY, VIEWER_KEY};
    let s = setup(40_000);
    let root = s.root.path();
    let server = Server::start(root, &[]);
    let v2 = s
        .toml
        .replace("version = 1", "version = 2")
        .replace("EUR = \"1.08\"", "EUR = \"1.10\"");
    for toml in [&s.toml, &v2] {
        server.submit(toml);
    }
    let ask = |key: &str, body: Value| {
        server.call(
            "POST",
            "/api/v1/backtests",
            Some(key),
            Some(&body.to_string()),
        )
    };
    let request = |old: i64, new: i64, input: &str| {
        serde_json::json!({"graph": "test-bars", "old_version": old, "new_version": new,
                           "input": input, "samples": 3})
    };
    let (status, same) = ask(OPERATOR_KEY, request(1, 1, "ticks.jsonl"));
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["same"], true, "{same}");
    let (status, api) = ask(OPERATOR_KEY, request(1, 2, "ticks.jsonl"));
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["same"], false);
    assert!(
        api["sinks"]["bars"]["differing"].as_u64().unwrap() > 0,
        "{api}"
    );

    // The same two versions through the CLI: the same diff.
    let (old, new) = (root.join("v1.toml"), root.join("v2.toml"));
    std::fs::write(&old, &s.toml).unwrap();
    std::fs::write(&new, &v2).unwrap();
    let (code, cli) = diff(
        &old,
        &new,
        &root.join("data/ticks.jsonl"),
        &root.join("cli"),
    );
    assert_eq!(code, Some(1));
    assert_eq!(cli["sinks"], api["sinks"]);
    assert_eq!(cli["input_records"], api["input_records"]);

    // A key's role and the server's read roots bound it.
    let (status, body) = ask(VIEWER_KEY, request(1, 2, "ticks.jsonl"));
    assert_eq!(status, 403, "{body}");
    let (status, body) = ask(OPERATOR_KEY, request(1, 2, "/etc/passwd"));
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string().contains("outside the read roots"),
        "{body}"
    );
    let (status, body) = ask(OPERATOR_KEY, request(1, 9, "ticks.jsonl"));
    assert_eq!(status, 404, "{body}");
    // Nothing was appended, and no scratch output is left behind.
    let kinds: Vec<String> = server
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["graph_submitted", "graph_submitted"]);
    let scratch: Vec<_> = std::fs::read_dir(root.join("engine/backtests"))
        .unwrap()
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

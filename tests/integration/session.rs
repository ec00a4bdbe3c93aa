//! Session windows: final bars equal a naive recomputation over every counted tick, for any
//! worker count, with allowed-late ticks that extend and merge emitted sessions; kill -9 and
//! rescaling recover exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::DateTime;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

use crate::common::*;

const GAP_MS: i64 = 10_000;

/// Sparse ticks (200 instruments, 30 per second: one per instrument every ~7 s, so sessions
/// split) with 3% very late ticks (30-120 s behind: those within gap + allowed lateness extend
/// and merge sessions already emitted) and 2% bad lines.
fn data(dir: &Path, seed: u64) -> PathBuf {
    let data = dir.join("data");
    gen(
        &data,
        30_000,
        200,
        seed,
        &[
            "--rate",
            "30",
            "--late-ratio",
            "0.03",
            "--bad-ratio",
            "0.02",
        ],
    );
    data
}

fn graph(dir: &Path, data: &Path, out: &Path, checkpoint: &str) -> PathBuf {
    let text = format!(
        r#"[graph]
name = "sessions"
version = 1

[graph.defaults]
max_out_of_orderness = "1s"

[sources.ticks]
type = "file"
path = "{data}/ticks.jsonl"

{enrich}
[operators.sessions]
type = "window"
input = "enrich"
kind = "session"
gap = "{GAP_MS}ms"
allowed_lateness = "60s"

[sinks.bars]
type = "file"
input = "sessions"
path = "{out}/bars.jsonl"

[sinks.ticks]
type = "file"
input = "enrich"
path = "{out}/enriched.jsonl"

[sinks.late]
type = "file"
input = "sessions.late"
path = "{out}/late.jsonl"

[sinks.dead_letters]
type = "file"
input = ["normalize.dead_letter", "enrich.dead_letter"]
path = "{out}/dead_letters.jsonl"
{checkpoint}"#,
        data = data.display(),
        enrich = enrich_nodes(data),
        out = out.display(),
    );
    let path = dir.join("sessions.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ms(v: &Value) -> i64 {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

/// The sessions of every counted tick (enriched and not late), computed naively: per
/// instrument, ticks sorted by time, a new session wherever two are `GAP_MS` or more apart.
fn expected(out: &Path) -> BTreeMap<(String, i64), Value> {
    let late: BTreeSet<String> = std::fs::read_to_string(out.join("late.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut by_instrument: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(out.join("enriched.jsonl"))
        .unwrap()
        .lines()
    {
        if late.contains(line) {
            continue;
        }
        let t: Value = serde_json::from_str(line).unwrap();
        let id = t["instrument_id"].as_str().unwrap().to_string();
        by_instrument.entry(id).or_default().push(t);
    }
    let order = |t: &Value| {
        (
            DateTime::parse_from_rfc3339(t["ts"].as_str().unwrap())
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap(),
            t["venue"].as_str().unwrap().to_string(),
            t["seq"].as_u64().unwrap(),
        )
    };
    let mut bars = BTreeMap::new();
    for (id, mut ticks) in by_instrument {
        ticks.sort_by_key(order);
        let mut sessions: Vec<Vec<Value>> = Vec::new();
        for t in ticks {
            let split = sessions
                .last()
                .and_then(|s| s.last())
                .is_none_or(|prev| ms(&t["ts"]) - ms(&prev["ts"]) >= GAP_MS);
            if split {
                sessions.push(Vec::new());
            }
            sessions.last_mut().unwrap().push(t);
        }
        for s in sessions {
            let start = ms(&s[0]["ts"]);
            let end = ms(&s[s.len() - 1]["ts"]) + GAP_MS;
            let prices: Vec<Decimal> = s.iter().map(|t| dec(&t["price"])).collect();
            let volume: Decimal = s.iter().map(|t| dec(&t["size"])).sum();
            let notional: Decimal = s.iter().map(|t| dec(&t["price"]) * dec(&t["size"])).sum();
            let vwap = (!volume.is_zero()).then(|| {
                (notional / volume)
                    .round_dp_with_strategy(8, RoundingStrategy::MidpointNearestEven)
                    .normalize()
                    .to_string()
            });
            bars.insert(
                (id.clone(), start),
                serde_json::json!({
                    "end": end,
                    "open": prices[0].normalize().to_string(),
                    "close": prices[prices.len() - 1].normalize().to_string(),
                    "high": prices.iter().max().unwrap().normalize().to_string(),
                    "low": prices.iter().min().unwrap().normalize().to_string(),
                    "volume": volume.normalize().to_string(),
                    "vwap": vwap,
                    "trades": s.len(),
                }),
            );
        }
    }
    bars
}

/// The engine's final bars: per (instrument, window_start) the highest revision, unless that
/// is a retraction. Also counts revisions and retractions seen.
fn final_bars(out: &Path) -> (BTreeMap<(String, i64), Value>, usize, usize) {
    let mut latest: BTreeMap<(String, i64), Value> = BTreeMap::new();
    let (mut revised, mut retracted) = (0, 0);
    for b in lines(&out.join("bars.jsonl")) {
        let key = (
            b["instrument_id"].as_str().unwrap().to_string(),
            ms(&b["window_start"]),
        );
        revised += usize::from(b["revision"].as_u64().unwrap() > 0);
        retracted += usize::from(b["retracted"] == Value::Bool(true));
        let newer = latest
            .get(&key)
            .is_none_or(|old| old["revision"].as_u64() < b["revision"].as_u64());
        if newer {
            latest.insert(key, b);
        }
    }
    let bars = latest
        .into_iter()
        .filter(|(_, b)| b["retracted"] != Value::Bool(true))
        .map(|(k, b)| {
            let v = serde_json::json!({
                "end": ms(&b["window_end"]),
                "open": b["open"], "close": b["close"], "high": b["high"], "low": b["low"],
                "volume": b["volume"], "vwap": b["vwap"], "trades": b["trades"],
            });
            (k, v)
        })
        .collect();
    (bars, revised, retracted)
}

#[test]
fn session_bars_equal_a_naive_recomputation_on_1_2_and_3_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path(), 5);
    let mut outputs: Vec<Vec<Vec<u8>>> = Vec::new();
    for workers in [1, 2, 3] {
        let out = dir.path().join(format!("out-{workers}"));
        let g = graph(dir.path(), &data, &out, "");
        let summary = run_graph(&g, workers);
        assert!(summary["late"].as_u64().unwrap() > 0, "some ticks are late");
        let (got, revised, retracted) = final_bars(&out);
        let want = expected(&out);
        eprintln!(
            "{workers} worker(s): {} sessions, {revised} revisions, {retracted} retractions, {} late",
            want.len(),
            summary["late"]
        );
        assert!(want.len() > 1_000, "many sessions: {}", want.len());
        assert!(
            revised > 20,
            "allowed-late ticks revise sessions: {revised}"
        );
        assert!(
            retracted > 0,
            "allowed-late ticks merge sessions: {retracted}"
        );
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(k))
            .take(3)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(k))
            .take(3)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, extra {extra:?}"
        );
        for (k, w) in &want {
            assert_eq!(&got[k], w, "session {k:?} on {workers} worker(s)");
        }
        outputs.push(
            ["bars.jsonl", "late.jsonl", "dead_letters.jsonl"]
                .iter()
                .map(|f| std::fs::read(out.join(f)).unwrap())
                .collect(),
        );
    }
    assert!(
        outputs[0] == outputs[1] && outputs[1] == outputs[2],
        "same bytes on 1, 2, 3 workers"
    );
}

#[test]
fn session_windows_recover_exactly_from_kill_9_and_rescale() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path(), 8);
    let files = ["bars.jsonl", "late.jsonl", "dead_letters.jsonl"];
    let read = |out: &Path| -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(out.join(f)).unwrap())
            .collect()
    };
    let ckpt = "\n[checkpoint]\ninterval = \"20s\"\nmin_pause = \"0ms\"\n";
    let clean_out = dir.path().join("clean");
    run_graph(&graph(dir.path(), &data, &clean_out, ckpt), 2);
    let reference = read(&clean_out);

    let out = dir.path().join("out");
    let g = graph(dir.path(), &data, &out, ckpt);
    let data_dir = dir.path().join("dd");
    let run = |workers: usize| {
        let mut c = tickflow();
        c.arg("run")
            .arg(&g)
            .args(["--workers", &workers.to_string(), "--data-dir"])
            .arg(&data_dir);
        c
    };
    // Three kills, each a little after the attempt committed a checkpoint of its own, on
    // 1, 2 and 3 workers in turn (each restore rescales), then a run to the end on 2.
    let mut kills = 0;
    for attempt in 0..30 {
        if kills == 3 {
            break;
        }
        let before = newest_marker(&data_dir);
        let mut child = run(1 + attempt % 3).spawn().unwrap();
        let started = Instant::now();
        let mut finished = false;
        while newest_marker(&data_dir) == before {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint in 2 min"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if finished {
            std::fs::remove_dir_all(&data_dir).unwrap();
            continue;
        }
        std::thread::sleep(Duration::from_millis(20 * (attempt as u64 % 5)));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert_eq!(kills, 3, "the run was killed three times");
    let o = run(2).output().unwrap();
    assert!(o.status.success(), "final run: {}", stderr(&o));
    assert!(
        read(&out) == reference,
        "outputs equal the clean run byte for byte"
    );
}

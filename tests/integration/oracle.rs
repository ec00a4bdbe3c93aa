//! The oracle: a naive, sequential re-implementation of the contract inside the test, run on
//! `tickflow gen` output with bad lines, must equal the engine's bars, dead letters, late ticks
//! and duplicate count. It shares no code with the engine: fields are interpreted from their raw
//! JSON text here, and every bar is recomputed from the full list of its ticks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::common::*;

#[derive(Clone)]
struct OTick {
    venue: String,
    symbol: String,
    ts_ns: i64,
    price: Decimal,
    size: Decimal,
    seq: u64,
    currency: Option<String>,
}

fn ts_of(raw: &RawValue) -> Option<i64> {
    let text = raw.get();
    let ns = if text.starts_with('"') {
        let s: String = serde_json::from_str(text).ok()?;
        chrono::DateTime::parse_from_rfc3339(&s)
            .ok()?
            .timestamp_nanos_opt()?
    } else {
        text.parse::<i64>().ok()?.checked_mul(1_000_000)?
    };
    (ns >= 0).then_some(ns)
}

fn decimal_of(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get();
    let body = if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok()?
    } else {
        text.to_string()
    };
    if body.contains(['e', 'E']) {
        Decimal::from_scientific(&body).ok()
    } else if body
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
    {
        Decimal::from_str_exact(&body).ok()
    } else {
        None
    }
}

fn string_of(raw: &RawValue) -> Option<String> {
    raw.get()
        .starts_with('"')
        .then(|| serde_json::from_str::<String>(raw.get()).ok())
        .flatten()
}

type Fields = HashMap<String, Box<RawValue>>;

fn fields(text: &str) -> Option<Fields> {
    serde_json::from_str::<Fields>(text).ok()
}

fn parse(text: &str) -> Result<OTick, &'static str> {
    let f = fields(text).ok_or("malformed")?;
    let get = |k: &str| f.get(k).filter(|v| v.get() != "null");
    for k in ["venue", "symbol", "ts", "price", "size", "seq"] {
        if get(k).is_none() {
            return Err("missing_field");
        }
    }
    let bad = "invalid_value";
    let venue = string_of(get("venue").ok_or(bad)?)
        .filter(|v| !v.trim().is_empty())
        .ok_or(bad)?;
    let symbol = string_of(get("symbol").ok_or(bad)?)
        .map(|s| s.trim().to_uppercase())
        .filter(|s| !s.is_empty())
        .ok_or(bad)?;
    let ts_ns = ts_of(get("ts").ok_or(bad)?).ok_or(bad)?;
    let price = decimal_of(get("price").ok_or(bad)?)
        .filter(|p| *p > Decimal::ZERO)
        .ok_or(bad)?;
    let size = decimal_of(get("size").ok_or(bad)?)
        .filter(|s| *s >= Decimal::ZERO)
        .ok_or(bad)?;
    let seq_text = get("seq").ok_or(bad)?.get();
    let seq = seq_text
        .chars()
        .all(|c| c.is_ascii_digit())
        .then(|| seq_text.parse::<u64>().ok())
        .flatten()
        .ok_or(bad)?;
    let currency = match get("currency") {
        None => None,
        Some(raw) => Some(
            string_of(raw)
                .map(|c| c.trim().to_uppercase())
                .filter(|c| !c.is_empty())
                .ok_or(bad)?,
        ),
    };
    Ok(OTick {
        venue,
        symbol,
        ts_ns,
        price,
        size,
        seq,
        currency,
    })
}

struct Window {
    start: u64,
    instrument: String,
    symbol: String,
    ticks: Vec<OTick>,
    emitted: Option<u32>,
}

fn bar(w: &Window, end: u64, revision: u32) -> Value {
    let key = |t: &OTick| (t.ts_ns, t.venue.clone(), t.seq);
    let open = w.ticks.iter().min_by_key(|t| key(t)).unwrap().price;
    let close = w.ticks.iter().max_by_key(|t| key(t)).unwrap().price;
    let high = w.ticks.iter().map(|t| t.price).max().unwrap();
    let low = w.ticks.iter().map(|t| t.price).min().unwrap();
    let volume: Decimal = w.ticks.iter().map(|t| t.size).sum();
    let notional: Decimal = w.ticks.iter().map(|t| t.price * t.size).sum();
    let vwap = (!volume.is_zero()).then(|| {
        (notional / volume)
            .round_dp_with_strategy(8, RoundingStrategy::MidpointNearestEven)
            .normalize()
            .to_string()
    });
    let time = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    json!({
        "instrument_id": w.instrument,
        "symbol": w.symbol,
        "window_start": time(w.start),
        "window_end": time(end),
        "open": open.normalize().to_string(),
        "high": high.normalize().to_string(),
        "low": low.normalize().to_string(),
        "close": close.normalize().to_string(),
        "volume": volume.normalize().to_string(),
        "vwap": vwap,
        "trades": w.ticks.len(),
        "revision": revision,
    })
}

struct Expected {
    bars: Vec<String>,
    dead: Vec<(u64, String)>,
    late: Vec<u64>,
    duplicates: u64,
}

/// Runs the contract by hand over `data`.
fn oracle(data: &Path, size: u64, slide: u64, lateness: u64, ooo: u64) -> Expected {
    let reference: HashMap<String, String> = std::fs::read_to_string(data.join("instruments.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[0].trim().to_uppercase(), cells[1].to_string())
        })
        .collect();
    let fx: HashMap<&str, Decimal> = [
        ("EUR", Decimal::from_str("1.08").unwrap()),
        ("GBP", Decimal::from_str("1.27").unwrap()),
    ]
    .into();
    let retention = size + lateness;
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let step = [size, slide, lateness].into_iter().fold(5_000, gcd);
    let text = std::fs::read_to_string(data.join("ticks.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let mut bars = Vec::new();
    let mut dead = Vec::new();
    let mut late = Vec::new();
    let mut duplicates = 0;
    let mut seen: HashMap<(String, u64), u64> = HashMap::new();
    let mut windows: BTreeMap<(u64, String), Window> = BTreeMap::new();
    let advance = |x: u64, windows: &mut BTreeMap<(u64, String), Window>, bars: &mut Vec<Value>| {
        let due: Vec<(u64, String)> = windows
            .keys()
            .filter(|(end, _)| *end <= x)
            .cloned()
            .collect();
        for key in due {
            let w = windows.get_mut(&key).unwrap();
            if w.emitted.is_none() {
                w.emitted = Some(0);
                bars.push(bar(w, key.0, 0));
            }
            if key.0 + lateness <= x {
                windows.remove(&key);
            }
        }
    };
    let mut bar_values = Vec::new();
    let mut max_ts: Option<u64> = None;
    let mut moved_to = None;
    {
        for (i, text) in lines.iter().enumerate() {
            let line = (i + 1) as u64;
            // A line's time: the watermark over the lines before it, in steps of the greatest
            // divisor of 5 s, the window size, slide and allowed lateness.
            let t = max_ts.map_or(0, |m: u64| {
                let w = m.saturating_sub(ooo);
                w - w % step
            });
            // Dedup keys expire when the watermark moves, before that watermark's ticks apply.
            if moved_to != Some(t) {
                seen.retain(|_, expiry| *expiry > t);
                moved_to = Some(t);
            }
            if let Some(ts) = fields(text).and_then(|f| f.get("ts").and_then(|r| ts_of(r))) {
                let ms = (ts / 1_000_000) as u64;
                max_ts = Some(max_ts.map_or(ms, |m| m.max(ms)));
            }
            let mut tick = match parse(text) {
                Ok(t) => t,
                Err(reason) => {
                    dead.push((line, reason.to_string()));
                    continue;
                }
            };
            match tick.currency.as_deref() {
                None | Some("USD") => {}
                Some(c) => match fx.get(c) {
                    Some(rate) => {
                        tick.price = (tick.price * rate)
                            .round_dp_with_strategy(8, RoundingStrategy::MidpointNearestEven)
                    }
                    None => {
                        dead.push((line, "unknown_currency".into()));
                        continue;
                    }
                },
            }
            let key = (tick.venue.clone(), tick.seq);
            let ts_ms = (tick.ts_ns / 1_000_000) as u64;
            if seen.contains_key(&key) {
                duplicates += 1;
                continue;
            }
            seen.insert(key, ts_ms + retention);
            let Some(instrument) = reference.get(&tick.symbol) else {
                dead.push((line, "unknown_instrument".into()));
                continue;
            };
            advance(t, &mut windows, &mut bar_values);
            let mut starts = Vec::new();
            let mut start = ts_ms - ts_ms % slide;
            loop {
                if start + size > ts_ms {
                    starts.push(start);
                }
                if start < slide {
                    break;
                }
                start -= slide;
                if start + size <= ts_ms {
                    break;
                }
            }
            let open_windows: Vec<u64> = starts
                .into_iter()
                .filter(|s| s + size + lateness > t)
                .collect();
            if open_windows.is_empty() {
                late.push(line);
                continue;
            }
            for start in open_windows {
                let end = start + size;
                let w = windows
                    .entry((end, instrument.clone()))
                    .or_insert_with(|| Window {
                        start,
                        instrument: instrument.clone(),
                        symbol: tick.symbol.clone(),
                        ticks: Vec::new(),
                        emitted: None,
                    });
                w.ticks.push(tick.clone());
                if end <= t {
                    let revision = w.emitted.map_or(0, |r| r + 1);
                    w.emitted = Some(revision);
                    bar_values.push(bar(w, end, revision));
                }
            }
        }
    }
    advance(u64::MAX, &mut windows, &mut bar_values);
    bars.extend(bar_values.iter().map(|v| v.to_string()));
    bars.sort();
    dead.sort();
    late.sort();
    Expected {
        bars,
        dead,
        late,
        duplicates,
    }
}

fn engine_bars(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = sorted_lines(path)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn check(win: Win, size: u64, slide: u64, lateness: u64, ooo: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    gen(
        &data,
        40_000,
        60,
        seed,
        &[
            "--bad-ratio",
            "0.03",
            "--late-ratio",
            "0.01",
            "--duplicate-ratio",
            "0.005",
            "--rate",
            "100",
            "--jitter-ms",
            "4000",
        ],
    );
    let graph = write_graph(dir.path(), &data, &out, win);
    let summary = run_graph(&graph, 2);
    let expected = oracle(&data, size, slide, lateness, ooo);

    let bars = engine_bars(&out.join("bars.jsonl"));
    assert!(
        bars.len() > 100,
        "too few bars to mean anything: {}",
        bars.len()
    );
    assert!(
        expected.bars.iter().any(|b| b.contains("\"revision\":1")),
        "data exercises revisions"
    );
    assert_eq!(bars.len(), expected.bars.len(), "bar count");
    for (got, want) in bars.iter().zip(&expected.bars) {
        assert_eq!(got, want);
    }

    let mut dead: Vec<(u64, String)> = sorted_lines(&out.join("dead_letters.jsonl"))
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    dead.sort();
    assert_eq!(dead, expected.dead);
    for reason in [
        "malformed",
        "missing_field",
        "invalid_value",
        "unknown_currency",
        "unknown_instrument",
    ] {
        let want = expected.dead.iter().filter(|(_, r)| r == reason).count() as u64;
        assert!(want > 0, "data has {reason}");
        assert_eq!(
            summary["dead_letters"][reason].as_u64(),
            Some(want),
            "{reason}"
        );
    }

    // Late ticks as a multiset of (venue, seq): a duplicate whose key has expired can be late
    // a second time, so lines are not a key.
    let raw = std::fs::read_to_string(data.join("ticks.jsonl")).unwrap();
    let raw: Vec<&str> = raw.lines().collect();
    let mut want_late: Vec<(String, u64)> = expected
        .late
        .iter()
        .map(|&n| {
            let t = parse(raw[(n - 1) as usize]).unwrap();
            (t.venue, t.seq)
        })
        .collect();
    want_late.sort();
    let mut late: Vec<(String, u64)> = sorted_lines(&out.join("late.jsonl"))
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["venue"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    late.sort();
    assert_eq!(late, want_late);
    assert!(!expected.late.is_empty(), "data exercises late ticks");
    assert_eq!(summary["late"].as_u64(), Some(expected.late.len() as u64));
    assert!(expected.duplicates > 0, "data exercises duplicates");
    assert_eq!(summary["duplicates"].as_u64(), Some(expected.duplicates));
}

#[test]
fn tumbling_bars_equal_a_naive_recomputation() {
    check(TUMBLING, 60_000, 60_000, 10_000, 1_000, 5);
}

#[test]
fn sliding_bars_equal_a_naive_recomputation() {
    let win = Win {
        size: "1m",
        slide: Some("20s"),
        lateness: "15s",
        ooo: "2s",
    };
    check(win, 60_000, 20_000, 15_000, 2_000, 9);
}

/// Windows shorter than the 5 s watermark step: the step is 500 ms (it divides 2 s and
/// 1.5 s), so windows close and lateness is judged exactly on their own grid.
#[test]
fn short_windows_use_a_finer_watermark_step_and_equal_a_naive_recomputation() {
    let win = Win {
        size: "2s",
        slide: None,
        lateness: "1500ms",
        ooo: "1s",
    };
    check(win, 2_000, 2_000, 1_500, 1_000, 13);
}

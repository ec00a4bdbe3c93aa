//! `tickflow gen --shape realistic`: the data shape the performance targets are measured on
//! (issue 13): sparse bars, four venues, mixed currencies, messy symbols, spaced JSON.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;

#[test]
fn the_realistic_shape_has_the_described_mix_and_runs_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ticks = 120_000u64;
    gen(
        &data,
        ticks,
        2_000,
        9,
        &[
            "--shape",
            "realistic",
            "--duplicate-ratio",
            "0",
            "--late-ratio",
            "0",
        ],
    );
    let text = std::fs::read_to_string(data.join("ticks.jsonl")).unwrap();
    let mut venues = BTreeSet::new();
    let mut symbols = BTreeSet::new();
    let mut currencies: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for line in text.lines() {
        assert!(
            line.contains("\": ") && line.contains(", \""),
            "spaced JSON: {line}"
        );
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        venues.insert(v["venue"].as_str().unwrap().to_string());
        symbols.insert(v["symbol"].as_str().unwrap().to_string());
        let c = v["currency"].as_str().unwrap_or("none").to_string();
        *currencies.entry(c).or_default() += 1;
        let ts = match &v["ts"] {
            serde_json::Value::Number(n) => n.as_i64().unwrap(),
            s => chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap())
                .unwrap()
                .timestamp_millis(),
        };
        first = first.min(ts);
        last = last.max(ts);
    }
    assert_eq!(venues.len(), 4, "{venues:?}");
    // 7 spellings of each of 2,000 symbols, nearly all seen at 60 ticks per instrument.
    assert!(
        symbols.len() > 13_000,
        "{} distinct raw symbols",
        symbols.len()
    );
    let share = |c: &str| currencies.get(c).copied().unwrap_or(0) as f64 / ticks as f64;
    assert!((share("none") - 0.4).abs() < 0.02, "{currencies:?}");
    assert!((share("USD") - 0.4).abs() < 0.02, "{currencies:?}");
    let foreign = share("EUR") + share("GBP") + share("JPY");
    assert!(
        (foreign - 0.2).abs() < 0.02 && share("JPY") > 0.05,
        "{currencies:?}"
    );
    let span_min = (last - first) as f64 / 60_000.0;
    assert!(
        (89.0..=91.0).contains(&span_min),
        "{span_min} minutes of event time"
    );

    // Every tick is valid with the realistic fx table: no dead letters, no late ticks.
    let out = dir.path().join("out");
    let graph = write_graph(dir.path(), &data, &out, TUMBLING);
    let g = std::fs::read_to_string(&graph)
        .unwrap()
        .replace(r#"GBP = "1.27" }"#, r#"GBP = "1.27", JPY = "0.0067" }"#);
    std::fs::write(&graph, g).unwrap();
    let summary = run_graph(&graph, 2);
    let dead: u64 = summary["dead_letters"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(dead, 0, "{}", summary["dead_letters"]);
    let bars = std::fs::read_to_string(out.join("bars.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    // 60 ticks per instrument over 90 one-minute windows: most bars hold one or two ticks.
    assert!(bars > ticks / 3, "{bars} bars for {ticks} ticks");
}

//! `format = "csv"`: the same ticks as JSON lines and as CSV (header-driven, quoted fields)
//! give byte-identical bars, late ticks and dead-letter counts.

use std::path::Path;

use crate::common::*;

const FIELDS: [&str; 7] = ["venue", "symbol", "ts", "price", "size", "seq", "currency"];

/// Writes `ticks.jsonl` as CSV, record for record: fields in header order (numbers as
/// written, text quoted where needed, absent fields empty).
fn to_csv(json: &Path, csv_path: &Path) {
    let mut w = csv::Writer::from_path(csv_path).unwrap();
    w.write_record(FIELDS).unwrap();
    for line in std::fs::read_to_string(json).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let row: Vec<String> = FIELDS
            .iter()
            .map(|f| match &v[f] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
}

#[test]
fn the_same_ticks_as_json_and_as_csv_give_byte_identical_bars() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Mixed currencies, messy symbols, duplicates and very late ticks; no malformed lines
    // (a line that is not a JSON object has no CSV form with the same fields).
    gen(
        &data,
        50_000,
        300,
        21,
        &["--late-ratio", "0.01", "--rate", "200"],
    );
    to_csv(&data.join("ticks.jsonl"), &data.join("ticks.csv"));
    let csv_text = std::fs::read_to_string(data.join("ticks.csv")).unwrap();
    assert!(
        csv_text.contains('"') || csv_text.contains(' '),
        "some fields need care"
    );
    let json_out = dir.path().join("json");
    let graph = write_graph(dir.path(), &data, &json_out, TUMBLING);
    let json_summary = run_graph(&graph, 2);
    let text = std::fs::read_to_string(&graph)
        .unwrap()
        .replace("ticks.jsonl\"", "ticks.csv\"\nformat = \"csv\"")
        .replace(
            &json_out.display().to_string(),
            &dir.path().join("csv").display().to_string(),
        );
    let csv_graph = dir.path().join("csv.toml");
    std::fs::write(&csv_graph, text).unwrap();
    for workers in [1, 3] {
        let csv_summary = run_graph(&csv_graph, workers);
        for file in ["bars.jsonl", "late.jsonl"] {
            let a = std::fs::read(json_out.join(file)).unwrap();
            let b = std::fs::read(dir.path().join("csv").join(file)).unwrap();
            assert!(!a.is_empty(), "{file} has lines");
            assert!(
                a == b,
                "{file} differs between JSON and CSV input ({workers} workers)"
            );
        }
        assert_eq!(json_summary["dead_letters"], csv_summary["dead_letters"]);
        assert_eq!(json_summary["duplicates"], csv_summary["duplicates"]);
        assert_eq!(json_summary["input_records"], csv_summary["input_records"]);
    }
}

#[test]
fn a_csv_row_with_the_wrong_field_count_is_a_dead_letter_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen(&data, 100, 10, 3, &[]);
    let csv_path = data.join("ticks.csv");
    to_csv(&data.join("ticks.jsonl"), &csv_path);
    let mut text = std::fs::read_to_string(&csv_path).unwrap();
    text.push_str("XNAS,\"only, two\"\n");
    std::fs::write(&csv_path, text).unwrap();
    let out = dir.path().join("out");
    let graph = write_graph(dir.path(), &data, &out, TUMBLING);
    let text = std::fs::read_to_string(&graph)
        .unwrap()
        .replace("ticks.jsonl\"", "ticks.csv\"\nformat = \"csv\"");
    std::fs::write(&graph, text).unwrap();
    run_graph(&graph, 1);
    let dead = std::fs::read_to_string(out.join("dead_letters.jsonl")).unwrap();
    assert!(
        dead.contains("csv record with 2 fields, the header has 7"),
        "{dead}"
    );
    assert!(dead.contains("\"reason\":\"malformed\""), "{dead}");
}

//! `map`: three venue formats (renamed fields, epoch ns, epoch ms, a `strftime` time) normalize
//! to golden ticks with no code, every mapping error is a dead letter naming the field, and a
//! source's `event_time` moves the watermark for records that carry their time elsewhere.

use std::path::Path;

use crate::common::*;

/// The golden graph with its outputs under `out`.
fn golden_graph(dir: &Path, out: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string("tests/venues/venues.toml")
        .unwrap()
        .replace("OUT/", &format!("{}/", out.display()));
    let path = dir.join("venues.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn three_venue_formats_map_to_golden_ticks_and_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let graph = golden_graph(dir.path(), &out);
    for workers in [1, 2] {
        let summary = run_graph(&graph, workers);
        assert_eq!(summary["input_records"].as_u64(), Some(12));
        let ticks = std::fs::read_to_string(out.join("ticks.jsonl")).unwrap();
        let want = std::fs::read_to_string("tests/venues/expected_ticks.jsonl").unwrap();
        assert_eq!(ticks, want, "normalized ticks on {workers} worker(s)");
        let dead = sorted_lines(&out.join("dead_letters.jsonl"));
        let want_dead: Vec<String> =
            std::fs::read_to_string("tests/venues/expected_dead_letters.jsonl")
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
        assert_eq!(dead, want_dead, "dead letters on {workers} worker(s)");
    }
    // Each mapping error names the venue's field.
    let dead = sorted_lines(&out.join("dead_letters.jsonl")).join("\n");
    for needle in [
        "missing field `px` (mapped to `price`)",
        "missing field `time_ns` (the event time)",
        "`time_ns` \\\"soon\\\" is not epoch nanoseconds",
        "`ts_ms` true is not epoch milliseconds",
        "`time` \\\"2024-03-01 14:30:03\\\" is not a time in the format",
        "not a JSON object",
    ] {
        assert!(
            dead.contains(needle),
            "no dead letter with {needle:?} in\n{dead}"
        );
    }
}

#[test]
fn a_source_event_time_field_moves_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    // 3,000 ticks 100 ms apart with their time in `time_ns`, then one 10 minutes late.
    let start_ns: i64 = 1_709_303_400_000_000_000;
    let mut lines: Vec<String> = (0..3_000)
        .map(|i| {
            format!(
                r#"{{"px":"10","qty":"1","sym":"AAPL","time_ns":{},"id":{i}}}"#,
                start_ns + i * 100_000_000
            )
        })
        .collect();
    lines.push(format!(
        r#"{{"px":"11","qty":"1","sym":"AAPL","time_ns":{},"id":9999}}"#,
        start_ns - 600_000_000_000
    ));
    std::fs::write(dir.path().join("a.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.path().join("instruments.csv"),
        "symbol,instrument_id\nAAPL,US0378331005\n",
    )
    .unwrap();
    let graph = |event_time: &str| {
        let text = format!(
            r#"[graph]
name = "watermark"
version = 1

[sources.a]
type = "file"
path = "{d}/a.jsonl"
{event_time}

[operators.map]
type = "map"
input = "a"
rename = {{ price = "px", size = "qty", symbol = "sym", seq = "id" }}
constants = {{ venue = "VA" }}
timestamp = {{ field = "time_ns", unit = "ns" }}

[operators.normalize]
type = "normalize"
input = "map"

[operators.enrich]
type = "enrich"
input = "normalize"
reference = "{d}/instruments.csv"

[operators.bars]
type = "window"
input = "enrich"
size = "1m"

[sinks.bars]
type = "file"
input = "bars"
path = "{d}/bars.jsonl"

[sinks.late]
type = "file"
input = "bars.late"
path = "{d}/late.jsonl"
"#,
            d = dir.path().display()
        );
        let path = dir.path().join("g.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let with = run_graph(
        &graph(r#"event_time = { field = "time_ns", unit = "ns" }"#),
        2,
    );
    assert_eq!(with["late"].as_u64(), Some(1), "the late tick is late");
    let late = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
    assert!(late.contains("\"seq\":9999"), "{late}");
    // Without it the source finds no `ts`: its watermark stays put until the end, so
    // nothing is late (the reason `event_time` exists).
    let without = run_graph(&graph(""), 2);
    assert_eq!(without["late"].as_u64(), Some(0));
}

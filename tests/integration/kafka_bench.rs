//! `tickflow bench --kafka` end to end against a real Kafka-protocol broker (tansu, started by
//! `deploy/kafka-broker.sh`): its catch-up beside bare clients, its bar latency and the
//! broker's own latency floors.

use crate::common::*;
use crate::kafka::Broker;

/// Samples count in a bench latency line (`... (N bars): p50 ...`), checking it has all four
/// figures.
fn latency_samples(out: &str, line_start: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(line_start))
        .unwrap_or_else(|| panic!("no line starting {line_start:?} in:\n{out}"));
    for p in ["p50 ", "p95 ", "p99 ", "max "] {
        assert!(line.contains(p), "{line}");
    }
    let open = line.rfind('(').unwrap();
    line[open + 1..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn kafka_bench_measures_the_engine_beside_bare_clients_on_the_same_broker() {
    let broker = Broker::start("memory://tansu/");
    let dir = tempfile::tempdir().unwrap();
    let out = tickflow()
        .args(["bench", "--kafka", &broker.addr()])
        .args([
            "--ticks",
            "40000",
            "--runs",
            "1",
            "--rate",
            "10000",
            "--workers",
            "2",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The catch-up run read every tick, and the bare clients read as many records.
    let run = text
        .lines()
        .find(|l| l.trim_start().starts_with("catch-up run 1:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(run.contains("40000 ticks in"), "{run}");
    assert!(run.contains("bare clients, same reads and writes"), "{run}");
    // The same graph on the same ticks from a file, and the CPU bound the three runs give.
    assert!(
        run.contains("the engine on the same 40000 ticks from a file"),
        "{run}"
    );
    let bound: f64 = text
        .lines()
        .find_map(|l| l.split("CPU bound").nth(1))
        .and_then(|l| l.split("median ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CPU bound in {text}"));
    assert!(bound > 0.0, "{text}");
    assert!(text.contains("bare-client ceiling median"), "{text}");
    assert!(text.contains("% of it"), "{text}");
    // Latency of the engine's bars, and the floors: over every relayed tick, over one tick
    // relayed per bar's worth read, and over every tick read after one hop.
    let bars = latency_samples(&text, "latency, watermark-moving tick");
    assert!(bars > 0, "{text}");
    // Split at the bar record's create time: the same bars on each side.
    assert_eq!(
        latency_samples(&text, "of it, tick produced -> bar written"),
        bars
    );
    assert_eq!(latency_samples(&text, "and bar written -> readable"), bars);
    assert_eq!(
        latency_samples(
            &text,
            "floor, bare clients: tick produced -> relayed (every tick)"
        ),
        40_000,
        "the relay passes every tick on: {text}"
    );
    let sparse = latency_samples(
        &text,
        "floor, bare clients: tick produced -> relayed (one tick per bar's worth)",
    );
    assert!(sparse > 0 && sparse < 40_000, "{text}");
    assert_eq!(
        latency_samples(
            &text,
            "floor, bare clients: one hop, tick produced -> readable"
        ),
        40_000,
        "{text}"
    );
}

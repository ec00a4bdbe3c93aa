//! Mutation fuzzing on stable Rust, bounded in time: valid inputs (the example graphs,
//! generated ticks, a real event log) are mutated byte by byte and token by token, and each
//! mutant goes through the graph compiler, the tick parser and the event-log decoder. None
//! may panic. Each harness runs `TICKFLOW_FUZZ_SECONDS` (default 20) with a seed printed on
//! failure (`TICKFLOW_FUZZ_SEED` replays it); run them longer with, for example,
//! `TICKFLOW_FUZZ_SECONDS=600 cargo test --test integration fuzz::`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use tickflow_engine::policy::GraphPolicy;
use tickflow_operators::normalize::{NormalizeConfig, Normalizer};
use tickflow_operators::record::{Ordinal, RawLine, ToJsonLine};
use tickflow_state::events::{Event, EventKind};
use tickflow_state::EventLog;

use crate::common::*;

/// Pieces a mutation may insert: the syntax and words the parsers look for.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    ",",
    ".",
    "\n",
    "#",
    "\\",
    "\\u0000",
    "\u{0}",
    "\u{1b}[2J",
    "..",
    "/",
    "/etc/passwd",
    "type",
    "input",
    "path",
    "window",
    "normalize",
    "enrich",
    "file",
    "kafka",
    "projection",
    "stdout",
    "sources.",
    "operators.",
    "sinks.",
    "graph",
    "version",
    "name",
    "size",
    "slide",
    "kind",
    "sliding",
    "tumbling",
    "\"1m\"",
    "\"-1s\"",
    "\"0s\"",
    "\"99999999999999999999h\"",
    "1e400",
    "-0",
    "NaN",
    "inf",
    "9223372036854775807",
    "18446744073709551616",
    "\"price\":",
    "\"size\":",
    "\"ts\":",
    "\"2024-13-45T25:61:61Z\"",
    "\"1e-400\"",
    "\"79228162514264337593543950336\"",
    "null",
    "true",
    "[]",
    "{}",
    "\u{fffd}",
    "\u{10ffff}",
    "\u{ff}",
];

fn seconds() -> Duration {
    Duration::from_secs(
        std::env::var("TICKFLOW_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    )
}

/// One mutant of `input`.
fn mutate(rng: &mut ChaCha8Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        let at = if out.is_empty() {
            0
        } else {
            rng.gen_range(0..=out.len())
        };
        match rng.gen_range(0..6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + rng.gen_range(1..64)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let from = rng.gen_range(0..out.len());
                let end = (from + rng.gen_range(1..128)).min(out.len());
                let piece = out[from..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => out.insert(at, rng.gen()),
            _ => out.truncate(at),
        }
    }
    out
}

/// Feeds mutants of `corpus` to `target` until the time is up; a panic fails the test with
/// the seed and the input.
fn fuzz(name: &str, corpus: &[Vec<u8>], mut target: impl FnMut(&[u8])) -> usize {
    let seed: u64 = std::env::var("TICKFLOW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let deadline = Instant::now() + seconds();
    let mut cases = 0;
    // The corpus itself first, then mutants (of mutants, now and then).
    let mut pool: Vec<Vec<u8>> = corpus.to_vec();
    while Instant::now() < deadline {
        let input = if cases < corpus.len() {
            corpus[cases].clone()
        } else {
            let base = &pool[rng.gen_range(0..pool.len())];
            mutate(&mut rng, base)
        };
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            panic!(
                "{name}: panicked on case {cases} (TICKFLOW_FUZZ_SEED={seed}); input: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        if rng.gen_ratio(1, 16) && pool.len() < 256 {
            pool.push(input);
        }
        cases += 1;
    }
    eprintln!("{name}: {cases} cases, seed {seed}");
    cases
}

#[test]
fn fuzz_the_graph_compiler() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    gen(&data, 50, 5, 1, &[]);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut corpus: Vec<Vec<u8>> = ["market-bars.toml", "kafka-bars.toml"]
        .iter()
        .map(|f| std::fs::read(examples.join(f)).unwrap())
        .collect();
    let g = write_graph(root.path(), &data, &root.path().join("out"), TUMBLING);
    corpus.push(std::fs::read(g).unwrap());
    let engine = root.path().join("engine");
    std::fs::create_dir_all(&engine).unwrap();
    let confined = GraphPolicy::confined(
        std::slice::from_ref(&data),
        Some(&root.path().join("outputs")),
        &engine,
    )
    .unwrap()
    .with_max_nodes(200);
    let free = GraphPolicy::free();
    let cases = fuzz("compile", &corpus, |bytes| {
        // The API takes UTF-8 only; anything else is refused before compiling.
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = tickflow_engine::compile_confined(text, "fuzz", &confined);
            let _ = tickflow_engine::compile_confined(text, "fuzz", &free);
        }
    });
    assert!(cases > 100, "only {cases} cases ran");
}

#[test]
fn fuzz_the_tick_parser() {
    let root = tempfile::tempdir().unwrap();
    gen(root.path(), 2_000, 20, 7, &["--bad-ratio", "0.1"]);
    let ticks = std::fs::read(root.path().join("ticks.jsonl")).unwrap();
    let corpus: Vec<Vec<u8>> = ticks
        .split(|b| *b == b'\n')
        .take(300)
        .map(<[u8]>::to_vec)
        .collect();
    let cfg = NormalizeConfig {
        fx: [
            ("EUR".into(), "1.08".into()),
            ("JPY".into(), "0.0067".into()),
        ]
        .into(),
        ..Default::default()
    };
    let mut normalizer = Normalizer::new(&cfg, "USD").unwrap();
    let names = ["ticks".to_string()];
    let cases = fuzz("ticks", &corpus, |bytes| {
        let text = tickflow_state::text::line_text(bytes);
        // As a source gives it: with the spans its event-time scan found.
        let spans = tickflow_operators::tick::event_time_and_spans(&text).1;
        let line = RawLine {
            ordinal: Ordinal { source: 0, line: 1 },
            text,
            spans,
        };
        match normalizer.normalize(line) {
            Ok(tick) => assert!(tick.price > rust_decimal::Decimal::ZERO),
            Err(dead) => {
                let json = dead.to_json_line(&names);
                assert!(
                    serde_json::from_str::<serde_json::Value>(&json).is_ok(),
                    "{json}"
                );
            }
        }
    });
    assert!(cases > 100, "only {cases} cases ran");
}

#[test]
fn fuzz_the_event_log_decoder() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("events.log");
    {
        let (mut log, _) = EventLog::open(&path, false).unwrap();
        let now = chrono::Utc::now();
        let kinds = [
            EventKind::DeploymentPaused { id: 1 },
            EventKind::DeploymentResumed { id: 1 },
            EventKind::DeploymentFailed {
                id: 1,
                error: "sink bars: No space left on device".into(),
            },
            EventKind::DeploymentFinished { id: 2 },
        ];
        for kind in kinds {
            let e = Event::new(now, "ops-alice", Some("a reason".into()), kind);
            log.append(&e.encode()).unwrap();
        }
    }
    let corpus = vec![std::fs::read(&path).unwrap()];
    let case = root.path().join("case.log");
    let cases = fuzz("event log", &corpus, |bytes| {
        for payload in [bytes, bytes.get(48..).unwrap_or_default()] {
            let _ = Event::decode(payload);
        }
        std::fs::write(&case, bytes).unwrap();
        if let Ok((records, _)) = EventLog::read(&case) {
            for r in records {
                let _ = Event::decode(&r.payload);
            }
        }
        // Opening with repair keeps a copy of a damaged file and cuts it; never panics.
        let _ = EventLog::open(&case, true);
        for entry in std::fs::read_dir(root.path()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().contains(".damaged-") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    });
    assert!(cases > 100, "only {cases} cases ran");
}

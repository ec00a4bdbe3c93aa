//! Fault injection for crash tests.
//!
//! `TICKFLOW_FAULT=<point>:<n>` aborts the process (no unwinding, no flushing: as close to
//! `kill -9` as a process can do to itself) the `n`-th time execution reaches `<point>`;
//! `TICKFLOW_FAULT=<point>:<n>:panic` panics the thread there instead (a bug, not a crash).
//! Points: `before-state-write`, `after-state-write` (an operator's snapshot),
//! `after-positions-write` (a source's position), `before-marker`, `after-marker` (the commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every fault point, for docs and validation.
pub const POINTS: &[&str] = &[
    "before-state-write",
    "after-state-write",
    "after-positions-write",
    "before-marker",
    "after-marker",
];

/// What the fault does: abort the process (a crash) or panic the thread (a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Abort,
    Panic,
}

fn spec() -> &'static Option<(String, u64, Mode)> {
    static SPEC: OnceLock<Option<(String, u64, Mode)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::env::var("TICKFLOW_FAULT").ok()?;
        let mut parts = text.split(':');
        let point = parts.next()?.to_string();
        let n = parts.next().unwrap_or("1").parse().ok()?;
        let mode = match parts.next() {
            Some("panic") => Mode::Panic,
            _ => Mode::Abort,
        };
        Some((point, n, mode))
    })
}

/// Marks that execution reached `point`; aborts (or, with `:panic`, panics) if
/// `TICKFLOW_FAULT` asks for it here.
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((target, n, mode)) = spec() {
        if target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            if *mode == Mode::Panic {
                panic!("injected panic at {name} (hit {n})");
            }
            eprintln!("tickflow: injected fault at {name} (hit {n}): aborting");
            std::process::abort();
        }
    }
}

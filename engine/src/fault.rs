//! Fault injection for crash tests.
//!
//! `TICKFLOW_FAULT=<point>:<n>` aborts the process (no unwinding, no flushing: as close to
//! `kill -9` as a process can do to itself) the `n`-th time execution reaches `<point>`.
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

fn spec() -> &'static Option<(String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::env::var("TICKFLOW_FAULT").ok()?;
        let (point, n) = text.split_once(':').unwrap_or((text.as_str(), "1"));
        Some((point.to_string(), n.parse().ok()?))
    })
}

/// Marks that execution reached `point`; aborts if `TICKFLOW_FAULT` asks for it here.
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((target, n)) = spec() {
        if target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("tickflow: injected fault at {name} (hit {n}): aborting");
            std::process::abort();
        }
    }
}

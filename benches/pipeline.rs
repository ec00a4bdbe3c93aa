//! `cargo bench`: the example pipeline on 1,000,000 generated ticks (2,000 instruments) with 1
//! and 2 workers, three runs each, in child processes so each run's peak RSS is its own.
//! Prints median ticks/s, min/max and peak RSS as a Markdown table.
//!
//! `TICKFLOW_BENCH_TICKS` overrides the tick count (for a quick look).

use std::process::Command;

fn main() {
    let ticks = std::env::var("TICKFLOW_BENCH_TICKS").unwrap_or_else(|_| "1000000".into());
    let status = Command::new(env!("CARGO_BIN_EXE_tickflow"))
        .args([
            "bench",
            "--ticks",
            &ticks,
            "--instruments",
            "2000",
            "--workers",
            "1,2",
            "--runs",
            "3",
        ])
        .status()
        .expect("tickflow bench starts");
    std::process::exit(status.code().unwrap_or(1));
}

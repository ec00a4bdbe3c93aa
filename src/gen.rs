//! `tickflow gen`: realistic synthetic ticks and reference data.
//!
//! Per instrument a random walk of prices in cents; ticks spread over several venues and
//! currencies, in event-time order with bounded jitter, a few very late ticks, duplicates, and
//! (optionally) a share of bad lines of every dead-letter kind. The same seed gives the same files.
//!
//! Two shapes: `easy` (the default: 6 venues, 1,000 ticks per second of event time, symbols
//! mostly as listed) and `realistic` (what market-data feeds look like: 4 venues, the ticks
//! spread over 90 minutes so a one-minute bar has a handful of ticks, 40 % without `currency`
//! and 20 % in EUR, GBP or JPY, every symbol written 7 ways in case and whitespace, JSON with
//! spaces after separators).

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::Context;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

/// What to generate.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Number of tick lines to write (bad and duplicate lines included).
    #[arg(long, default_value_t = 100_000)]
    pub ticks: u64,
    /// Number of instruments in the reference data.
    #[arg(long, default_value_t = 100)]
    pub instruments: u32,
    /// Random seed; the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder for `ticks.jsonl` and `instruments.csv`.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Share of bad lines (malformed, missing field, invalid value, unknown currency,
    /// unknown instrument), 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
    /// Share of exact duplicate ticks, 0 to 1.
    #[arg(long, default_value_t = 0.001)]
    pub duplicate_ratio: f64,
    /// Share of ticks that arrive very late (30 to 120 s behind), 0 to 1.
    #[arg(long, default_value_t = 0.001)]
    pub late_ratio: f64,
    /// Ticks per second of event time.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Maximum event-time jitter of ordinary ticks, in ms (out-of-order arrival).
    #[arg(long, default_value_t = 800)]
    pub jitter_ms: u64,
    /// Event time of the first tick, ms since the Unix epoch (default 2024-03-01T14:30:00Z).
    #[arg(long, default_value_t = 1_709_303_400_000)]
    pub start_ms: u64,
    /// The data shape: `easy` or `realistic` (see the module docs; `realistic` ignores
    /// `--rate` and spreads the ticks over `--duration-secs`).
    #[arg(long, value_enum, default_value_t = Shape::Easy)]
    pub shape: Shape,
    /// Realistic shape: event time the ticks span, in seconds.
    #[arg(long, default_value_t = 5_400)]
    pub duration_secs: u64,
}

/// A generated data shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Dense bars, few currencies and symbol spellings.
    Easy,
    /// Sparse bars, mixed currencies, messy symbols, spaced JSON.
    Realistic,
}

/// FX rates (units of USD per unit) of the currencies the realistic shape uses; a graph over
/// it needs them in `normalize.fx`.
pub const REALISTIC_FX: [(&str, &str); 3] = [("EUR", "1.08"), ("GBP", "1.27"), ("JPY", "0.0067")];

/// The 7 ways the realistic shape writes symbol `s`.
fn symbol_variant(s: &str, k: u32) -> String {
    let lower = s.to_lowercase();
    let title: String = s
        .chars()
        .enumerate()
        .map(|(i, c)| if i == 0 { c } else { c.to_ascii_lowercase() })
        .collect();
    match k % 7 {
        0 => s.to_string(),
        1 => lower,
        2 => title,
        3 => format!(" {s}"),
        4 => format!("{s} "),
        5 => format!(" {lower} "),
        _ => format!("\t{s}"),
    }
}

const VENUES: [&str; 6] = ["XNAS", "XNYS", "BATS", "ARCX", "XLON", "XETR"];
const SECTORS: [&str; 6] = [
    "tech",
    "energy",
    "financials",
    "health",
    "utilities",
    "industrials",
];
const ASSET_CLASSES: [&str; 3] = ["equity", "etf", "commodity"];

fn symbol(rng: &mut ChaCha8Rng, taken: &mut std::collections::HashSet<String>) -> String {
    loop {
        let len = rng.gen_range(3..=5);
        let s: String = (0..len)
            .map(|_| rng.gen_range(b'A'..=b'Z') as char)
            .collect();
        if taken.insert(s.clone()) {
            return s;
        }
    }
}

fn rfc3339(ms: u64, style: u32) -> String {
    use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
    let dt = DateTime::<Utc>::from_timestamp_millis(ms as i64).unwrap_or_default();
    match style {
        0 => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        _ => FixedOffset::east_opt(3600)
            .map(|cet| {
                dt.with_timezone(&cet)
                    .to_rfc3339_opts(SecondsFormat::Micros, false)
            })
            .unwrap_or_else(|| dt.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

/// A JSON line with a space after each separator outside strings, as many producers write.
fn spaced(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    for c in line.chars() {
        out.push(c);
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ',' || c == ':' {
            out.push(' ');
        }
    }
    out
}

/// Writes `ticks.jsonl` and `instruments.csv` into `args.out`.
pub fn generate(args: &GenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.instruments > 0, "--instruments must be at least 1");
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    for (name, v) in [
        ("--bad-ratio", args.bad_ratio),
        ("--duplicate-ratio", args.duplicate_ratio),
        ("--late-ratio", args.late_ratio),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{name} must be between 0 and 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);

    let mut taken = std::collections::HashSet::new();
    let symbols: Vec<String> = (0..args.instruments)
        .map(|_| symbol(&mut rng, &mut taken))
        .collect();
    let ref_path = args.out.join("instruments.csv");
    let mut refs =
        BufWriter::new(File::create(&ref_path).with_context(|| ref_path.display().to_string())?);
    writeln!(refs, "symbol,instrument_id,asset_class,sector")?;
    for (i, s) in symbols.iter().enumerate() {
        writeln!(
            refs,
            "{s},INS-{:06},{},{}",
            i + 1,
            ASSET_CLASSES.choose(&mut rng).unwrap_or(&"equity"),
            SECTORS.choose(&mut rng).unwrap_or(&"tech")
        )?;
    }
    refs.flush()?;

    let mut prices: Vec<i64> = (0..symbols.len())
        .map(|_| rng.gen_range(1_000..50_000))
        .collect();
    let realistic = args.shape == Shape::Realistic;
    anyhow::ensure!(
        !realistic || args.duration_secs > 0,
        "--duration-secs must be at least 1"
    );
    let venues = if realistic { 4 } else { VENUES.len() };
    let mut seqs = [0u64; VENUES.len()];
    let mut recent: Vec<String> = Vec::new();
    let ticks_path = args.out.join("ticks.jsonl");
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(&ticks_path).with_context(|| ticks_path.display().to_string())?,
    );
    for i in 0..args.ticks {
        if !recent.is_empty() && rng.gen_bool(args.duplicate_ratio) {
            let line = recent[rng.gen_range(0..recent.len())].clone();
            writeln!(out, "{line}")?;
            continue;
        }
        let base = if realistic {
            args.start_ms + i * args.duration_secs * 1_000 / args.ticks.max(1)
        } else {
            args.start_ms + i * 1_000 / args.rate
        };
        let ts = if rng.gen_bool(args.late_ratio) {
            base.saturating_sub(rng.gen_range(30_000..120_000))
        } else {
            base.saturating_sub(rng.gen_range(0..=args.jitter_ms))
        };
        let k = rng.gen_range(0..symbols.len());
        prices[k] = (prices[k] + rng.gen_range(-25..=25)).max(1);
        let v = rng.gen_range(0..venues);
        seqs[v] += 1;
        let price = Decimal::new(prices[k], 2);
        let size: u32 = if rng.gen_bool(0.02) {
            0
        } else {
            rng.gen_range(1..=500)
        };
        let (currency, price) = if realistic {
            // 40 % none, 40 % USD, 20 % EUR, GBP or JPY.
            match rng.gen_range(0..15) {
                0 => (Some("EUR"), (price / Decimal::new(108, 2)).round_dp(4)),
                1 => (Some("GBP"), (price / Decimal::new(127, 2)).round_dp(4)),
                2 => (Some("JPY"), (price / Decimal::new(67, 4)).round_dp(2)),
                3..=8 => (Some("USD"), price),
                _ => (None, price),
            }
        } else {
            match rng.gen_range(0..20) {
                0 => (Some("EUR"), (price / Decimal::new(108, 2)).round_dp(4)),
                1 => (Some("GBP"), (price / Decimal::new(127, 2)).round_dp(4)),
                2 => (Some("USD"), price),
                _ => (None, price),
            }
        };
        let sym = if realistic {
            symbol_variant(&symbols[k], rng.gen_range(0..7))
        } else {
            match rng.gen_range(0..50) {
                0 => format!(" {} ", symbols[k].to_lowercase()),
                _ => symbols[k].clone(),
            }
        };
        let sym = sym.replace('\t', "\\t");
        let ts_text = match rng.gen_range(0..10) {
            0 => ts.to_string(),
            1 => format!("\"{}\"", rfc3339(ts, 1)),
            _ => format!("\"{}\"", rfc3339(ts, 0)),
        };
        let price_text = if rng.gen_bool(0.5) {
            format!("\"{price}\"")
        } else {
            price.to_string()
        };
        let cur = currency.map_or(String::new(), |c| format!(",\"currency\":\"{c}\""));
        let mut line = format!(
            "{{\"venue\":\"{}\",\"symbol\":\"{sym}\",\"ts\":{ts_text},\"price\":{price_text},\"size\":\"{size}\",\"seq\":{}{cur}}}",
            VENUES[v], seqs[v]
        );
        let bad = rng.gen_bool(args.bad_ratio);
        if bad {
            line = match rng.gen_range(0..8) {
                0 => line[..line.len() / 2].to_string(),
                1 => line.replace(&format!(",\"seq\":{}", seqs[v]), ""),
                2 => line.replace(&format!("\"price\":{price_text}"), "\"price\":\"-1\""),
                3 => line.replace(&ts_text, "\"not-a-time\""),
                4 => format!(
                    "{},\"currency\":\"{}\"}}",
                    line.trim_end_matches('}').replace(&cur, ""),
                    if realistic { "CHF" } else { "JPY" }
                ),
                5 => line.replace(&format!("\"symbol\":\"{sym}\""), "\"symbol\":\"ZZZZZZ\""),
                6 => "[\"not\",\"an\",\"object\"]".to_string(),
                _ => line.replace(&format!("\"size\":\"{size}\""), "\"size\":\"ten\""),
            };
        }
        // Spaced after the damage, which matches the compact form.
        if realistic {
            line = spaced(&line);
        }
        if !bad {
            if recent.len() < 64 {
                recent.push(line.clone());
            } else {
                let slot = rng.gen_range(0..recent.len());
                recent[slot] = line.clone();
            }
        }
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

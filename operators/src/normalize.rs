//! `normalize`: currency conversion and duplicate detection for parsed ticks.
//!
//! Parsing itself ([`crate::tick::parse_tick`]) yields `malformed`, `missing_field` and
//! `invalid_value`; [`Normalizer`] adds `unknown_currency`; [`Deduper`] drops a valid tick whose
//! `(venue, seq)` was already seen (the first wins).
//!
//! ```toml
//! [operators.normalize]
//! type = "normalize"
//! input = "ticks"
//! base_currency = "USD"
//! fx = { EUR = "1.08", GBP = "1.27" }
//! dedup_retention = "2m"
//! ```

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use tickflow_state::{
    codec, retain_once_doubled, split_u64, DeltaOp, Durable, StateError, TableDescriptor,
};

use crate::record::{DeadLetter, DeadLetterReason, RawLine, Tick};
use crate::tick::{parse_tick_at, Names};
use crate::OperatorError;

/// Largest magnitude (exclusive) of a price or size: one tick's notional (< 10^26) then
/// always fits the decimal type, and a bar's sums overflow only past 792 such ticks.
pub fn max_magnitude() -> Decimal {
    Decimal::from(10_000_000_000_000_i64)
}

/// Configuration of a `normalize` operator (besides `type` and `input`).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    /// Currency all prices are converted to; defaults to `[graph].base_currency`.
    pub base_currency: Option<String>,
    /// Conversion rates as decimal strings: one unit of the key currency is worth `rate`
    /// units of the base currency.
    #[serde(default)]
    pub fx: BTreeMap<String, String>,
    /// How long, in event time, a `(venue, seq)` key is remembered for duplicate detection.
    /// Defaults to the longest `size + allowed_lateness` of the graph's windows, so a duplicate
    /// that is no longer detected would be late anyway.
    pub dedup_retention: Option<String>,
}

/// Width of the dedup expiry buckets in memory, ms.
const EXPIRY_BUCKET_MS: u64 = 1_000;

/// The state tables a `normalize` operator keeps.
pub const TABLES: &[TableDescriptor] = &[TableDescriptor {
    name: "dedup",
    description: "(venue, seq) keys seen, with the event time they expire",
}];

/// Converts parsed ticks to the base currency.
#[derive(Debug, Clone)]
pub struct Normalizer {
    base_currency: String,
    rates: FxHashMap<String, Decimal>,
    /// The names met so far (each worker's copy keeps its own).
    names: Names,
}

impl Normalizer {
    /// Builds a normalizer; `default_base` is the graph's base currency.
    pub fn new(config: &NormalizeConfig, default_base: &str) -> Result<Self, Vec<OperatorError>> {
        let base_currency = config
            .base_currency
            .as_deref()
            .unwrap_or(default_base)
            .trim()
            .to_uppercase();
        let mut errors = Vec::new();
        if base_currency.is_empty() {
            errors.push(OperatorError::InvalidConfig {
                key: "base_currency".into(),
                message: "must not be empty".into(),
            });
        }
        let mut rates = FxHashMap::default();
        for (currency, rate) in &config.fx {
            match Decimal::from_str_exact(rate.trim()) {
                Ok(r) if r > Decimal::ZERO => {
                    rates.insert(currency.trim().to_uppercase(), r);
                }
                _ => errors.push(OperatorError::InvalidConfig {
                    key: format!("fx.{currency}"),
                    message: format!("rate {rate:?} is not a decimal > 0"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(Normalizer {
                base_currency,
                rates,
                names: Names::default(),
            })
        } else {
            Err(errors)
        }
    }

    /// The currency prices are converted to.
    pub fn base_currency(&self) -> &str {
        &self.base_currency
    }

    /// Parses and converts one raw line: a normalized tick, or a dead letter with the first
    /// reason that applies.
    pub fn normalize(&mut self, line: RawLine) -> Result<Tick, DeadLetter> {
        let RawLine {
            ordinal,
            text,
            spans,
        } = line;
        let dead = |reason, message, raw| DeadLetter {
            reason,
            message,
            ordinal,
            raw,
        };
        if let Some((offset, _)) = tickflow_state::text::invalid_utf8(&text) {
            let message = format!("not valid UTF-8 (first invalid byte at {offset})");
            return Err(dead(DeadLetterReason::Malformed, message, text));
        }
        let parsed = match parse_tick_at(&text, spans.as_ref(), &mut self.names) {
            Ok(p) => p,
            Err(r) => return Err(dead(r.reason, r.message, text)),
        };
        for (field, value) in [("price", parsed.price), ("size", parsed.size)] {
            if value.abs() >= max_magnitude() {
                return Err(dead(
                    DeadLetterReason::InvalidValue,
                    format!(
                        "`{field}` {value} is beyond 10^13, the largest value whose bar sums \
                         tickflow computes exactly"
                    ),
                    text,
                ));
            }
        }
        let price = match parsed.currency.as_deref() {
            None => parsed.price,
            Some(c) if c == self.base_currency => parsed.price,
            Some(c) => match self.rates.get(c) {
                Some(rate) => match parsed
                    .price
                    .checked_mul(*rate)
                    .filter(|p| p.abs() < max_magnitude())
                {
                    Some(p) => p.round_dp_with_strategy(8, RoundingStrategy::MidpointNearestEven),
                    None => {
                        return Err(dead(
                            DeadLetterReason::InvalidValue,
                            format!(
                                "`price` {} x rate {rate} is beyond 10^13, the largest value \
                                 whose bar sums tickflow computes exactly",
                                parsed.price
                            ),
                            text,
                        ))
                    }
                },
                None => {
                    return Err(dead(
                        DeadLetterReason::UnknownCurrency,
                        format!(
                            "no fx rate from {c} to {} in the normalize operator",
                            self.base_currency
                        ),
                        text,
                    ))
                }
            },
        };
        Ok(Tick {
            venue: parsed.venue,
            symbol: parsed.symbol,
            ts_ns: parsed.ts_ns,
            price,
            size: parsed.size,
            seq: parsed.seq,
            ordinal,
            raw: text,
        })
    }
}

/// Width of the expiry buckets dedup keys are stored in: expired buckets leave storage with
/// one range delete.
pub const DEDUP_BUCKET_MS: u64 = 10_000;

/// Remembers `(venue, seq)` keys for `retention` of event time and reports repeats.
///
/// Feed it ticks in a deterministic order and call [`Deduper::advance`] with the watermark
/// before each batch: a key seen at event time `ts` is forgotten once the watermark reaches
/// `ts + retention`.
///
/// Keys are spread over the workers by `(venue, seq)` (see [`dedup_route`]), so every worker
/// holds keys of every venue.
///
/// Stored (see [`Durable`]) as table `dedup`: key `expiry bucket ‖ checkpoint ‖ worker ‖ venue`,
/// value the `(seq, expiry)` pairs that worker first saw in that checkpoint's interval. A
/// snapshot writes only the keys added since the previous one, and drops every bucket that has
/// fully expired with one range delete. A restore, on any number of workers, takes the pairs
/// each worker now owns from every stored row.
#[derive(Debug, Clone)]
pub struct Deduper {
    retention_ms: u64,
    venue_ids: FxHashMap<String, u32>,
    venues: Vec<String>,
    seen: FxHashMap<(u32, u64), u64>,
    /// `(expiry, venue id, seq)` by expiry second: keys mostly arrive in expiry order, so a
    /// bucket is appended to and expired whole (a heap popped one key at a time cost ~7 % of a
    /// run's time).
    expiries: BTreeMap<u64, Vec<(u64, u32, u64)>>,
    /// Keys added since the last snapshot, when snapshots are taken. Keys that expire before
    /// the snapshot are pruned as the watermark passes them (see [`Deduper::advance`]), so at
    /// catch-up speed this holds about one retention's keys, not one checkpoint interval's.
    added: Option<Vec<(u32, u64, u64)>>,
    /// `added`'s length after its last pruning: it is pruned again once it has doubled.
    added_kept: usize,
    /// The worker this deduper runs on: part of its stored keys, so workers never write the
    /// same key.
    worker: u32,
}

/// The routing hash a tick's dedup key `(venue, seq)` is exchanged by, and stored keys are
/// owned by at a restore.
pub fn dedup_route(venue: &str, seq: u64) -> u64 {
    tickflow_state::route(&(venue, seq))
}

impl Deduper {
    /// A deduper keeping keys for `retention_ms` of event time.
    pub fn new(retention_ms: u64) -> Self {
        Deduper {
            retention_ms,
            venue_ids: FxHashMap::default(),
            venues: Vec::new(),
            seen: FxHashMap::default(),
            expiries: BTreeMap::new(),
            added: None,
            added_kept: 0,
            worker: 0,
        }
    }

    /// A deduper on worker `worker` that also records what it adds, for
    /// [`Durable::snapshot`].
    pub fn durable(retention_ms: u64, worker: u32) -> Self {
        Deduper {
            added: Some(Vec::new()),
            worker,
            ..Deduper::new(retention_ms)
        }
    }

    fn venue_id(&mut self, venue: &str) -> u32 {
        if let Some(id) = self.venue_ids.get(venue) {
            return *id;
        }
        let id = self.venues.len() as u32;
        self.venue_ids.insert(venue.to_string(), id);
        self.venues.push(venue.to_string());
        id
    }

    fn remember(&mut self, venue: u32, seq: u64, expiry: u64) {
        self.seen.insert((venue, seq), expiry);
        self.expiries
            .entry(expiry / EXPIRY_BUCKET_MS)
            .or_default()
            .push((expiry, venue, seq));
    }

    /// Whether this tick is the first with its `(venue, seq)`; remembers it if so.
    pub fn first_seen(&mut self, tick: &Tick) -> bool {
        let venue = self.venue_id(&tick.venue);
        if self.seen.contains_key(&(venue, tick.seq)) {
            return false;
        }
        let expiry = tick.ts_ms().saturating_add(self.retention_ms);
        self.remember(venue, tick.seq, expiry);
        if let Some(added) = self.added.as_mut() {
            added.push((venue, tick.seq, expiry));
        }
        true
    }

    /// Forgets keys whose expiry is at or before `watermark`.
    pub fn advance(&mut self, watermark: u64) {
        let seen = &mut self.seen;
        // A restored key can be listed twice (seen, expired, seen again): only the entry with
        // its current expiry removes it.
        let mut forget = |(expiry, venue, seq): (u64, u32, u64)| {
            if seen.get(&(venue, seq)) == Some(&expiry) {
                seen.remove(&(venue, seq));
            }
        };
        while let Some(mut entry) = self.expiries.first_entry() {
            let bucket = *entry.key();
            if bucket.saturating_mul(EXPIRY_BUCKET_MS) > watermark {
                break;
            }
            let last = bucket
                .saturating_mul(EXPIRY_BUCKET_MS)
                .saturating_add(EXPIRY_BUCKET_MS - 1);
            if last <= watermark {
                entry.remove().into_iter().for_each(&mut forget);
                continue;
            }
            // The watermark is inside this bucket: expire what is due, keep the rest.
            entry.get_mut().retain(|&key| {
                if key.0 <= watermark {
                    forget(key);
                    false
                } else {
                    true
                }
            });
            if entry.get().is_empty() {
                entry.remove();
            }
            break;
        }
        // A snapshot keeps only keys that expire at or after its label, and every later
        // label is past this watermark (a snapshot at label `L` is taken before the deduper
        // advances to `L`): keys expired by now would be dropped there anyway. Pruned once
        // the list has doubled since the last pruning, so each key is looked at a bounded
        // number of times.
        if let Some(added) = self.added.as_mut() {
            retain_once_doubled(added, &mut self.added_kept, |&(_, _, expiry)| {
                expiry > watermark
            });
        }
    }

    /// Number of keys currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no keys are remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

impl Durable for Deduper {
    fn snapshot(
        &mut self,
        label: u64,
        out: &mut Vec<(&'static str, DeltaOp)>,
    ) -> Result<(), StateError> {
        let Some(added) = self.added.as_mut() else {
            return Ok(());
        };
        // Every key of a bucket below `label`'s has expired at any checkpoint >= label.
        out.push((
            "dedup",
            DeltaOp::DeleteBelow {
                key: (label / DEDUP_BUCKET_MS).to_be_bytes().to_vec(),
            },
        ));
        self.added_kept = 0;
        let mut groups: BTreeMap<(u64, u32), Vec<(u64, u64)>> = BTreeMap::new();
        for (venue, seq, expiry) in added.drain(..) {
            if expiry >= label {
                groups
                    .entry((expiry / DEDUP_BUCKET_MS, venue))
                    .or_default()
                    .push((seq, expiry));
            }
        }
        for ((bucket, venue), pairs) in groups {
            let mut key = Vec::with_capacity(20 + self.venues[venue as usize].len());
            key.extend_from_slice(&bucket.to_be_bytes());
            key.extend_from_slice(&label.to_be_bytes());
            key.extend_from_slice(&self.worker.to_be_bytes());
            key.extend_from_slice(self.venues[venue as usize].as_bytes());
            let value = codec::encode(&pairs)?;
            out.push(("dedup", DeltaOp::Put { key, value }));
        }
        Ok(())
    }

    fn restore_entry(
        &mut self,
        table: &str,
        key: &[u8],
        value: &[u8],
        owns: &dyn Fn(u64) -> bool,
    ) -> Result<(), StateError> {
        if table != "dedup" {
            return Err(StateError::Corrupt(format!(
                "normalize has no table `{table}`"
            )));
        }
        let (_bucket, rest) = split_u64(key)?;
        let (_label, rest) = split_u64(rest)?;
        let venue = rest
            .get(4..)
            .ok_or_else(|| StateError::Corrupt("dedup key without its worker".into()))?;
        let venue = std::str::from_utf8(venue)
            .map_err(|_| StateError::Corrupt("dedup venue is not UTF-8".into()))?;
        let pairs: Vec<(u64, u64)> = codec::decode(value)?;
        let mine: Vec<(u64, u64)> = pairs
            .into_iter()
            .filter(|(seq, _)| owns(dedup_route(venue, *seq)))
            .collect();
        if !mine.is_empty() {
            let venue = self.venue_id(venue);
            for (seq, expiry) in mine {
                self.remember(venue, seq, expiry);
            }
        }
        Ok(())
    }

    fn finish_restore(&mut self, as_of: u64) {
        self.advance(as_of.saturating_sub(1));
    }

    fn rewrite_all(&mut self) {
        if let Some(added) = self.added.as_mut() {
            let mut all: Vec<(u32, u64, u64)> = self
                .seen
                .iter()
                .map(|(&(venue, seq), &expiry)| (venue, seq, expiry))
                .collect();
            all.sort_unstable();
            *added = all;
        }
    }

    fn entries(&self) -> u64 {
        self.seen.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Ordinal;

    fn normalizer() -> Normalizer {
        let cfg = NormalizeConfig {
            base_currency: None,
            fx: [("eur".to_string(), "1.0851".to_string())].into(),
            dedup_retention: None,
        };
        Normalizer::new(&cfg, "usd").unwrap()
    }

    /// A line as a source gives it: with the spans its event-time scan found.
    fn raw(text: &str) -> RawLine {
        RawLine {
            ordinal: Ordinal { source: 0, line: 3 },
            text: text.to_string(),
            spans: crate::tick::event_time_and_spans(text).1,
        }
    }

    const T: &str =
        r#"{"venue":"V","symbol":"X","ts":1000,"price":"1.23456789","size":"1","seq":1"#;

    #[test]
    fn converts_with_half_even_rounding_to_8_places() {
        let mut n = normalizer();
        assert_eq!(n.base_currency(), "USD");
        let t = n
            .normalize(raw(&format!("{T},\"currency\":\"EUR\"}}")))
            .unwrap();
        // 1.23456789 * 1.0851 = 1.339629617439 -> 1.33962962
        assert_eq!(t.price.to_string(), "1.33962962");
        let cfg = NormalizeConfig {
            fx: [("EUR".to_string(), "0.5".to_string())].into(),
            ..Default::default()
        };
        let mut half = Normalizer::new(&cfg, "USD").unwrap();
        // 0.000000025 is exactly halfway: rounds to even (0.00000002), 0.000000035 -> 0.00000004
        let mut p = |price: &str| {
            half.normalize(raw(&format!(
                r#"{{"venue":"V","symbol":"X","ts":1,"price":"{price}","size":"1","seq":1,"currency":"EUR"}}"#
            )))
            .unwrap()
            .price
            .to_string()
        };
        assert_eq!(p("0.00000005"), "0.00000002");
        assert_eq!(p("0.00000007"), "0.00000004");
    }

    #[test]
    fn values_beyond_exact_sums_and_bytes_that_are_not_utf8_are_dead_letters() {
        use crate::record::ToJsonLine;
        let mut n = normalizer();
        let line = |price: &str, size: &str, cur: &str| {
            raw(&format!(
                r#"{{"venue":"V","symbol":"X","ts":1,"price":"{price}","size":"{size}","seq":1{cur}}}"#
            ))
        };
        for (l, field) in [
            (line("10000000000000", "1", ""), "`price`"),
            (line("1", "79228162514264337593543950335", ""), "`size`"),
            (line("9999999999999", "1", r#","currency":"EUR""#), "rate"),
        ] {
            let d = n.normalize(l).unwrap_err();
            assert_eq!(d.reason, DeadLetterReason::InvalidValue);
            assert!(
                d.message.contains(field) && d.message.contains("10^13"),
                "{}",
                d.message
            );
        }
        assert!(n
            .normalize(line("9999999999999", "9999999999999", ""))
            .is_ok());
        let bytes = b"{\"venue\":\"V\xff\",\"symbol\":\"X\",\"ts\":1,\"price\":\"1\",\"size\":\"1\",\"seq\":1}";
        let d = n
            .normalize(RawLine {
                ordinal: Ordinal { source: 0, line: 3 },
                text: tickflow_state::text::line_text(bytes),
                spans: None,
            })
            .unwrap_err();
        assert_eq!(d.reason, DeadLetterReason::Malformed);
        assert!(d.message.contains("UTF-8"), "{}", d.message);
        let json: serde_json::Value =
            serde_json::from_str(&d.to_json_line(&["ticks".into()])).unwrap();
        assert!(json["raw"].as_str().unwrap().contains('\u{fffd}'), "{json}");
        assert!(json["raw_base64"].is_string(), "{json}");
    }

    #[test]
    fn base_currency_and_absent_currency_are_not_converted() {
        let mut n = normalizer();
        let t = n.normalize(raw(&format!("{T}}}"))).unwrap();
        assert_eq!(t.price.to_string(), "1.23456789");
        let t = n
            .normalize(raw(&format!("{T},\"currency\":\"usd\"}}")))
            .unwrap();
        assert_eq!(t.price.to_string(), "1.23456789");
    }

    #[test]
    fn unknown_currency_is_dead_lettered_with_the_raw_line() {
        let line = format!("{T},\"currency\":\"JPY\"}}");
        let dl = normalizer().normalize(raw(&line)).unwrap_err();
        assert_eq!(dl.reason, DeadLetterReason::UnknownCurrency);
        assert_eq!(dl.raw, line);
        assert_eq!(dl.ordinal.line, 3);
        assert!(dl.message.contains("JPY"));
    }

    #[test]
    fn parse_failures_keep_their_reason() {
        let dl = normalizer().normalize(raw("{")).unwrap_err();
        assert_eq!(dl.reason, DeadLetterReason::Malformed);
    }

    #[test]
    fn bad_rates_are_config_errors_naming_the_key() {
        let cfg = NormalizeConfig {
            fx: [("EUR".to_string(), "-1".to_string())].into(),
            ..Default::default()
        };
        let errs = Normalizer::new(&cfg, "USD").unwrap_err();
        assert!(errs[0].to_string().starts_with("fx.EUR:"), "{}", errs[0]);
    }

    #[test]
    fn dedup_first_wins_and_keys_expire_by_event_time() {
        let mut n = normalizer();
        let mut d = Deduper::new(60_000);
        let tick = n.normalize(raw(&format!("{T}}}"))).unwrap();
        assert!(d.first_seen(&tick));
        assert!(!d.first_seen(&tick));
        let mut other_venue = tick.clone();
        other_venue.venue = "W".into();
        assert!(d.first_seen(&other_venue));
        d.advance(60_999);
        assert!(
            !d.first_seen(&tick),
            "kept while watermark < ts + retention"
        );
        d.advance(61_000);
        assert_eq!(d.len(), 0);
        assert!(
            d.first_seen(&tick),
            "forgotten once the watermark reaches ts + retention"
        );
    }

    #[test]
    fn dedup_snapshots_restore_keys_split_by_venue_and_seq_and_drop_expired_buckets() {
        let mut n = normalizer();
        let mut tick = |venue: &str, seq: u64, ts: u64| {
            let mut t = n.normalize(raw(&format!("{T}}}"))).unwrap();
            t.venue = venue.into();
            t.seq = seq;
            t.ts_ns = ts as i64 * 1_000_000;
            t
        };
        let mut d = Deduper::durable(30_000, 0);
        let mut model = std::collections::BTreeMap::new();
        let mut save = |d: &mut Deduper, label| {
            let mut ops = vec![];
            d.snapshot(label, &mut ops).unwrap();
            for (_, op) in ops {
                op.apply(&mut model);
            }
            model.clone()
        };
        assert!(d.first_seen(&tick("V", 1, 1_000)));
        assert!(d.first_seen(&tick("W", 1, 2_000)));
        save(&mut d, 10_000);
        assert!(d.first_seen(&tick("V", 2, 45_000)));
        d.advance(40_000); // the first two expire at 31s and 32s
        let stored = save(&mut d, 50_000);
        assert_eq!(stored.len(), 1, "the expired bucket left storage");

        // Restored on two workers owning `(venue, seq)` by the route's parity: the one key
        // left goes to exactly one of them.
        let mut v = Deduper::durable(30_000, 0);
        let mut w = Deduper::durable(30_000, 1);
        for (k, val) in &stored {
            v.restore_entry("dedup", k, val, &|h| h % 2 == dedup_route("V", 2) % 2)
                .unwrap();
            w.restore_entry("dedup", k, val, &|h| h % 2 != dedup_route("V", 2) % 2)
                .unwrap();
        }
        v.finish_restore(50_000);
        w.finish_restore(50_000);
        assert_eq!((v.entries(), w.entries()), (1, 0));
        // Restored for another cluster shape: the next snapshot writes the whole share into an
        // empty store, which alone restores it.
        v.rewrite_all();
        let mut u = restored_from_snapshot(&mut v, 50_000, 2);
        assert_eq!(u.entries(), 1);
        assert!(!u.first_seen(&tick("V", 2, 45_000)), "rewritten key");
        assert!(!v.first_seen(&tick("V", 2, 45_000)), "restored key");
        assert!(
            v.first_seen(&tick("V", 1, 46_000)),
            "expired key is new again"
        );
    }

    /// A deduper on `worker` restored from `d`'s snapshot at `label` alone (written into an
    /// empty store).
    fn restored_from_snapshot(d: &mut Deduper, label: u64, worker: u32) -> Deduper {
        let mut ops = vec![];
        d.snapshot(label, &mut ops).unwrap();
        let mut stored = std::collections::BTreeMap::new();
        ops.into_iter().for_each(|(_, op)| op.apply(&mut stored));
        let mut restored = Deduper::durable(d.retention_ms, worker);
        for (k, v) in &stored {
            restored.restore_entry("dedup", k, v, &|_| true).unwrap();
        }
        restored.finish_restore(label);
        restored
    }

    #[test]
    fn keys_expired_between_snapshots_are_not_held_for_the_next_one() {
        let mut n = normalizer();
        let template = n.normalize(raw(&format!("{T}}}"))).unwrap();
        let mut d = Deduper::durable(30_000, 0);
        // 200 s of event time between two snapshots, a key per 2 ms, as in a catch-up.
        let mut longest = 0;
        for seq in 0..100_000u64 {
            let mut t = template.clone();
            t.seq = seq;
            t.ts_ns = (10_000 + 2 * seq as i64) * 1_000_000;
            d.advance(t.ts_ms().saturating_sub(1_000));
            assert!(d.first_seen(&t));
            longest = longest.max(d.added.as_ref().map_or(0, Vec::len));
        }
        // About 15,500 keys are live at any time (30 s + the 1 s lag, a key per 2 ms).
        assert!(longest < 40_000, "held {longest} keys for the snapshot");
        let restored = restored_from_snapshot(&mut d, 210_000, 0);
        d.advance(209_999);
        assert_eq!(restored.entries(), d.entries());
        assert_eq!(
            d.entries(),
            15_000,
            "keys with expiry >= 210 s: ts >= 180 s"
        );
    }
}

//! `window`: event-time OHLCV/VWAP bars over tumbling or sliding windows.
//!
//! Windows are aligned to the Unix epoch and half-open, `[start, end)`. The caller feeds ticks
//! with the watermark at which each arrived (`t`, the Timely time) and calls
//! [`WindowState::advance`] as the watermark moves:
//! - a window is emitted (revision 0) once the watermark reaches its end;
//! - a tick arriving with `end <= t < end + allowed_lateness` still counts, and its bar is
//!   emitted again with `revision + 1`;
//! - a tick with `end + allowed_lateness <= t` for every window it belongs to is late.
//!
//! ```toml
//! [operators.bars]
//! type = "window"
//! input = "enrich"
//! kind = "tumbling"        # or "sliding", with `slide`
//! size = "1m"
//! allowed_lateness = "5s"
//! ```

use std::sync::Arc;

use serde::Deserialize;
use std::collections::BTreeMap;

use tickflow_state::{codec, split_u64, DeltaOp, Durable, HashTable, StateError, TableDescriptor};

use crate::bar::{stored_id, BarAcc, InstrumentRows, StoredBar, TickOrder};
use crate::record::{Bar, EnrichedTick};
use crate::{duration_ms, OperatorError};

/// Window shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Back-to-back windows of `size`.
    #[default]
    Tumbling,
    /// Windows of `size` starting every `slide`.
    Sliding,
    /// Per instrument, a maximal run of ticks less than `gap` apart in event time.
    Session,
}

/// Configuration of a `window` operator (besides `type` and `input`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// `tumbling` (default), `sliding` or `session`.
    #[serde(default)]
    pub kind: WindowKind,
    /// Window length, e.g. `"1m"`; required for `tumbling` and `sliding`, not allowed for
    /// `session`.
    pub size: Option<String>,
    /// Distance between window starts; required for `sliding`, not allowed otherwise.
    pub slide: Option<String>,
    /// Session windows only (and required there): a session ends once its instrument has had
    /// no tick for this long in event time, e.g. `"30s"`.
    pub gap: Option<String>,
    /// How long after a window's end late ticks still update it (default `"0s"`).
    pub allowed_lateness: Option<String>,
}

/// The state tables a `window` operator keeps.
pub const TABLES: &[TableDescriptor] = &[
    TableDescriptor {
        name: "instruments",
        description: "reference rows of the instruments bars were built for, by instrument_id",
    },
    TableDescriptor {
        name: "windows",
        description: "open bars keyed by (window end, instrument_id)",
    },
];

/// A validated window shape in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Window length.
    pub size_ms: u64,
    /// Distance between window starts (equals `size_ms` for tumbling windows).
    pub slide_ms: u64,
    /// Allowed lateness after a window's end.
    pub lateness_ms: u64,
}

impl WindowSpec {
    /// Validates a config; every problem is reported, keyed by its config key.
    pub fn from_config(cfg: &WindowConfig) -> Result<Self, Vec<OperatorError>> {
        let mut errors = Vec::new();
        if cfg.size.is_none() {
            errors.push(OperatorError::InvalidConfig {
                key: "size".into(),
                message: "missing; tumbling and sliding windows need `size`".into(),
            });
        }
        if cfg.gap.is_some() {
            errors.push(OperatorError::InvalidConfig {
                key: "gap".into(),
                message: "only session windows take `gap`".into(),
            });
        }
        let mut ms = |key: &str, text: Option<&str>, default: u64, positive: bool| match text {
            None => default,
            Some(t) => match duration_ms(t) {
                Ok(0) if positive => {
                    errors.push(OperatorError::InvalidConfig {
                        key: key.into(),
                        message: "must be at least 1ms".into(),
                    });
                    default
                }
                Ok(v) => v,
                Err(message) => {
                    errors.push(OperatorError::InvalidConfig {
                        key: key.into(),
                        message,
                    });
                    default
                }
            },
        };
        let size_ms = ms("size", cfg.size.as_deref(), 1, true);
        let slide_ms = ms("slide", cfg.slide.as_deref(), size_ms, true);
        let lateness_ms = ms(
            "allowed_lateness",
            cfg.allowed_lateness.as_deref(),
            0,
            false,
        );
        match (cfg.kind, &cfg.slide) {
            (WindowKind::Session, _) => errors.push(OperatorError::InvalidConfig {
                key: "kind".into(),
                message: "session windows have no fixed shape (see `SessionSpec`)".into(),
            }),
            (WindowKind::Tumbling, Some(_)) => errors.push(OperatorError::InvalidConfig {
                key: "slide".into(),
                message: "only sliding windows take `slide`".into(),
            }),
            (WindowKind::Sliding, None) => errors.push(OperatorError::InvalidConfig {
                key: "slide".into(),
                message: "sliding windows need `slide`".into(),
            }),
            (WindowKind::Sliding, Some(_)) if slide_ms > size_ms => {
                errors.push(OperatorError::InvalidConfig {
                    key: "slide".into(),
                    message: "must not be longer than `size`".into(),
                })
            }
            _ => {}
        }
        if errors.is_empty() {
            Ok(WindowSpec {
                size_ms,
                slide_ms,
                lateness_ms,
            })
        } else {
            Err(errors)
        }
    }

    /// The windows `(start, end)` containing event time `ts_ms`, earliest first.
    pub fn windows_of(&self, ts_ms: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let last_start = ts_ms - ts_ms % self.slide_ms;
        let count = (self.size_ms - 1) / self.slide_ms + 1;
        (0..count)
            .rev()
            .filter_map(move |k| last_start.checked_sub(k * self.slide_ms))
            .map(move |start| (start, start + self.size_ms))
            .filter(move |&(_, end)| end > ts_ms)
    }
}

/// The windows ending at one end.
#[derive(Debug, Clone, Default)]
struct AtEnd {
    /// Their instruments.
    ids: Vec<Arc<str>>,
    /// Whether the watermark has passed the end (every window here is emitted).
    closed: bool,
}

/// The open windows of one `window` operator instance.
#[derive(Debug, Clone)]
pub struct WindowState {
    spec: WindowSpec,
    /// The open windows by `(end, instrument_id)`: a hash lookup per tick.
    windows: HashTable<(u64, Arc<str>), BarAcc>,
    /// The instruments with a window ending at each end, in end order: what closing looks at.
    ends: BTreeMap<u64, AtEnd>,
    /// The latest end whose windows expired since the last snapshot: they leave storage with
    /// one range delete below it.
    expired_through: Option<u64>,
    /// Instruments whose reference row is in storage (or being restored), by id.
    stored_instruments: InstrumentRows,
}

impl WindowState {
    /// Empty state for a window shape.
    pub fn new(spec: WindowSpec) -> Self {
        WindowState {
            spec,
            windows: HashTable::new(false),
            ends: BTreeMap::new(),
            expired_through: None,
            stored_instruments: Default::default(),
        }
    }

    /// Empty state that records its changes, for [`Durable::snapshot`].
    pub fn durable(spec: WindowSpec) -> Self {
        WindowState {
            spec,
            windows: HashTable::new(true),
            ends: BTreeMap::new(),
            expired_through: None,
            stored_instruments: Default::default(),
        }
    }

    /// Ends of the windows not yet emitted, earliest first.
    pub fn pending_ends(&self) -> Vec<u64> {
        self.ends
            .iter()
            .filter(|(end, at_end)| {
                at_end.ids.iter().any(|id| {
                    let key = (**end, Arc::clone(id));
                    self.windows
                        .get(&key)
                        .is_some_and(|acc| acc.emitted().is_none())
                })
            })
            .map(|(end, _)| *end)
            .collect()
    }

    /// The window shape.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Number of windows held (emitted ones stay until their lateness has passed).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no windows are held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Moves the watermark to `watermark`: emits every not-yet-emitted window whose end is at or
    /// before it (revision 0, in `(end, instrument_id)` order) and forgets every window whose
    /// `end + allowed_lateness` is at or before it.
    pub fn advance(&mut self, watermark: u64, bars: &mut Vec<Bar>) {
        let lateness = self.spec.lateness_ms;
        let due: Vec<u64> = self.ends.range(..=watermark).map(|(end, _)| *end).collect();
        for end in due {
            let expired = end.saturating_add(lateness) <= watermark;
            let Some(at_end) = self.ends.get_mut(&end) else {
                continue;
            };
            if !at_end.closed {
                // In instrument order; later windows at this end are emitted as they are made.
                at_end.ids.sort_unstable();
                at_end.ids.dedup();
                for id in &at_end.ids {
                    let key = (end, Arc::clone(id));
                    if self
                        .windows
                        .get(&key)
                        .is_some_and(|a| a.emitted().is_none())
                    {
                        if let Some(acc) = self.windows.get_mut(&key) {
                            acc.set_emitted(Some(0));
                            bars.push(acc.to_bar(end, 0));
                        }
                    }
                }
                at_end.closed = true;
            }
            if expired {
                if let Some(at_end) = self.ends.remove(&end) {
                    for id in at_end.ids {
                        self.windows.forget(&(end, id));
                    }
                    self.expired_through = self.expired_through.max(Some(end));
                }
            }
        }
    }

    /// Applies a tick that arrived at watermark `t` (call [`WindowState::advance`] with `t`
    /// first). Bars of already-closed windows it updates are pushed to `bars`; returns the tick
    /// back if it is late for every window it belongs to.
    pub fn apply(
        &mut self,
        t: u64,
        tick: EnrichedTick,
        bars: &mut Vec<Bar>,
    ) -> Option<EnrichedTick> {
        let ts = tick.tick.ts_ms();
        let lateness = self.spec.lateness_ms;
        let mut counted = false;
        let spec = self.spec;
        for (start, end) in spec.windows_of(ts) {
            if end.saturating_add(lateness) <= t {
                continue;
            }
            counted = true;
            let id = &tick.instrument.instrument_id;
            let (acc, new) = self
                .windows
                .get_or_insert((end, Arc::clone(id)), || BarAcc::new(&tick, start));
            acc.add(&tick);
            if new {
                self.ends.entry(end).or_default().ids.push(Arc::clone(id));
            }
            if end <= t {
                let revision = acc.emitted().map_or(0, |r| r + 1);
                acc.set_emitted(Some(revision));
                bars.push(acc.to_bar(end, revision));
            }
        }
        (!counted).then_some(tick)
    }
}

/// Stored as table `windows`: key `window end ‖ instrument_id` (so windows are found by end
/// with a range scan), value the bar being built; and table `instruments`: each instrument's
/// reference row once, by id. A snapshot writes the windows changed since the previous one and
/// deletes the ones forgotten.
impl Durable for WindowState {
    fn snapshot(
        &mut self,
        _label: u64,
        out: &mut Vec<(&'static str, DeltaOp)>,
    ) -> Result<(), StateError> {
        let mut failed = None;
        let key = |(end, id): &(u64, Arc<str>)| {
            let mut k = Vec::with_capacity(8 + id.len());
            k.extend_from_slice(&end.to_be_bytes());
            k.extend_from_slice(id.as_bytes());
            k
        };
        let rows = &mut self.stored_instruments;
        // Windows leave only by expiring, in end order: every window ending by the latest
        // expired end has expired, on every worker (the watermark is global), and none comes
        // back. So they leave storage with one range delete below that end instead of a
        // tombstone each (which cost a write per window in the delta and again in the fold).
        if let Some(end) = self.expired_through.take() {
            let below = end.saturating_add(1).to_be_bytes().to_vec();
            out.push(("windows", DeltaOp::DeleteBelow { key: below }));
        }
        self.windows.drain_changes(|k, acc| match acc {
            Some(acc) => {
                rows.snapshot(acc.instrument(), out, &mut failed);
                match codec::encode(&acc.stored()) {
                    Ok(value) => out.push(("windows", DeltaOp::Put { key: key(k), value })),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            None => out.push(("windows", DeltaOp::Delete { key: key(k) })),
        });
        failed.map_or(Ok(()), Err)
    }

    fn restore_entry(
        &mut self,
        table: &str,
        key: &[u8],
        value: &[u8],
        owns: &dyn Fn(u64) -> bool,
    ) -> Result<(), StateError> {
        match table {
            // Restored before `windows` (table order).
            "instruments" => self.stored_instruments.restore(key, value, owns),
            "windows" => {
                let (end, id) = split_u64(key)?;
                let id = stored_id(id)?;
                if !owns(crate::bar::instrument_route(&id)) {
                    return Ok(());
                }
                let stored: StoredBar<TickOrder> = codec::decode(value)?;
                let (id, instrument) = self.stored_instruments.row(&id, "window")?;
                self.ends.entry(end).or_default().ids.push(Arc::clone(&id));
                self.windows
                    .insert((end, id), BarAcc::from_stored(stored, instrument));
                Ok(())
            }
            _ => Err(StateError::Corrupt(format!(
                "window has no table `{table}`"
            ))),
        }
    }

    fn finish_restore(&mut self, as_of: u64) {
        // Storage holds what was just loaded; what the catch-up below changes is written by
        // the next snapshot. Windows that closed before the checkpoint were emitted before it.
        self.windows.forget_changes();
        self.advance(as_of.saturating_sub(1), &mut Vec::new());
    }

    fn rewrite_all(&mut self) {
        self.stored_instruments.forget_stored();
        self.windows.mark_all_changed();
    }

    fn entries(&self) -> u64 {
        self.windows.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Instrument, Ordinal, Tick};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn spec(size: &str, slide: Option<&str>, lateness: &str) -> WindowSpec {
        WindowSpec::from_config(&WindowConfig {
            kind: if slide.is_some() {
                WindowKind::Sliding
            } else {
                WindowKind::Tumbling
            },
            size: Some(size.into()),
            slide: slide.map(String::from),
            gap: None,
            allowed_lateness: Some(lateness.into()),
        })
        .unwrap()
    }

    fn instrument(id: &str) -> Arc<Instrument> {
        Arc::new(Instrument {
            instrument_id: id.into(),
            symbol: id.into(),
            attributes: vec![],
        })
    }

    fn tick(id: &str, ts_ms: i64, venue: &str, seq: u64, price: &str, size: &str) -> EnrichedTick {
        EnrichedTick {
            tick: Tick {
                venue: venue.into(),
                symbol: id.into(),
                ts_ns: ts_ms * 1_000_000,
                price: Decimal::from_str(price).unwrap(),
                size: Decimal::from_str(size).unwrap(),
                seq,
                ordinal: Ordinal {
                    source: 0,
                    line: seq,
                },
                raw: String::new(),
            },
            instrument: instrument(id),
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn tumbling_and_sliding_window_assignment() {
        let s = spec("1m", None, "0s");
        assert_eq!(s.windows_of(0).collect::<Vec<_>>(), vec![(0, 60_000)]);
        assert_eq!(s.windows_of(59_999).collect::<Vec<_>>(), vec![(0, 60_000)]);
        assert_eq!(
            s.windows_of(60_000).collect::<Vec<_>>(),
            vec![(60_000, 120_000)]
        );
        let s = spec("1m", Some("20s"), "0s");
        assert_eq!(
            s.windows_of(65_000).collect::<Vec<_>>(),
            vec![(20_000, 80_000), (40_000, 100_000), (60_000, 120_000)]
        );
        assert_eq!(s.windows_of(5_000).collect::<Vec<_>>(), vec![(0, 60_000)]);
    }

    #[test]
    fn config_errors_name_their_keys() {
        let bad = WindowConfig {
            kind: WindowKind::Sliding,
            size: Some("1m".into()),
            slide: Some("2m".into()),
            gap: None,
            allowed_lateness: Some("soon".into()),
        };
        let errs = WindowSpec::from_config(&bad).unwrap_err();
        let keys: Vec<String> = errs
            .iter()
            .map(|e| match e {
                OperatorError::InvalidConfig { key, .. } => key.clone(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(keys, vec!["allowed_lateness", "slide"]);
        let tumbling_with_slide = WindowConfig {
            kind: WindowKind::Tumbling,
            size: Some("0s".into()),
            slide: Some("1s".into()),
            gap: None,
            allowed_lateness: None,
        };
        assert_eq!(
            WindowSpec::from_config(&tumbling_with_slide)
                .unwrap_err()
                .len(),
            2
        );
    }

    #[test]
    fn ohlcv_vwap_and_order_independent_open_close() {
        let mut w = WindowState::new(spec("1m", None, "0s"));
        let mut bars = vec![];
        // arrival order differs from (ts, venue, seq) order
        for t in [
            tick("A", 30_000, "B", 2, "10.5", "2"),
            tick("A", 10_000, "B", 1, "10", "1"),
            tick("A", 10_000, "A", 9, "11", "1"),
            tick("A", 50_000, "A", 3, "9.5", "0"),
        ] {
            assert!(w.apply(0, t, &mut bars).is_none());
        }
        assert!(bars.is_empty());
        w.advance(59_999, &mut bars);
        assert!(
            bars.is_empty(),
            "not emitted before the watermark reaches the end"
        );
        w.advance(60_000, &mut bars);
        let b = &bars[0];
        assert_eq!((b.window_start_ms, b.window_end_ms), (0, 60_000));
        assert_eq!(
            b.open,
            d("11"),
            "smallest (ts, venue, seq) is (10000, A, 9)"
        );
        assert_eq!(b.close, d("9.5"));
        assert_eq!((b.high, b.low), (d("11"), d("9.5")));
        assert_eq!(b.volume, d("4"));
        // (10.5*2 + 10*1 + 11*1 + 9.5*0) / 4 = 42 / 4 = 10.5
        assert_eq!(b.vwap, Some(d("10.5")));
        assert_eq!((b.trades, b.revision), (4, 0));
        assert!(w.is_empty(), "no lateness: forgotten once emitted");
    }

    #[test]
    fn vwap_rounds_half_even_and_zero_volume_has_none() {
        let mut w = WindowState::new(spec("1s", None, "0s"));
        let mut bars = vec![];
        w.apply(0, tick("A", 1, "V", 1, "1", "0"), &mut bars);
        w.apply(0, tick("B", 1, "V", 2, "1", "1"), &mut bars);
        w.apply(0, tick("B", 2, "V", 3, "2", "2"), &mut bars);
        w.advance(u64::MAX, &mut bars);
        assert_eq!(bars[0].vwap, None);
        assert_eq!(bars[0].volume, Decimal::ZERO);
        // (1 + 4) / 3 = 1.666666666... -> 1.66666667
        assert_eq!(bars[1].vwap, Some(d("1.66666667")));
    }

    #[test]
    fn sums_beyond_the_decimal_type_are_reported_never_wrong() {
        use crate::record::ToJsonLine;
        let mut w = WindowState::new(spec("1s", None, "0s"));
        let mut bars = vec![];
        // 9.99e12 x 9.99e12 ~ 1e26 of notional a tick: the 800th passes 7.9e28.
        for seq in 0..800 {
            let big = "9990000000000";
            w.apply(0, tick("A", 1, "V", seq, big, big), &mut bars);
        }
        w.apply(0, tick("B", 1, "V", 900, "2", "3"), &mut bars);
        w.advance(u64::MAX, &mut bars);
        assert!(bars[0].overflow && bars[0].vwap.is_none());
        let json: serde_json::Value = serde_json::from_str(&bars[0].to_json_line(&[])).unwrap();
        assert_eq!(json["overflow"], true);
        assert!(json["volume"].is_null() && json["vwap"].is_null(), "{json}");
        assert_eq!(json["trades"], 800);
        assert!(!bars[1].overflow);
        let json: serde_json::Value = serde_json::from_str(&bars[1].to_json_line(&[])).unwrap();
        assert!(json.get("overflow").is_none(), "{json}");
        assert_eq!(json["vwap"], "2");
    }

    #[test]
    fn allowed_late_ticks_emit_revisions_then_late_ticks_are_returned() {
        let mut w = WindowState::new(spec("1m", None, "10s"));
        let mut bars = vec![];
        w.apply(0, tick("A", 1_000, "V", 1, "10", "1"), &mut bars);
        w.advance(60_000, &mut bars);
        assert_eq!(bars.len(), 1);
        assert_eq!(w.len(), 1, "kept for the allowed lateness");
        // arrives at watermark 65s, behind the end but within lateness: revision 1
        assert!(w
            .apply(65_000, tick("A", 2_000, "V", 2, "12", "1"), &mut bars)
            .is_none());
        assert_eq!(bars[1].revision, 1);
        assert_eq!(bars[1].trades, 2);
        assert_eq!(bars[1].close, d("12"));
        // a late tick for a window never seen before: emitted at once as revision 0
        assert!(w
            .apply(65_000, tick("B", 2_000, "V", 3, "5", "1"), &mut bars)
            .is_none());
        assert_eq!(
            (&*bars[2].instrument.instrument_id, bars[2].revision),
            ("B", 0)
        );
        w.advance(70_000, &mut bars);
        assert_eq!(bars.len(), 3, "no re-emission when forgotten");
        assert!(w.is_empty());
        // end + lateness <= watermark: late
        let late = w.apply(70_000, tick("A", 3_000, "V", 4, "1", "1"), &mut bars);
        assert_eq!(late.map(|t| t.tick.seq), Some(4));
    }

    #[test]
    fn sliding_tick_counts_in_still_open_windows() {
        let mut w = WindowState::new(spec("1m", Some("30s"), "0s"));
        let mut bars = vec![];
        // ts 45s belongs to [0,60s) and [30s,90s); at watermark 60s only the second is open
        assert!(w
            .apply(60_000, tick("A", 45_000, "V", 1, "1", "1"), &mut bars)
            .is_none());
        assert!(bars.is_empty());
        w.advance(u64::MAX, &mut bars);
        assert_eq!(bars.len(), 1);
        assert_eq!(bars[0].window_start_ms, 30_000);
        let late = w.apply(90_000, tick("A", 45_000, "V", 2, "1", "1"), &mut bars);
        assert!(late.is_some());
    }

    type Model =
        std::collections::BTreeMap<&'static str, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>;

    /// What storage holds after applying snapshot ops, as the store does.
    fn store(model: &mut Model, ops: Vec<(&'static str, DeltaOp)>) {
        for (table, op) in ops {
            op.apply(model.entry(table).or_default());
        }
    }

    #[test]
    fn snapshots_restore_the_same_windows_split_by_owner() {
        let s = spec("1m", None, "10s");
        let mut w = WindowState::durable(s);
        let mut bars = vec![];
        let mut model = Model::new();
        w.apply(1_000, tick("A", 1_000, "V", 1, "10", "1"), &mut bars);
        w.apply(1_000, tick("B", 2_000, "V", 2, "20", "2"), &mut bars);
        let mut ops = vec![];
        w.snapshot(10_000, &mut ops).unwrap();
        assert_eq!(ops.len(), 4, "two windows and two instruments");
        store(&mut model, ops);
        w.apply(61_000, tick("A", 61_000, "V", 3, "11", "1"), &mut bars);
        w.advance(75_000, &mut bars); // [0,60s) of A and B emitted and forgotten
        let mut ops = vec![];
        w.snapshot(80_000, &mut ops).unwrap();
        // The expired windows leave with one range delete below the latest expired end.
        let deletes: Vec<_> = ops
            .iter()
            .filter(|(_, op)| !matches!(op, DeltaOp::Put { .. }))
            .map(|(_, op)| op)
            .collect();
        assert_eq!(
            deletes,
            vec![&DeltaOp::DeleteBelow {
                key: 60_001u64.to_be_bytes().to_vec()
            }]
        );
        assert!(
            ops.iter().all(|(t, _)| *t == "windows"),
            "instruments are stored once"
        );
        store(&mut model, ops);
        assert_eq!(model["windows"].len(), 1, "forgotten windows leave storage");

        // Restored on two workers, each takes its own instruments only.
        let mut a = WindowState::durable(s);
        let mut b = WindowState::durable(s);
        for table in TABLES {
            for (k, v) in &model[table.name] {
                a.restore_entry(table.name, k, v, &|h| {
                    h == crate::bar::instrument_route("A")
                })
                .unwrap();
                b.restore_entry(table.name, k, v, &|h| {
                    h == crate::bar::instrument_route("B")
                })
                .unwrap();
            }
        }
        a.finish_restore(80_000);
        b.finish_restore(80_000);
        assert_eq!((a.entries(), b.entries()), (1, 0));
        // Restored for another cluster shape, `a` writes its whole share into an empty store,
        // with the rows its windows need; that store alone restores the same window.
        a.rewrite_all();
        let mut ops = vec![];
        a.snapshot(90_000, &mut ops).unwrap();
        let mut own = Model::new();
        store(&mut own, ops);
        assert_eq!(own["windows"], model["windows"]);
        assert_eq!(own["instruments"].len(), 1, "only A's row");
        let mut again = vec![];
        a.snapshot(100_000, &mut again).unwrap();
        assert!(again.is_empty(), "written once");
        // The restored window continues exactly like the original.
        let (mut x, mut y) = (vec![], vec![]);
        w.apply(90_000, tick("A", 62_000, "W", 4, "9", "1"), &mut x);
        a.apply(90_000, tick("A", 62_000, "W", 4, "9", "1"), &mut y);
        w.advance(130_000, &mut x);
        a.advance(130_000, &mut y);
        assert_eq!(format!("{x:?}"), format!("{y:?}"));
        assert!(a.restore_entry("dedup", b"", b"", &|_| true).is_err());
    }
}

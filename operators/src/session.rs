//! Session windows (`window` with `kind = "session"`): per instrument, a session is a maximal
//! run of its ticks less than `gap` apart in event time.
//!
//! A session's bar has `window_start` = its first tick's time and `window_end` = its last
//! tick's time + `gap`; it is emitted once the watermark reaches `window_end`. The caller feeds
//! ticks with the watermark `t` at which each arrived:
//! - a tick with `ts + gap + allowed_lateness <= t` is late (returned to the caller);
//! - otherwise it joins the session it is within `gap` of, or starts one, or bridges two,
//!   which merge into the earlier. A session changed after it was emitted is emitted again
//!   with `revision + 1` (at once if its end has passed, else when the watermark reaches it);
//!   a merged-away session that was emitted is emitted once more with `retracted = true`
//!   (its revision + 1), and so is an emitted session whose start moved earlier (its bar now
//!   stands under the new start).
//!
//! ```toml
//! [operators.sessions]
//! type = "window"
//! input = "enrich"
//! kind = "session"
//! gap = "30s"
//! allowed_lateness = "10s"
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tickflow_state::{codec, split_u64, DeltaOp, Durable, StateError, Table, TableDescriptor};

use crate::bar::{stored_id, BarAcc, InstrumentRows, StoredBar, TickOrder};
use crate::record::{Bar, EnrichedTick};
use crate::window::{WindowConfig, WindowKind};
use crate::{duration_ms, OperatorError};

/// The state tables a session `window` keeps.
pub const TABLES: &[TableDescriptor] = &[
    TableDescriptor {
        name: "instruments",
        description: "reference rows of the instruments sessions were built for, by instrument_id",
    },
    TableDescriptor {
        name: "sessions",
        description: "sessions still open to late ticks, keyed by (start, instrument_id)",
    },
];

/// A validated session shape in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSpec {
    /// Ticks less than this apart belong to one session.
    pub gap_ms: u64,
    /// Allowed lateness after a session's end.
    pub lateness_ms: u64,
}

impl SessionSpec {
    /// Validates a `kind = "session"` config; every problem is reported by its key.
    pub fn from_config(cfg: &WindowConfig) -> Result<Self, Vec<OperatorError>> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, message: String| {
            errors.push(OperatorError::InvalidConfig {
                key: key.into(),
                message,
            })
        };
        if cfg.kind != WindowKind::Session {
            bad("kind", "must be \"session\"".into());
        }
        for (key, given) in [("size", cfg.size.is_some()), ("slide", cfg.slide.is_some())] {
            if given {
                bad(key, format!("session windows take `gap`, not `{key}`"));
            }
        }
        let gap_ms = match cfg.gap.as_deref().map(duration_ms) {
            None => {
                bad("gap", "missing; session windows need `gap`".into());
                1
            }
            Some(Ok(0)) => {
                bad("gap", "must be at least 1ms".into());
                1
            }
            Some(Ok(ms)) => ms,
            Some(Err(message)) => {
                bad("gap", message);
                1
            }
        };
        let lateness_ms = match cfg.allowed_lateness.as_deref().map(duration_ms) {
            None => 0,
            Some(Ok(ms)) => ms,
            Some(Err(message)) => {
                bad("allowed_lateness", message);
                0
            }
        };
        if errors.is_empty() {
            Ok(SessionSpec {
                gap_ms,
                lateness_ms,
            })
        } else {
            Err(errors)
        }
    }
}

/// One session being built.
#[derive(Debug, Clone)]
struct Session {
    acc: BarAcc,
    /// Time of its last tick, ms.
    last_ms: u64,
    /// Changed since it was last emitted (or never emitted).
    dirty: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredSession<O> {
    bar: StoredBar<O>,
    last_ms: u64,
    dirty: bool,
}

type Key = (Arc<str>, u64);

/// The sessions of one session-window operator instance.
#[derive(Debug, Clone)]
pub struct SessionState {
    spec: SessionSpec,
    /// By `(instrument_id, start)`.
    sessions: Table<Key, Session>,
    /// `(end, instrument_id, start)` of sessions waiting to be emitted.
    pending: BTreeSet<(u64, Arc<str>, u64)>,
    /// `(end + gap + allowed_lateness, instrument_id, start)`: when a session can no longer
    /// change and is forgotten.
    expiry: BTreeSet<(u64, Arc<str>, u64)>,
    stored_instruments: InstrumentRows,
}

impl SessionState {
    /// Empty state.
    pub fn new(spec: SessionSpec) -> Self {
        Self::with_tracking(spec, false)
    }

    /// Empty state that records its changes, for [`Durable::snapshot`].
    pub fn durable(spec: SessionSpec) -> Self {
        Self::with_tracking(spec, true)
    }

    fn with_tracking(spec: SessionSpec, track: bool) -> Self {
        SessionState {
            spec,
            sessions: Table::new(track),
            pending: BTreeSet::new(),
            expiry: BTreeSet::new(),
            stored_instruments: InstrumentRows::default(),
        }
    }

    /// The session shape.
    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }

    /// Sessions held (emitted ones stay until no tick can change them).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn end(&self, s: &Session) -> u64 {
        s.last_ms.saturating_add(self.spec.gap_ms)
    }

    fn expires(&self, s: &Session) -> u64 {
        self.end(s)
            .saturating_add(self.spec.gap_ms)
            .saturating_add(self.spec.lateness_ms)
    }

    /// Takes a session out of the table and the indexes.
    fn take(&mut self, key: &Key) -> Option<Session> {
        let s = self.sessions.remove(key)?;
        let (id, start) = key.clone();
        self.pending.remove(&(self.end(&s), Arc::clone(&id), start));
        self.expiry.remove(&(self.expires(&s), id, start));
        Some(s)
    }

    /// Puts a session back, indexed.
    fn put(&mut self, id: Arc<str>, s: Session) {
        let start = s.acc.start_ms();
        if s.dirty {
            self.pending.insert((self.end(&s), Arc::clone(&id), start));
        }
        self.expiry
            .insert((self.expires(&s), Arc::clone(&id), start));
        self.sessions.insert((id, start), s);
    }

    /// The ends of sessions waiting to be emitted, earliest first.
    pub fn pending_ends(&self) -> Vec<u64> {
        let mut ends: Vec<u64> = self.pending.iter().map(|(end, _, _)| *end).collect();
        ends.dedup();
        ends
    }

    fn emit(&self, s: &mut Session, bars: &mut Vec<Bar>) {
        let revision = s.acc.emitted().map_or(0, |r| r + 1);
        s.acc.set_emitted(Some(revision));
        s.dirty = false;
        bars.push(s.acc.to_bar(self.end(s), revision));
    }

    fn retract(&self, s: &Session, bars: &mut Vec<Bar>) {
        if let Some(r) = s.acc.emitted() {
            let mut bar = s.acc.to_bar(self.end(s), r + 1);
            bar.retracted = true;
            bars.push(bar);
        }
    }

    /// Moves the watermark to `watermark`: emits every waiting session whose end is at or
    /// before it and forgets every session no tick can change any more.
    pub fn advance(&mut self, watermark: u64, bars: &mut Vec<Bar>) {
        while let Some((end, id, start)) = self.pending.first().cloned() {
            if end > watermark {
                break;
            }
            self.pending.pop_first();
            let key = (id, start);
            if let Some(mut s) = self.sessions.get(&key).cloned() {
                self.emit(&mut s, bars);
                self.sessions.insert(key, s);
            }
        }
        while let Some((at, id, start)) = self.expiry.first().cloned() {
            if at > watermark {
                break;
            }
            self.expiry.pop_first();
            self.sessions.remove(&(id, start));
        }
    }

    /// Applies a tick that arrived at watermark `t` (call [`SessionState::advance`] with `t`
    /// first). Revisions and retractions of emitted sessions go to `bars`; the end of the
    /// session the tick is now in goes to `ends`. Returns the tick if it is late.
    pub fn apply(
        &mut self,
        t: u64,
        tick: EnrichedTick,
        bars: &mut Vec<Bar>,
        ends: &mut Vec<u64>,
    ) -> Option<EnrichedTick> {
        let ts = tick.tick.ts_ms();
        let gap = self.spec.gap_ms;
        if ts.saturating_add(gap).saturating_add(self.spec.lateness_ms) <= t {
            return Some(tick);
        }
        let id = Arc::clone(&tick.instrument.instrument_id);
        // Sessions of this instrument the tick is within `gap` of: start < ts + gap and
        // last + gap > ts. Sessions are more than `gap` apart, so there are at most two.
        let touching: Vec<Key> = self
            .sessions
            .range((Arc::clone(&id), 0)..(Arc::clone(&id), ts.saturating_add(gap)))
            .filter(|(_, s)| s.last_ms.saturating_add(gap) > ts)
            .map(|(k, _)| k.clone())
            .collect();
        let mut taken: Vec<Session> = touching.iter().filter_map(|k| self.take(k)).collect();
        let mut session = match taken.len() {
            0 => Session {
                acc: BarAcc::new(&tick, ts),
                last_ms: ts,
                dirty: true,
            },
            _ => {
                let mut first = taken.remove(0);
                for other in taken {
                    // Merged away: its bar no longer stands.
                    self.retract(&other, bars);
                    first.acc.merge(&other.acc);
                    first.last_ms = first.last_ms.max(other.last_ms);
                }
                if ts < first.acc.start_ms() {
                    // Its bar moves to a new start: the one under the old start no longer stands.
                    self.retract(&first, bars);
                    first.acc.set_start(ts);
                }
                first.dirty = true;
                first
            }
        };
        session.acc.add(&tick);
        session.last_ms = session.last_ms.max(ts);
        let end = self.end(&session);
        if end <= t {
            self.emit(&mut session, bars);
        } else {
            ends.push(end);
        }
        self.put(id, session);
        None
    }
}

/// Stored as table `sessions`: key `start ‖ instrument_id`, value the bar being built with its
/// last tick time and whether it waits to be emitted; and table `instruments`, as windows do.
impl Durable for SessionState {
    fn snapshot(
        &mut self,
        _label: u64,
        out: &mut Vec<(&'static str, DeltaOp)>,
    ) -> Result<(), StateError> {
        let mut failed = None;
        let key = |(id, start): &Key| {
            let mut k = Vec::with_capacity(8 + id.len());
            k.extend_from_slice(&start.to_be_bytes());
            k.extend_from_slice(id.as_bytes());
            k
        };
        let rows = &mut self.stored_instruments;
        self.sessions.drain_changes(|k, s| match s {
            Some(s) => {
                rows.snapshot(s.acc.instrument(), out, &mut failed);
                let stored_session = StoredSession {
                    bar: s.acc.stored(),
                    last_ms: s.last_ms,
                    dirty: s.dirty,
                };
                match codec::encode(&stored_session) {
                    Ok(value) => out.push(("sessions", DeltaOp::Put { key: key(k), value })),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            None => out.push(("sessions", DeltaOp::Delete { key: key(k) })),
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
            // Restored before `sessions` (table order).
            "instruments" => self.stored_instruments.restore(key, value, owns),
            "sessions" => {
                let (_start, id) = split_u64(key)?;
                let id = stored_id(id)?;
                if !owns(crate::bar::instrument_route(&id)) {
                    return Ok(());
                }
                let stored: StoredSession<TickOrder> = codec::decode(value)?;
                let (id, instrument) = self.stored_instruments.row(&id, "session")?;
                let session = Session {
                    acc: BarAcc::from_stored(stored.bar, instrument),
                    last_ms: stored.last_ms,
                    dirty: stored.dirty,
                };
                self.put(id, session);
                Ok(())
            }
            _ => Err(StateError::Corrupt(format!(
                "session window has no table `{table}`"
            ))),
        }
    }

    fn finish_restore(&mut self, as_of: u64) {
        // Storage holds what was just loaded; sessions emitted before the checkpoint were
        // emitted then, and what the catch-up changes is written by the next snapshot.
        self.sessions.forget_changes();
        self.advance(as_of.saturating_sub(1), &mut Vec::new());
    }

    fn rewrite_all(&mut self) {
        self.stored_instruments.forget_stored();
        self.sessions.mark_all_changed();
    }

    fn entries(&self) -> u64 {
        self.sessions.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Instrument, Ordinal, Tick};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const GAP: u64 = 10_000;

    fn spec(lateness_ms: u64) -> SessionSpec {
        SessionSpec {
            gap_ms: GAP,
            lateness_ms,
        }
    }

    fn tick(id: &str, ts_ms: u64, seq: u64, price: &str) -> EnrichedTick {
        EnrichedTick {
            tick: Tick {
                venue: "X".into(),
                symbol: id.into(),
                ts_ns: ts_ms as i64 * 1_000_000,
                price: Decimal::from_str(price).unwrap(),
                size: Decimal::ONE,
                seq,
                ordinal: Ordinal {
                    source: 0,
                    line: seq,
                },
                raw: String::new(),
            },
            instrument: Arc::new(Instrument {
                instrument_id: id.into(),
                symbol: id.into(),
                attributes: vec![],
            }),
        }
    }

    /// `(start, end, trades, revision, retracted)` of each bar.
    fn shape(bars: &[Bar]) -> Vec<(u64, u64, u64, u32, bool)> {
        bars.iter()
            .map(|b| {
                (
                    b.window_start_ms,
                    b.window_end_ms,
                    b.trades,
                    b.revision,
                    b.retracted,
                )
            })
            .collect()
    }

    #[test]
    fn sessions_split_at_the_gap_and_close_when_the_watermark_passes_their_end() {
        let mut s = SessionState::new(spec(0));
        let (mut bars, mut ends) = (Vec::new(), Vec::new());
        for (seq, ts) in [(1, 0), (2, 9_999), (3, 19_999)] {
            assert!(s
                .apply(0, tick("A", ts, seq, "1"), &mut bars, &mut ends)
                .is_none());
        }
        // 19_999 - 9_999 = gap: a new session.
        s.apply(0, tick("A", 30_000, 4, "1"), &mut bars, &mut ends);
        assert_eq!(s.pending_ends(), vec![19_999, 29_999, 40_000]);
        s.advance(19_998, &mut bars);
        assert!(bars.is_empty());
        s.advance(29_999, &mut bars);
        assert_eq!(
            shape(&bars),
            vec![(0, 19_999, 2, 0, false), (19_999, 29_999, 1, 0, false)]
        );
    }

    #[test]
    fn allowed_late_ticks_extend_merge_and_retract() {
        let mut s = SessionState::durable(spec(60_000));
        let (mut bars, mut ends) = (Vec::new(), Vec::new());
        s.apply(0, tick("A", 0, 1, "1"), &mut bars, &mut ends);
        s.apply(0, tick("A", 15_000, 2, "2"), &mut bars, &mut ends);
        s.advance(25_000, &mut bars);
        assert_eq!(
            shape(&bars),
            vec![(0, 10_000, 1, 0, false), (15_000, 25_000, 1, 0, false)]
        );
        bars.clear();
        // 8s is within the gap of both (8 < 0 + 10 and 8 + 10 > 15): it bridges them, so the
        // second is retracted and the first revised.
        s.apply(30_000, tick("A", 8_000, 3, "3"), &mut bars, &mut ends);
        assert_eq!(
            shape(&bars),
            vec![(15_000, 25_000, 1, 1, true), (0, 25_000, 3, 1, false)]
        );
        bars.clear();
        // Late beyond gap + allowed lateness: returned.
        assert!(s
            .apply(80_000, tick("A", 9_000, 4, "4"), &mut bars, &mut ends)
            .is_some());
        // A tick before the start moves it: the bar under the old start is retracted.
        let mut s2 = SessionState::new(spec(60_000));
        s2.apply(0, tick("B", 20_000, 1, "1"), &mut bars, &mut ends);
        s2.advance(30_000, &mut bars);
        bars.clear();
        s2.apply(40_000, tick("B", 12_000, 2, "2"), &mut bars, &mut ends);
        assert_eq!(
            shape(&bars),
            vec![(20_000, 30_000, 1, 1, true), (12_000, 30_000, 2, 1, false)]
        );
    }

    #[test]
    fn snapshots_restore_the_same_sessions_split_by_owner() {
        let mut s = SessionState::durable(spec(60_000));
        let (mut bars, mut ends) = (Vec::new(), Vec::new());
        for (seq, (id, ts)) in [("A", 0), ("B", 5_000), ("A", 30_000)]
            .into_iter()
            .enumerate()
        {
            s.apply(0, tick(id, ts, seq as u64, "1"), &mut bars, &mut ends);
        }
        s.advance(20_000, &mut bars);
        let mut ops = Vec::new();
        s.snapshot(20_000, &mut ops).unwrap();
        let mut restored = SessionState::durable(spec(60_000));
        for table in ["instruments", "sessions"] {
            for (t, op) in &ops {
                if let (true, DeltaOp::Put { key, value }) = (*t == table, op) {
                    restored
                        .restore_entry(table, key, value, &|h| {
                            h == crate::bar::instrument_route("A")
                        })
                        .unwrap();
                }
            }
        }
        restored.finish_restore(20_000);
        assert_eq!(restored.len(), 2, "A's two sessions, not B's");
        assert_eq!(restored.pending_ends(), vec![40_000]);
        let mut later = Vec::new();
        restored.advance(40_000, &mut later);
        assert_eq!(shape(&later), vec![(30_000, 40_000, 1, 0, false)]);
    }
}

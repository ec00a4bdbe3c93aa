//! Routing by key share: during a canary rollout the production sinks read both versions'
//! outputs, and each record passes from exactly one of them, the one that owns its key at its
//! event time under the rollout's schedule (see [`crate::canary`]).
//!
//! A record's key is its instrument (a bar's `instrument_id`, a tick's symbol). Its time is the
//! bar's `window_start` or the tick's event time: every revision of a window is owned by the
//! version that owned the window when the schedule changed, because a step never starts before
//! what the run had reached (windows starting later were never emitted). A session window
//! keeps its start as allowed-late ticks extend its end, and a merge keeps the earlier
//! session's start: all of a session's revisions, and the retraction of one merged away, come
//! from the version that emitted its first revision. Records with neither an
//! instrument nor an event time (dead letters, raw records) come from the current version until
//! the promotion: which of them a restarted run writes again must not depend on the step.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tickflow_operators::record::{Bar, DeadLetter, EnrichedTick, RawLine, Tick};
use timely::dataflow::operators::vec::Filter;

use super::streams::AnyStream;

/// Shares are in basis points: 10,000 is every key.
pub const ALL_KEYS: u32 = 10_000;

/// From event time `from_ms` on, keys whose [`key_slot`] is below `share` (basis points)
/// belong to the canary version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShareStep {
    /// Event time (ms) the share applies from.
    pub from_ms: u64,
    /// Basis points of the keys that the canary owns.
    pub share: u32,
}

/// Which version a record of a production sink comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The version that was in production when the rollout began.
    Current,
    /// The version being rolled out.
    Canary,
}

/// A production sink's routing: its inputs from `canary_from` on are the canary version's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The index of the sink's first input that is the canary version's.
    pub canary_from: usize,
    /// The schedule, by `from_ms`, ascending; before the first step the canary owns nothing.
    pub schedule: Arc<Vec<ShareStep>>,
    /// The longest time a window's results may still change (size + allowed lateness) in
    /// either version: how long the divergence waits for the other version's bar.
    pub horizon_ms: u64,
}

/// A key's slot in `0..ALL_KEYS`: a stable hash (FNV-1a, the same on every machine and
/// release), so that a key's owner never depends on the process.
pub fn key_slot(key: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(ALL_KEYS)) as u32
}

/// The canary's share at event time `time_ms` (`None`: no event time, none).
pub fn share_at(schedule: &[ShareStep], time_ms: Option<u64>) -> u32 {
    let Some(t) = time_ms else { return 0 };
    schedule
        .iter()
        .rev()
        .find(|s| s.from_ms <= t)
        .map_or(0, |s| s.share)
}

/// The version that owns `key` at `time_ms`.
pub fn owner(schedule: &[ShareStep], key: &str, time_ms: Option<u64>) -> Lane {
    if key_slot(key) < share_at(schedule, time_ms) {
        Lane::Canary
    } else {
        Lane::Current
    }
}

/// What a record is routed by: its key and event time.
trait Routed {
    fn route_key(&self) -> (&str, Option<u64>);
}

impl Routed for Bar {
    fn route_key(&self) -> (&str, Option<u64>) {
        (&self.instrument.instrument_id, Some(self.window_start_ms))
    }
}

impl Routed for Tick {
    fn route_key(&self) -> (&str, Option<u64>) {
        (&self.symbol, Some(self.ts_ms()))
    }
}

impl Routed for EnrichedTick {
    fn route_key(&self) -> (&str, Option<u64>) {
        (&self.instrument.instrument_id, Some(self.tick.ts_ms()))
    }
}

impl Routed for DeadLetter {
    fn route_key(&self) -> (&str, Option<u64>) {
        (&self.raw, None)
    }
}

impl Routed for RawLine {
    fn route_key(&self) -> (&str, Option<u64>) {
        (&self.text, None)
    }
}

/// `stream` with only the records `lane` owns under `schedule`.
pub fn keep<'s>(
    stream: AnyStream<'s>,
    lane: Lane,
    schedule: &Arc<Vec<ShareStep>>,
) -> AnyStream<'s> {
    fn only<'s, D: Routed + Clone + 'static>(
        s: super::S<'s, D>,
        lane: Lane,
        schedule: &Arc<Vec<ShareStep>>,
    ) -> super::S<'s, D> {
        let schedule = Arc::clone(schedule);
        s.filter(move |r| {
            let (key, time) = r.route_key();
            owner(&schedule, key, time) == lane
        })
    }
    match stream {
        AnyStream::Raw(s) => AnyStream::Raw(only(s, lane, schedule)),
        AnyStream::Tick(s) => AnyStream::Tick(only(s, lane, schedule)),
        AnyStream::Enriched(s) => AnyStream::Enriched(only(s, lane, schedule)),
        AnyStream::Bar(s) => AnyStream::Bar(only(s, lane, schedule)),
        AnyStream::DeadLetter(s) => AnyStream::DeadLetter(only(s, lane, schedule)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_grow_by_time_and_keys_move_once() {
        let schedule = vec![
            ShareStep {
                from_ms: 100,
                share: 1_000,
            },
            ShareStep {
                from_ms: 200,
                share: 5_000,
            },
        ];
        assert_eq!(share_at(&schedule, Some(99)), 0);
        assert_eq!(share_at(&schedule, Some(100)), 1_000);
        assert_eq!(share_at(&schedule, Some(250)), 5_000);
        assert_eq!(share_at(&schedule, None), 0);
        assert_eq!(owner(&schedule, "a dead letter", None), Lane::Current);
        // About the share of many keys, and a key the canary owns keeps it as shares grow.
        let keys: Vec<String> = (0..10_000).map(|i| format!("INST{i}")).collect();
        let at = |t| {
            keys.iter()
                .filter(|k| owner(&schedule, k, Some(t)) == Lane::Canary)
                .count()
        };
        assert!((800..1_200).contains(&at(150)), "{}", at(150));
        assert!((4_600..5_400).contains(&at(250)), "{}", at(250));
        for k in &keys {
            if owner(&schedule, k, Some(150)) == Lane::Canary {
                assert_eq!(owner(&schedule, k, Some(250)), Lane::Canary);
            }
        }
        assert_eq!(key_slot("EURUSD"), key_slot("EURUSD"));
    }

    #[test]
    fn every_revision_of_a_session_has_its_first_revisions_owner() {
        use rust_decimal::Decimal;
        use tickflow_operators::record::Instrument;
        let bar = |id: &str, end: u64, revision: u32| Bar {
            instrument: Arc::new(Instrument {
                instrument_id: id.into(),
                symbol: id.to_lowercase(),
                attributes: Vec::new(),
            }),
            window_start_ms: 1_000,
            window_end_ms: end,
            open: Decimal::ONE,
            high: Decimal::ONE,
            low: Decimal::ONE,
            close: Decimal::ONE,
            volume: Decimal::ONE,
            vwap: None,
            trades: 1,
            revision,
            overflow: false,
            retracted: false,
        };
        // Every key to the canary from 1,500 on: a session from 1,000 that an allowed-late tick
        // extends past 1,500 stays with the current version.
        let schedule = [ShareStep {
            from_ms: 1_500,
            share: ALL_KEYS,
        }];
        for id in ["A", "B", "C"] {
            for (end, revision) in [(1_400, 0), (1_600, 1), (9_000, 2)] {
                let bar = bar(id, end, revision);
                let (key, time) = bar.route_key();
                assert_eq!(owner(&schedule, key, time), Lane::Current);
            }
        }
    }
}

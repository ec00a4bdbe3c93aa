//! One bar being built, shared by fixed and session windows: its accumulator, its stored
//! form, and the `instruments` table both keep (each instrument's reference row once).

use rustc_hash::FxHashMap;
use std::sync::Arc;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use tickflow_state::{codec, DeltaOp, StateError};

use crate::record::{Bar, EnrichedTick, Instrument};

/// `(ts_ns, venue, seq)`: the order that picks a bar's open and close.
pub(crate) type TickOrder = (i64, Arc<str>, u64);

/// A bar being built as stored: decimals in their 16-byte binary form, the instrument apart
/// (table `instruments`, once per instrument).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredBar<O> {
    start_ms: u64,
    open: (O, [u8; 16]),
    close: (O, [u8; 16]),
    high: [u8; 16],
    low: [u8; 16],
    volume: [u8; 16],
    notional: [u8; 16],
    trades: u64,
    emitted: Option<u32>,
}

/// One bar being built.
#[derive(Debug, Clone)]
pub struct BarAcc {
    instrument: Arc<Instrument>,
    start_ms: u64,
    open: (TickOrder, Decimal),
    close: (TickOrder, Decimal),
    high: Decimal,
    low: Decimal,
    volume: Decimal,
    notional: Decimal,
    trades: u64,
    /// Revision last emitted, if any.
    emitted: Option<u32>,
}

impl BarAcc {
    pub(crate) fn stored(&self) -> StoredBar<&TickOrder> {
        StoredBar {
            start_ms: self.start_ms,
            open: (&self.open.0, self.open.1.serialize()),
            close: (&self.close.0, self.close.1.serialize()),
            high: self.high.serialize(),
            low: self.low.serialize(),
            volume: self.volume.serialize(),
            notional: self.notional.serialize(),
            trades: self.trades,
            emitted: self.emitted,
        }
    }

    pub(crate) fn from_stored(s: StoredBar<TickOrder>, instrument: Arc<Instrument>) -> Self {
        BarAcc {
            instrument,
            start_ms: s.start_ms,
            open: (s.open.0, Decimal::deserialize(s.open.1)),
            close: (s.close.0, Decimal::deserialize(s.close.1)),
            high: Decimal::deserialize(s.high),
            low: Decimal::deserialize(s.low),
            volume: Decimal::deserialize(s.volume),
            notional: Decimal::deserialize(s.notional),
            trades: s.trades,
            emitted: s.emitted,
        }
    }

    pub(crate) fn new(tick: &EnrichedTick, start_ms: u64) -> Self {
        let t = &tick.tick;
        let order = (t.ts_ns, t.venue.clone(), t.seq);
        BarAcc {
            instrument: Arc::clone(&tick.instrument),
            start_ms,
            open: (order.clone(), t.price),
            close: (order, t.price),
            high: t.price,
            low: t.price,
            volume: Decimal::ZERO,
            notional: Decimal::ZERO,
            trades: 0,
            emitted: None,
        }
    }

    pub(crate) fn add(&mut self, tick: &EnrichedTick) {
        let t = &tick.tick;
        let before_open =
            (t.ts_ns, &*t.venue, t.seq) < (self.open.0 .0, &*self.open.0 .1, self.open.0 .2);
        let after_close =
            (t.ts_ns, &*t.venue, t.seq) > (self.close.0 .0, &*self.close.0 .1, self.close.0 .2);
        if before_open {
            self.open = ((t.ts_ns, t.venue.clone(), t.seq), t.price);
        }
        if after_close {
            self.close = ((t.ts_ns, t.venue.clone(), t.seq), t.price);
        }
        if t.price > self.high {
            self.high = t.price;
        }
        if t.price < self.low {
            self.low = t.price;
        }
        // Normalize bounds price and size (below 10^13 each), so one tick's notional fits;
        // sums beyond the decimal type saturate at MAX, which the bar reports as an overflow.
        self.volume = self.volume.checked_add(t.size).unwrap_or(Decimal::MAX);
        let notional = t.price.checked_mul(t.size).unwrap_or(Decimal::MAX);
        self.notional = self.notional.checked_add(notional).unwrap_or(Decimal::MAX);
        self.trades += 1;
    }

    /// Folds another bar of the same instrument into this one (a session merge).
    pub(crate) fn merge(&mut self, other: &BarAcc) {
        if other.open.0 < self.open.0 {
            self.open = other.open.clone();
        }
        if other.close.0 > self.close.0 {
            self.close = other.close.clone();
        }
        self.high = self.high.max(other.high);
        self.low = self.low.min(other.low);
        self.volume = self
            .volume
            .checked_add(other.volume)
            .unwrap_or(Decimal::MAX);
        self.notional = self
            .notional
            .checked_add(other.notional)
            .unwrap_or(Decimal::MAX);
        self.trades += other.trades;
        self.start_ms = self.start_ms.min(other.start_ms);
    }

    /// The revision last emitted, if any.
    pub(crate) fn emitted(&self) -> Option<u32> {
        self.emitted
    }

    /// Records that `revision` was emitted.
    pub(crate) fn set_emitted(&mut self, revision: Option<u32>) {
        self.emitted = revision;
    }

    /// The instrument.
    pub(crate) fn instrument(&self) -> &Arc<Instrument> {
        &self.instrument
    }

    /// The bar's start.
    pub(crate) fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// Moves the bar's start (a session extended to the left).
    pub(crate) fn set_start(&mut self, start_ms: u64) {
        self.start_ms = start_ms;
    }

    pub(crate) fn to_bar(&self, end_ms: u64, revision: u32) -> Bar {
        let overflow = self.volume == Decimal::MAX || self.notional == Decimal::MAX;
        let vwap = (!self.volume.is_zero() && !overflow).then(|| {
            self.notional
                .checked_div(self.volume)
                .unwrap_or(Decimal::MAX)
                .round_dp_with_strategy(8, RoundingStrategy::MidpointNearestEven)
        });
        Bar {
            instrument: Arc::clone(&self.instrument),
            window_start_ms: self.start_ms,
            window_end_ms: end_ms,
            open: self.open.1,
            high: self.high,
            low: self.low,
            close: self.close.1,
            volume: self.volume,
            vwap,
            trades: self.trades,
            revision,
            overflow,
            retracted: false,
        }
    }
}

/// An instrument id read back from a stored key.
pub(crate) fn stored_id(bytes: &[u8]) -> Result<String, StateError> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| StateError::Corrupt("instrument_id is not UTF-8".into()))
}

/// The `instruments` table: the reference row of every instrument a stored bar refers to,
/// written once per instrument, so bars are stored without it.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstrumentRows(FxHashMap<Arc<str>, Arc<Instrument>>);

/// The routing hash a record of instrument `id` is exchanged by (to the window and session
/// operators), and its stored windows and rows are owned by at a restore.
pub fn instrument_route(id: &str) -> u64 {
    tickflow_state::route(id)
}

impl InstrumentRows {
    /// Adds the row of `instrument` to `out` unless it is stored already; an encoding error
    /// goes to `failed` (the first one is kept).
    pub(crate) fn snapshot(
        &mut self,
        instrument: &Arc<Instrument>,
        out: &mut Vec<(&'static str, DeltaOp)>,
        failed: &mut Option<StateError>,
    ) {
        let id = &instrument.instrument_id;
        if self.0.contains_key(id) {
            return;
        }
        match codec::encode(instrument.as_ref()) {
            Ok(value) => out.push((
                "instruments",
                DeltaOp::Put {
                    key: id.as_bytes().to_vec(),
                    value,
                },
            )),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
        self.0.insert(Arc::clone(id), Arc::clone(instrument));
    }

    /// Forgets which rows are stored: the next snapshot writes the row of every bar it writes
    /// (into a store that holds none yet).
    pub(crate) fn forget_stored(&mut self) {
        self.0.clear();
    }

    /// Takes a stored row back if `owns` its instrument id.
    pub(crate) fn restore(
        &mut self,
        key: &[u8],
        value: &[u8],
        owns: &dyn Fn(u64) -> bool,
    ) -> Result<(), StateError> {
        let id = stored_id(key)?;
        if owns(instrument_route(&id)) {
            let instrument: Instrument = codec::decode(value)?;
            self.0.insert(Arc::from(id.as_str()), Arc::new(instrument));
        }
        Ok(())
    }

    /// The restored row of `id` (rows are restored before the bars that refer to them);
    /// `what` names the bar kind in the error.
    pub(crate) fn row(
        &self,
        id: &str,
        what: &str,
    ) -> Result<(Arc<str>, Arc<Instrument>), StateError> {
        self.0
            .get_key_value(id)
            .map(|(id, row)| (Arc::clone(id), Arc::clone(row)))
            .ok_or_else(|| {
                StateError::Corrupt(format!(
                    "{what} of instrument {id} without its reference row"
                ))
            })
    }
}

//! Where a tick line's contract fields lie: a fast scan of the common flat form
//! ([`scan::flat_members`]), the spans a source's scan hands on to normalize
//! ([`FieldSpans`]), and `serde_json` for everything else.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::scan;

#[derive(Deserialize)]
pub(super) struct SerdeFields<'a> {
    #[serde(borrow)]
    pub(super) venue: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) symbol: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) ts: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) price: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) size: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) seq: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) currency: Option<&'a RawValue>,
}

/// The raw JSON text of each contract field present (not `null`) in a line.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) venue: Option<&'a str>,
    pub(super) symbol: Option<&'a str>,
    pub(super) ts: Option<&'a str>,
    pub(super) price: Option<&'a str>,
    pub(super) size: Option<&'a str>,
    pub(super) seq: Option<&'a str>,
    pub(super) currency: Option<&'a str>,
    /// Bit `i` (in [`Fields::slot`]'s order): field `i` is a string the fast scan found
    /// without escapes, its content the text between its quotes.
    pub(super) plain: u8,
    /// `ts` already parsed by the source's event-time scan (always valid when present).
    pub(super) ts_ns: Option<i64>,
}

impl<'a> Fields<'a> {
    fn slot(&mut self, key: &str) -> Option<(usize, &mut Option<&'a str>)> {
        // By length first: each comparison is then one of a known size, made inline.
        let k = key.as_bytes();
        Some(match k.len() {
            2 if k == b"ts" => (2, &mut self.ts),
            3 if k == b"seq" => (5, &mut self.seq),
            4 if k == b"size" => (4, &mut self.size),
            5 if k == b"venue" => (0, &mut self.venue),
            5 if k == b"price" => (3, &mut self.price),
            6 if k == b"symbol" => (1, &mut self.symbol),
            8 if k == b"currency" => (6, &mut self.currency),
            _ => return None,
        })
    }

    /// The fields of a line in the fast subset ([`scan::flat_members`]) with no field given
    /// twice; `None` otherwise (`serde_json` then decides).
    pub(super) fn scan(line: &'a str) -> Option<Self> {
        let mut f = Fields::default();
        let (mut seen, mut repeated) = (0u8, false);
        let mut plain = 0u8;
        scan::flat_members(line, |key, value, is_plain| {
            if let Some((bit, slot)) = f.slot(key) {
                repeated |= seen & (1 << bit) != 0;
                seen |= 1 << bit;
                *slot = (value != "null").then_some(value);
                plain |= u8::from(is_plain) << bit;
            }
        })?;
        f.plain = plain;
        (!repeated).then_some(f)
    }

    /// The fields of `line` at `spans` (from [`FieldSpans::scan`] of the same line).
    fn at(line: &'a str, spans: &FieldSpans) -> Option<Self> {
        let get = |i: usize| -> Option<Option<&'a str>> {
            let (start, end) = spans.spans[i];
            match end {
                0 => Some(None),
                _ => line.get(usize::from(start)..usize::from(end)).map(Some),
            }
        };
        Some(Fields {
            venue: get(0)?,
            symbol: get(1)?,
            ts: get(2)?,
            price: get(3)?,
            size: get(4)?,
            seq: get(5)?,
            currency: get(6)?,
            plain: spans.plain,
            ts_ns: spans.ts_ns,
        })
    }

    /// Whether field `bit` is known to be a string without escapes.
    pub(super) fn is_plain(&self, bit: usize) -> bool {
        plain_bit(self.plain, bit)
    }

    /// The fields of a JSON object line, the fast way when the line allows it (at `spans`
    /// when a source already scanned it).
    pub(super) fn parse(
        line: &'a str,
        spans: Option<&FieldSpans>,
    ) -> Result<Self, serde_json::Error> {
        if let Some(f) = spans.and_then(|s| Fields::at(line, s)) {
            return Ok(f);
        }
        if let Some(f) = Fields::scan(line) {
            return Ok(f);
        }
        let f: SerdeFields = serde_json::from_str(line)?;
        Ok(Fields {
            venue: f.venue.map(RawValue::get),
            symbol: f.symbol.map(RawValue::get),
            ts: f.ts.map(RawValue::get),
            price: f.price.map(RawValue::get),
            size: f.size.map(RawValue::get),
            seq: f.seq.map(RawValue::get),
            currency: f.currency.map(RawValue::get),
            plain: 0,
            ts_ns: None,
        })
    }
}

/// Where each contract field's raw value lies in a line the fast scan took (`(0, 0)`: absent),
/// so that normalize need not scan a line its source already scanned for the event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldSpans {
    spans: [(u16, u16); 7],
    /// Which of them are strings without escapes (see `Fields::plain`).
    pub(super) plain: u8,
    /// `ts` parsed (ns since the epoch), when the source's event-time scan parsed it.
    pub(super) ts_ns: Option<i64>,
}

impl FieldSpans {
    /// The spans of a line in the fast subset, shorter than 64 KiB.
    pub fn scan(line: &str) -> Option<Self> {
        if line.len() > usize::from(u16::MAX) {
            return None;
        }
        let f = Fields::scan(line)?;
        let base = line.as_ptr() as usize;
        let span = |v: Option<&str>| {
            v.map_or((0, 0), |v| {
                let start = (v.as_ptr() as usize - base) as u16;
                (start, start + v.len() as u16)
            })
        };
        Some(FieldSpans {
            spans: [
                span(f.venue),
                span(f.symbol),
                span(f.ts),
                span(f.price),
                span(f.size),
                span(f.seq),
                span(f.currency),
            ],
            plain: f.plain,
            ts_ns: None,
        })
    }

    /// The raw text of the `ts` field, if present, and whether it is a string without escapes.
    pub(super) fn ts<'a>(&self, line: &'a str) -> Option<(&'a str, bool)> {
        let (start, end) = self.spans[2];
        let text = (end != 0)
            .then(|| line.get(usize::from(start)..usize::from(end)))
            .flatten()?;
        Some((text, plain_bit(self.plain, 2)))
    }
}

/// Whether bit `bit` of a `plain` mask (in [`Fields::slot`]'s order) is set.
fn plain_bit(plain: u8, bit: usize) -> bool {
    plain & (1 << bit) != 0
}

#[derive(Deserialize)]
pub(super) struct TsOnly<'a> {
    #[serde(borrow)]
    pub(super) ts: Option<&'a RawValue>,
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whenever the fast scan takes a line, serde_json reads the same fields from it.
        #[test]
        fn the_fast_scan_agrees_with_serde_json(
            parts in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("venue"), Just("symbol"), Just("ts"), Just("price"), Just("size"),
                        Just("seq"), Just("currency"), Just("other"), Just("ve\\u006eue"),
                    ],
                    prop_oneof![
                        Just("\"XNAS\""), Just("\" aapl\t\""), Just("\"a\\\"b\""), Just("null"),
                        Just("\"\\tPX\\u0041\""), Just("\"\\t MSFT\\n\""),
                        Just("12.50"), Just("-0"), Just("1e5"), Just("01"), Just("true"),
                        Just("{}"), Just("[1]"), Just("\"2024-03-01T14:29:59.231Z\""),
                    ],
                    prop_oneof![Just(""), Just(" "), Just("\n")],
                ),
                0..9,
            ),
            tail in prop_oneof![Just(""), Just(" "), Just("x"), Just(",")],
        ) {
            let body: Vec<String> =
                parts.iter().map(|(k, v, ws)| format!("{ws}\"{k}\":{ws}{v}")).collect();
            let line = format!("{{{}}}{tail}", body.join(","));
            if let Some(fast) = Fields::scan(&line) {
                let slow: SerdeFields = serde_json::from_str(&line)
                    .map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
                let get = |r: Option<&RawValue>| r.map(|r| r.get().to_string());
                let fast_all = [fast.venue, fast.symbol, fast.ts, fast.price, fast.size, fast.seq, fast.currency]
                    .map(|f| f.map(str::to_string));
                let slow_all = [slow.venue, slow.symbol, slow.ts, slow.price, slow.size, slow.seq, slow.currency]
                    .map(get);
                prop_assert_eq!(fast_all, slow_all, "{}", line);
            }
        }
    }
}

//! The records that flow between operators, and their JSON renderings.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The kinds of record a stream can carry; graph validation checks that every input
/// receives the kind its operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A raw input line with its position ([`RawLine`]).
    Raw,
    /// A normalized tick ([`Tick`]).
    Tick,
    /// A tick joined with its instrument ([`EnrichedTick`]).
    Enriched,
    /// A window aggregate ([`Bar`]).
    Bar,
    /// A rejected record with its reason ([`DeadLetter`]).
    DeadLetter,
}

impl RecordKind {
    /// The name used in graph TOML and error messages.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Raw => "raw",
            RecordKind::Tick => "tick",
            RecordKind::Enriched => "enriched",
            RecordKind::Bar => "bar",
            RecordKind::DeadLetter => "dead_letter",
        }
    }
}

/// Where a record came from: the source's index in the graph and the 1-based line number.
/// Ordering by `Ordinal` is input order, which operators use to stay deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ordinal {
    /// Index of the source in the graph (sources sorted by name).
    pub source: u32,
    /// 1-based line number within that source.
    pub line: u64,
}

/// Marks a Kafka position in [`Ordinal::line`].
const KAFKA_FLAG: u64 = 1 << 63;
const OFFSET_BITS: u32 = 40;

impl Ordinal {
    /// The position of a Kafka record: partition and offset packed into `line`, so ordering
    /// is by partition, then offset.
    pub fn kafka(source: u32, partition: i32, offset: i64) -> Self {
        let partition = (partition.max(0) as u64) & 0x7f_ffff;
        let offset = (offset.max(0) as u64) & ((1 << OFFSET_BITS) - 1);
        Ordinal {
            source,
            line: KAFKA_FLAG | (partition << OFFSET_BITS) | offset,
        }
    }

    /// `(partition, offset)` if this is a Kafka position.
    pub fn kafka_position(&self) -> Option<(i32, i64)> {
        (self.line & KAFKA_FLAG != 0).then(|| {
            let rest = self.line & !KAFKA_FLAG;
            (
                (rest >> OFFSET_BITS) as i32,
                (rest & ((1 << OFFSET_BITS) - 1)) as i64,
            )
        })
    }
}

/// A raw input line, as read by a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawLine {
    /// Where the line came from.
    pub ordinal: Ordinal,
    /// The line, without its line terminator.
    pub text: String,
    /// Where the tick contract's fields lie in `text`, when the source's scan for the event
    /// time found them (normalize then need not scan again). Not sent between processes: a
    /// receiver scans again.
    #[serde(skip)]
    pub spans: Option<crate::tick::FieldSpans>,
}

/// A normalized tick: symbol trimmed and uppercased, price in the base currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// Trading venue (shared by every tick of the venue a parser met).
    pub venue: Arc<str>,
    /// Normalized symbol (shared likewise).
    pub symbol: Arc<str>,
    /// Event time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Price in the base currency.
    pub price: Decimal,
    /// Traded size.
    pub size: Decimal,
    /// Venue sequence number; `(venue, seq)` identifies the tick.
    pub seq: u64,
    /// Where the tick came from.
    pub ordinal: Ordinal,
    /// The raw line, kept so later stages can dead-letter it whole.
    pub raw: String,
}

impl Tick {
    /// Event time in milliseconds since the Unix epoch.
    pub fn ts_ms(&self) -> u64 {
        (self.ts_ns / 1_000_000) as u64
    }
}

/// An instrument from the reference data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    /// The instrument's identifier.
    pub instrument_id: Arc<str>,
    /// The normalized symbol it is listed under.
    pub symbol: String,
    /// Other reference columns, in file order, copied onto enriched ticks.
    pub attributes: Vec<(String, String)>,
}

/// A tick joined with its instrument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichedTick {
    /// The normalized tick.
    pub tick: Tick,
    /// Its instrument.
    pub instrument: Arc<Instrument>,
}

/// An OHLCV/VWAP bar for one instrument and one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    /// The instrument.
    pub instrument: Arc<Instrument>,
    /// Window start, ms since the epoch, inclusive.
    pub window_start_ms: u64,
    /// Window end, ms since the epoch, exclusive.
    pub window_end_ms: u64,
    /// Price of the tick with the smallest `(ts, venue, seq)`.
    pub open: Decimal,
    /// Highest price.
    pub high: Decimal,
    /// Lowest price.
    pub low: Decimal,
    /// Price of the tick with the largest `(ts, venue, seq)`.
    pub close: Decimal,
    /// Sum of sizes.
    pub volume: Decimal,
    /// Volume-weighted average price, 8 places half-even; `None` when volume is 0.
    pub vwap: Option<Decimal>,
    /// Number of ticks.
    pub trades: u64,
    /// 0 for the first emission, +1 for each update by an allowed-late tick.
    pub revision: u32,
    /// The sums outgrew the decimal type (more than 79,228 x 10^24 of notional or volume in
    /// one bar): `volume` and `vwap` are then shown as null, never as a wrong number.
    pub overflow: bool,
    /// A session window merged into an earlier one: this bar (same instrument and
    /// `window_start` as one emitted before) no longer stands.
    pub retracted: bool,
}

/// Why a record was rejected. Listed in the order the checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The line is not a JSON object.
    Malformed,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an out-of-range value.
    InvalidValue,
    /// The tick's currency has no rate in the normalize operator's fx table.
    UnknownCurrency,
    /// The normalized symbol is not in the reference data.
    UnknownInstrument,
}

impl DeadLetterReason {
    /// Every reason, in check order.
    pub const ALL: [DeadLetterReason; 5] = [
        DeadLetterReason::Malformed,
        DeadLetterReason::MissingField,
        DeadLetterReason::InvalidValue,
        DeadLetterReason::UnknownCurrency,
        DeadLetterReason::UnknownInstrument,
    ];

    /// The reason's name in dead-letter records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::MissingField => "missing_field",
            DeadLetterReason::InvalidValue => "invalid_value",
            DeadLetterReason::UnknownCurrency => "unknown_currency",
            DeadLetterReason::UnknownInstrument => "unknown_instrument",
        }
    }
}

/// A rejected record: the reason, a message for people, and the record itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why it was rejected.
    pub reason: DeadLetterReason,
    /// What exactly was wrong.
    pub message: String,
    /// Where it came from.
    pub ordinal: Ordinal,
    /// The raw line.
    pub raw: String,
}

/// Formats epoch nanoseconds as RFC 3339 UTC with `Z`, with as many fractional digits as needed.
pub fn format_ts_ns(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Formats epoch milliseconds as RFC 3339 UTC with `Z`.
pub fn format_ts_ms(ms: u64) -> String {
    let mut out = String::with_capacity(24);
    push_ts_ms(&mut out, ms);
    out
}

/// Appends [`format_ts_ms`]`(ms)`: `YYYY-MM-DDTHH:MM:SS[.mmm]Z`, written digit by digit up to
/// 2262 (chrono's formatter cost ~4 % of a run on bars), by chrono beyond.
pub fn push_ts_ms(out: &mut String, ms: u64) {
    if ms > i64::MAX as u64 / 1_000_000 {
        // Beyond 2262, where event times in ns end.
        out.push_str(&format_ts_ns((ms as i64).saturating_mul(1_000_000)));
        return;
    }
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = rest / 1000;
    let mut two = |v: u64, sep: u8| {
        out.push(char::from(b'0' + (v / 10) as u8));
        out.push(char::from(b'0' + (v % 10) as u8));
        if sep != 0 {
            out.push(char::from(sep));
        }
    };
    two(y / 100, 0);
    two(y % 100, b'-');
    two(m, b'-');
    two(d, b'T');
    two(secs / 3600, b':');
    two(secs / 60 % 60, b':');
    two(secs % 60, 0);
    let frac = rest % 1000;
    if frac != 0 {
        out.push('.');
        out.push(char::from(b'0' + (frac / 100) as u8));
        out.push(char::from(b'0' + (frac / 10 % 10) as u8));
        out.push(char::from(b'0' + (frac % 10) as u8));
    }
    out.push('Z');
}

/// The civil date (year, month, day) of a day count since 1970-01-01 (days >= 0).
fn civil_from_days(days: i64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as u64, m as u64, d as u64)
}

/// Renders a decimal without trailing zeros, so equal values always print the same.
pub fn decimal_text(d: Decimal) -> String {
    let mut out = String::with_capacity(24);
    push_decimal(&mut out, d);
    out
}

/// Appends [`decimal_text`]`(d)`: the normalized mantissa's digits with the point put in.
pub fn push_decimal(out: &mut String, d: Decimal) {
    let d = d.normalize();
    let m = d.mantissa();
    if m < 0 {
        out.push('-');
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(m.unsigned_abs());
    let scale = d.scale() as usize;
    if scale == 0 {
        out.push_str(digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

#[derive(Serialize)]
struct TickJson<'a> {
    venue: &'a str,
    symbol: &'a str,
    ts: String,
    price: String,
    size: String,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    instrument_id: Option<&'a str>,
    #[serde(flatten)]
    attributes: std::collections::BTreeMap<&'a str, &'a str>,
}

fn tick_json<'a>(tick: &'a Tick, instrument: Option<&'a Instrument>) -> TickJson<'a> {
    TickJson {
        venue: &tick.venue,
        symbol: &tick.symbol,
        ts: format_ts_ns(tick.ts_ns),
        price: decimal_text(tick.price),
        size: decimal_text(tick.size),
        seq: tick.seq,
        instrument_id: instrument.map(|i| &*i.instrument_id),
        attributes: instrument
            .map(|i| {
                i.attributes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Renders a record as one JSON line for sinks.
pub trait ToJsonLine {
    /// The record as a single-line JSON object.
    fn to_json_line(&self, source_names: &[String]) -> String;
}

impl ToJsonLine for Tick {
    fn to_json_line(&self, _: &[String]) -> String {
        serde_json::to_string(&tick_json(self, None)).unwrap_or_default()
    }
}

impl ToJsonLine for EnrichedTick {
    fn to_json_line(&self, _: &[String]) -> String {
        serde_json::to_string(&tick_json(&self.tick, Some(&self.instrument))).unwrap_or_default()
    }
}

#[cfg(test)]
#[derive(Serialize)]
struct BarJson<'a> {
    instrument_id: &'a str,
    symbol: &'a str,
    window_start: String,
    window_end: String,
    open: String,
    high: String,
    low: String,
    close: String,
    volume: Option<String>,
    vwap: Option<String>,
    trades: u64,
    revision: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    overflow: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    retracted: bool,
}

impl ToJsonLine for Bar {
    /// Written field by field: the same text as serializing [`BarJson`] with serde_json (a
    /// test holds them equal), at a fraction of the cost.
    fn to_json_line(&self, _: &[String]) -> String {
        let mut out = String::with_capacity(256);
        let field = |out: &mut String, name: &str, first: bool| {
            out.push_str(if first { "{\"" } else { ",\"" });
            out.push_str(name);
            out.push_str("\":");
        };
        field(&mut out, "instrument_id", true);
        push_json_str(&mut out, &self.instrument.instrument_id);
        field(&mut out, "symbol", false);
        push_json_str(&mut out, &self.instrument.symbol);
        field(&mut out, "window_start", false);
        out.push('"');
        push_ts_ms(&mut out, self.window_start_ms);
        out.push('"');
        field(&mut out, "window_end", false);
        out.push('"');
        push_ts_ms(&mut out, self.window_end_ms);
        out.push('"');
        for (name, value) in [
            ("open", Some(self.open)),
            ("high", Some(self.high)),
            ("low", Some(self.low)),
            ("close", Some(self.close)),
            ("volume", Some(self.volume).filter(|_| !self.overflow)),
            ("vwap", self.vwap.filter(|_| !self.overflow)),
        ] {
            field(&mut out, name, false);
            match value {
                Some(v) => {
                    out.push('"');
                    push_decimal(&mut out, v);
                    out.push('"');
                }
                None => out.push_str("null"),
            }
        }
        let mut buf = itoa::Buffer::new();
        field(&mut out, "trades", false);
        out.push_str(buf.format(self.trades));
        field(&mut out, "revision", false);
        out.push_str(buf.format(self.revision));
        if self.overflow {
            field(&mut out, "overflow", false);
            out.push_str("true");
        }
        if self.retracted {
            field(&mut out, "retracted", false);
            out.push_str("true");
        }
        out.push('}');
        out
    }
}

impl Bar {
    /// The bar as serde_json renders it: what [`ToJsonLine`] for bars must equal.
    #[cfg(test)]
    fn serde_json_line(&self) -> String {
        let chrono_free_text = |d: Decimal| d.normalize().to_string();
        serde_json::to_string(&BarJson {
            instrument_id: &self.instrument.instrument_id,
            symbol: &self.instrument.symbol,
            window_start: format_ts_ns((self.window_start_ms as i64).saturating_mul(1_000_000)),
            window_end: format_ts_ns((self.window_end_ms as i64).saturating_mul(1_000_000)),
            open: chrono_free_text(self.open),
            high: chrono_free_text(self.high),
            low: chrono_free_text(self.low),
            close: chrono_free_text(self.close),
            volume: (!self.overflow).then(|| chrono_free_text(self.volume)),
            vwap: self.vwap.filter(|_| !self.overflow).map(chrono_free_text),
            trades: self.trades,
            revision: self.revision,
            overflow: self.overflow,
            retracted: self.retracted,
        })
        .unwrap_or_default()
    }
}

#[derive(Serialize)]
struct DeadLetterJson<'a> {
    reason: &'a str,
    message: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    raw: &'a str,
    /// The original bytes, base64, when they were not UTF-8 (`raw` then shows them with
    /// U+FFFD).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<&'a str>,
}

impl ToJsonLine for DeadLetter {
    fn to_json_line(&self, source_names: &[String]) -> String {
        let source = source_names
            .get(self.ordinal.source as usize)
            .map(String::as_str)
            .unwrap_or("?");
        let kafka = self.ordinal.kafka_position();
        let invalid = tickflow_state::text::invalid_utf8(&self.raw).map(|(_, b64)| b64);
        let lossy = invalid.map(tickflow_state::text::lossy);
        serde_json::to_string(&DeadLetterJson {
            reason: self.reason.name(),
            message: &self.message,
            source,
            line: kafka.is_none().then_some(self.ordinal.line),
            partition: kafka.map(|k| k.0),
            offset: kafka.map(|k| k.1),
            raw: lossy.as_deref().unwrap_or(&self.raw),
            raw_base64: invalid,
        })
        .unwrap_or_default()
    }
}

impl ToJsonLine for RawLine {
    fn to_json_line(&self, _: &[String]) -> String {
        match tickflow_state::text::invalid_utf8(&self.text) {
            Some((_, b64)) => tickflow_state::text::lossy(b64),
            None => self.text.clone(),
        }
    }
}

#[cfg(test)]
mod kafka_ordinal_tests {
    use super::*;

    #[test]
    fn kafka_positions_round_trip_and_order_by_partition_then_offset() {
        let a = Ordinal::kafka(1, 3, 1_234_567);
        assert_eq!(a.kafka_position(), Some((3, 1_234_567)));
        assert!(Ordinal::kafka(1, 2, 9_999_999) < a);
        assert!(a < Ordinal::kafka(1, 3, 1_234_568));
        assert_eq!(Ordinal { source: 0, line: 7 }.kafka_position(), None);
        let dl = DeadLetter {
            reason: DeadLetterReason::ALL[0],
            message: "m".into(),
            ordinal: a,
            raw: "x".into(),
        };
        let json = dl.to_json_line(&["s".to_string(), "k".to_string()]);
        assert!(
            json.contains("\"source\":\"k\",\"partition\":3,\"offset\":1234567"),
            "{json}"
        );
        assert!(!json.contains("\"line\""), "{json}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn any_decimal() -> impl Strategy<Value = Decimal> {
        (any::<i64>(), 0u32..=20, any::<bool>()).prop_map(|(m, scale, wide)| {
            let m = if wide {
                i128::from(m) * 1_000_000_007
            } else {
                i128::from(m % 1000)
            };
            Decimal::try_from_i128_with_scale(m, scale).unwrap_or_default()
        })
    }

    proptest! {
        /// The hand-written bar line is byte for byte what serde_json and rust_decimal's
        /// `Display` and chrono's RFC 3339 give.
        #[test]
        fn bar_lines_equal_their_serde_json_rendering(
            id in prop_oneof![Just("INS-1".to_string()), Just("a\"b\\c\n".to_string()), ".{0,8}"],
            start in prop_oneof![0u64..9_300_000_000_000_000, 1_700_000_000_000u64..1_800_000_000_000], len in 1u64..86_400_000,
            prices in proptest::collection::vec(any_decimal(), 5),
            vwap in proptest::option::of(any_decimal()),
            trades in any::<u64>(), revision in any::<u32>(),
            overflow in any::<bool>(), retracted in any::<bool>(),
        ) {
            let bar = Bar {
                instrument: Arc::new(Instrument {
                    instrument_id: id.as_str().into(),
                    symbol: id.to_lowercase(),
                    attributes: Vec::new(),
                }),
                window_start_ms: start,
                window_end_ms: start + len,
                open: prices[0],
                high: prices[1],
                low: prices[2],
                close: prices[3],
                volume: prices[4],
                vwap,
                trades,
                revision,
                overflow,
                retracted,
            };
            prop_assert_eq!(bar.to_json_line(&[]), bar.serde_json_line());
        }
    }

    #[test]
    fn timestamps_render_as_utc_z() {
        assert_eq!(format_ts_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ts_ms(1_700_000_060_000), "2023-11-14T22:14:20Z");
        assert_eq!(
            format_ts_ns(1_500_000_001),
            "1970-01-01T00:00:01.500000001Z"
        );
    }

    #[test]
    fn decimals_render_without_trailing_zeros() {
        assert_eq!(decimal_text(Decimal::from_str("101.500").unwrap()), "101.5");
        assert_eq!(decimal_text(Decimal::from_str("100").unwrap()), "100");
        assert_eq!(decimal_text(Decimal::from_str("0.00").unwrap()), "0");
    }

    #[test]
    fn dead_letter_json_names_source_line_and_reason() {
        let dl = DeadLetter {
            reason: DeadLetterReason::MissingField,
            message: "missing field `price`".into(),
            ordinal: Ordinal { source: 0, line: 7 },
            raw: "{\"venue\":\"X\"}".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&dl.to_json_line(&["ticks".to_string()])).unwrap();
        assert_eq!(v["reason"], "missing_field");
        assert_eq!(v["source"], "ticks");
        assert_eq!(v["line"], 7);
        assert_eq!(v["raw"], "{\"venue\":\"X\"}");
    }
}

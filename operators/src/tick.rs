//! The raw tick contract: parsing one JSON line into typed fields, or a dead letter.
//!
//! ```
//! use tickflow_operators::tick::parse_tick;
//! let t = parse_tick(r#"{"venue":"XNAS","symbol":" aapl ","ts":"2024-03-01T09:30:00.5+01:00","price":0.1,"size":"100","seq":7}"#).unwrap();
//! assert_eq!(&*t.symbol, "AAPL");
//! assert_eq!(t.price.to_string(), "0.1");
//! assert_eq!(t.ts_ns, 1_709_281_800_500_000_000);
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use chrono::DateTime;
use rust_decimal::Decimal;

use rustc_hash::FxHashMap;

use crate::record::DeadLetterReason;
use crate::scan;

mod fields;

pub use fields::FieldSpans;
use fields::{Fields, TsOnly};

/// The names a parser has met (venues, symbols, currencies), each kept once and shared: a tick
/// then costs no allocation and no uppercasing for names seen before. Bounded: past
/// [`Names::LIMIT`] names of a kind (hostile input), that kind starts over.
#[derive(Debug, Clone, Default)]
pub struct Names {
    venues: FxHashMap<Box<str>, Arc<str>>,
    /// By the trimmed, uppercased form (a few thousand instruments, however many ways each is
    /// written: keyed by the text as written, 14,000 raw variants of 2,000 symbols made a table
    /// too large to stay in cache, and its lookups cost more than uppercasing).
    symbols: FxHashMap<Box<str>, Arc<str>>,
    currencies: FxHashMap<Box<str>, Arc<str>>,
}

impl Names {
    /// Names of one kind kept at most.
    pub const LIMIT: usize = 1 << 16;

    fn get(
        map: &mut FxHashMap<Box<str>, Arc<str>>,
        text: &str,
        make: impl FnOnce(&str) -> Arc<str>,
    ) -> Arc<str> {
        if let Some(name) = map.get(text) {
            return Arc::clone(name);
        }
        if map.len() >= Self::LIMIT {
            map.clear();
        }
        let name = make(text);
        map.insert(text.into(), Arc::clone(&name));
        name
    }

    fn venue(&mut self, text: &str) -> Arc<str> {
        Self::get(&mut self.venues, text, |t: &str| Arc::from(t))
    }

    /// `text` trimmed and uppercased. Short ASCII text is uppercased on the stack (ASCII
    /// uppercasing is what `to_uppercase` does to it); other text goes through `to_uppercase`.
    fn normalized(map: &mut FxHashMap<Box<str>, Arc<str>>, text: &str) -> Arc<str> {
        let t = text.trim();
        let mut buf = [0u8; 32];
        if t.is_ascii() && t.len() <= buf.len() {
            let up = &mut buf[..t.len()];
            up.copy_from_slice(t.as_bytes());
            up.make_ascii_uppercase();
            if let Ok(up) = std::str::from_utf8(up) {
                return Self::get(map, up, |t: &str| Arc::from(t));
            }
        }
        let up = t.to_uppercase();
        Self::get(map, &up, |t: &str| Arc::from(t))
    }
}

/// The fields of a tick that passed the parse checks (malformed, missing_field, invalid_value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTick {
    /// Venue, as given.
    pub venue: Arc<str>,
    /// Symbol, trimmed and uppercased.
    pub symbol: Arc<str>,
    /// Event time, ns since the Unix epoch.
    pub ts_ns: i64,
    /// Price, exactly as written.
    pub price: Decimal,
    /// Size, exactly as written.
    pub size: Decimal,
    /// Sequence number.
    pub seq: u64,
    /// Currency, trimmed and uppercased, when given.
    pub currency: Option<Arc<str>>,
}

/// Why a line failed the parse checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The dead-letter reason.
    pub reason: DeadLetterReason,
    /// A message naming the field and the problem.
    pub message: String,
}

fn reject(reason: DeadLetterReason, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> Rejection {
    reject(DeadLetterReason::InvalidValue, message)
}

/// JSON type name of a raw value, for messages.
fn json_type(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A string field's content from its raw JSON text, borrowed when it has no escapes
/// (`plain`: the fast scan found it a string without any).
fn string_field<'a>(name: &str, raw: &'a str, plain: bool) -> Result<Cow<'a, str>, Rejection> {
    if let Some(inner) = plain
        .then(|| raw.strip_prefix('"')?.strip_suffix('"'))
        .flatten()
    {
        return Ok(Cow::Borrowed(inner));
    }
    if let Some(plain) = scan::plain_string(raw) {
        return Ok(Cow::Borrowed(plain));
    }
    if !raw.starts_with('"') {
        return Err(invalid(format!(
            "`{name}` must be a string, got {}",
            json_type(raw)
        )));
    }
    serde_json::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|e| invalid(format!("`{name}` is not a valid string: {e}")))
}

/// Parses `ts`: an RFC 3339 string with offset, or an integer of epoch milliseconds.
/// Times before the Unix epoch are rejected.
/// `text` is the field's raw JSON text.
pub fn parse_ts(text: &str) -> Result<i64, Rejection> {
    parse_ts_field(text, false)
}

/// [`parse_ts`] of a field the fast scan may have found `plain`.
fn parse_ts_field(text: &str, plain: bool) -> Result<i64, Rejection> {
    let ns = if text.starts_with('"') {
        let s = string_field("ts", text, plain)?;
        match scan::rfc3339_ns(&s) {
            Some(ns) => ns,
            None => {
                let dt = DateTime::parse_from_rfc3339(&s).map_err(|e| {
                    invalid(format!("`ts` {s:?} is not RFC 3339 with an offset: {e}"))
                })?;
                dt.timestamp_nanos_opt()
                    .ok_or_else(|| invalid(format!("`ts` {s:?} is out of range")))?
            }
        }
    } else if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !text.is_empty() {
        let ms = text
            .parse::<i64>()
            .map_err(|_| invalid(format!("`ts` {text} is out of range")))?;
        ms.checked_mul(1_000_000)
            .ok_or_else(|| invalid(format!("`ts` {text} is out of range")))?
    } else {
        return Err(invalid(format!(
            "`ts` must be an RFC 3339 string or integer epoch milliseconds, got {} {}",
            json_type(text),
            text
        )));
    };
    if ns < 0 {
        return Err(invalid(format!("`ts` {text} is before the Unix epoch")));
    }
    Ok(ns)
}

/// The event time of a line in ms, if the line is a JSON object with a valid `ts`.
/// Sources use this to move their watermark without a full parse.
pub fn event_time_ms(line: &str) -> Option<u64> {
    event_time_and_spans(line).0
}

/// [`event_time_ms`], and the line's [`FieldSpans`] when the fast scan took it.
pub fn event_time_and_spans(line: &str) -> (Option<u64>, Option<FieldSpans>) {
    let mut spans = FieldSpans::scan(line);
    let ns = match spans.as_mut() {
        Some(s) => {
            let ns = s
                .ts(line)
                .and_then(|(ts, plain)| parse_ts_field(ts, plain).ok());
            // Normalize takes it from here instead of parsing `ts` again.
            s.ts_ns = ns;
            ns
        }
        None => serde_json::from_str::<TsOnly>(line)
            .ok()
            .and_then(|f| f.ts)
            .and_then(|ts| parse_ts(ts.get()).ok()),
    };
    (ns.map(|ns| (ns / 1_000_000) as u64), spans)
}

fn is_plain_decimal(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut parts = body.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => (!int.is_empty() || !f.is_empty()) && digits(int) && digits(f),
    }
}

/// Parses a decimal from its exact text: a JSON string or number, no binary floating point.
/// Numbers in exponent form (`1.5e3`) are accepted; anything that would lose digits is rejected.
/// `text` is the field's raw JSON text.
pub fn parse_decimal(name: &str, text: &str) -> Result<Decimal, Rejection> {
    parse_decimal_field(name, text, false)
}

/// [`parse_decimal`] of a field the fast scan may have found `plain`.
fn parse_decimal_field(name: &str, text: &str, plain: bool) -> Result<Decimal, Rejection> {
    let body: Cow<str> = if text.starts_with('"') {
        string_field(name, text, plain)?
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text.into()
    } else {
        return Err(invalid(format!(
            "`{name}` must be a decimal string or number, got {}",
            json_type(text)
        )));
    };
    let parsed = if is_plain_decimal(&body) {
        Decimal::from_str_exact(&body).ok()
    } else if body.contains(['e', 'E']) {
        Decimal::from_scientific(&body).ok()
    } else {
        None
    };
    parsed.ok_or_else(|| invalid(format!("`{name}` {body:?} is not an exact decimal")))
}

/// Parses one raw line against the tick contract. Checks apply in order: `malformed`
/// (not a JSON object), `missing_field` (naming every absent required field), then
/// `invalid_value` for the first bad field (a `null` field counts as missing) in the order venue, symbol, ts, price, size, seq,
/// currency.
pub fn parse_tick(line: &str) -> Result<ParsedTick, Rejection> {
    parse_tick_at(line, None, &mut Names::default())
}

/// [`parse_tick`] of a line whose fields a source already found (`spans`, from
/// [`event_time_and_spans`] of the same text), sharing the names in `names`.
pub fn parse_tick_at(
    line: &str,
    spans: Option<&FieldSpans>,
    names: &mut Names,
) -> Result<ParsedTick, Rejection> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('{') {
        return Err(reject(
            DeadLetterReason::Malformed,
            "line is not a JSON object",
        ));
    }
    let f = Fields::parse(line, spans).map_err(|e| {
        reject(
            DeadLetterReason::Malformed,
            format!("line is not a JSON object: {e}"),
        )
    })?;
    let required = [
        ("venue", f.venue),
        ("symbol", f.symbol),
        ("ts", f.ts),
        ("price", f.price),
        ("size", f.size),
        ("seq", f.seq),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(reject(
            DeadLetterReason::MissingField,
            format!("missing required field(s): {}", missing.join(", ")),
        ));
    }
    let (Some(venue), Some(symbol), Some(ts), Some(price), Some(size), Some(seq)) =
        (f.venue, f.symbol, f.ts, f.price, f.size, f.seq)
    else {
        return Err(reject(DeadLetterReason::MissingField, "missing field"));
    };

    let venue = string_field("venue", venue, f.is_plain(0))?;
    if venue.trim().is_empty() {
        return Err(invalid("`venue` must not be empty"));
    }
    let venue = names.venue(&venue);
    let symbol = Names::normalized(
        &mut names.symbols,
        &string_field("symbol", symbol, f.is_plain(1))?,
    );
    if symbol.is_empty() {
        return Err(invalid("`symbol` must not be empty"));
    }
    let ts_ns = match f.ts_ns {
        Some(ns) => ns,
        None => parse_ts_field(ts, f.is_plain(2))?,
    };
    let price = parse_decimal_field("price", price, f.is_plain(3))?;
    if price <= Decimal::ZERO {
        return Err(invalid(format!("`price` must be > 0, got {price}")));
    }
    let size = parse_decimal_field("size", size, f.is_plain(4))?;
    if size < Decimal::ZERO {
        return Err(invalid(format!("`size` must be >= 0, got {size}")));
    }
    let seq_text = seq;
    let seq = if seq_text.bytes().all(|b| b.is_ascii_digit()) {
        seq_text
            .parse::<u64>()
            .map_err(|_| invalid(format!("`seq` {seq_text} is out of range")))?
    } else if seq_text.starts_with('-') && seq_text[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("`seq` must be >= 0, got {seq_text}")));
    } else {
        return Err(invalid(format!(
            "`seq` must be an integer >= 0, got {} {seq_text}",
            json_type(seq)
        )));
    };
    let currency = match f.currency {
        None => None,
        Some(raw) => {
            let c = Names::normalized(
                &mut names.currencies,
                &string_field("currency", raw, f.is_plain(6))?,
            );
            if c.is_empty() {
                return Err(invalid("`currency` must not be empty"));
            }
            Some(c)
        }
    };
    Ok(ParsedTick {
        venue,
        symbol,
        ts_ns,
        price,
        size,
        seq,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use DeadLetterReason::*;

    fn line(fields: &str) -> String {
        format!("{{{fields}}}")
    }

    const OK: &str = r#""venue":"XNAS","symbol":"aapl","ts":"2024-01-02T10:00:00Z","price":"187.5","size":"100","seq":1"#;

    fn reason(l: &str) -> DeadLetterReason {
        parse_tick(l).unwrap_err().reason
    }

    #[test]
    fn valid_tick_is_normalized() {
        let t = parse_tick(&line(OK)).unwrap();
        assert_eq!(&*t.venue, "XNAS");
        assert_eq!(&*t.symbol, "AAPL");
        assert_eq!(t.ts_ns, 1_704_189_600_000_000_000);
        assert_eq!(t.price, Decimal::from_str("187.5").unwrap());
        assert_eq!(t.seq, 1);
        assert_eq!(t.currency, None);
    }

    #[test]
    fn symbol_is_trimmed_and_uppercased() {
        let l = OK.replace("\"aapl\"", "\"  msft \\t\"");
        assert_eq!(&*parse_tick(&line(&l)).unwrap().symbol, "MSFT");
    }

    #[test]
    fn ts_offsets_other_than_z() {
        let l = OK.replace(
            "2024-01-02T10:00:00Z",
            "2024-01-02T11:30:00.123456789+01:30",
        );
        assert_eq!(
            parse_tick(&line(&l)).unwrap().ts_ns,
            1_704_189_600_123_456_789
        );
        let l = OK.replace("2024-01-02T10:00:00Z", "2024-01-02T05:00:00-05:00");
        assert_eq!(
            parse_tick(&line(&l)).unwrap().ts_ns,
            1_704_189_600_000_000_000
        );
    }

    #[test]
    fn ts_epoch_milliseconds() {
        let l = OK.replace("\"2024-01-02T10:00:00Z\"", "1704189600123");
        assert_eq!(
            parse_tick(&line(&l)).unwrap().ts_ns,
            1_704_189_600_123_000_000
        );
        assert_eq!(event_time_ms(&line(&l)), Some(1_704_189_600_123));
    }

    #[test]
    fn bad_ts_is_invalid_value() {
        for bad in [
            "\"2024-01-02 10:00:00\"",
            "\"2024-01-02T10:00:00\"",
            "\"yesterday\"",
            "1.5",
            "-5",
            "\"1969-12-31T23:59:59Z\"",
            "true",
        ] {
            let l = OK.replace("\"2024-01-02T10:00:00Z\"", bad);
            assert_eq!(reason(&line(&l)), InvalidValue, "ts = {bad}");
        }
    }

    #[test]
    fn json_number_prices_are_exact() {
        let l = OK.replace("\"187.5\"", "0.1");
        assert_eq!(
            parse_tick(&line(&l)).unwrap().price,
            Decimal::from_str("0.1").unwrap()
        );
        let l = OK.replace("\"187.5\"", "0.30000000000000004");
        assert_eq!(
            parse_tick(&line(&l)).unwrap().price.to_string(),
            "0.30000000000000004"
        );
        let l = OK.replace("\"187.5\"", "1.5e2");
        assert_eq!(
            parse_tick(&line(&l)).unwrap().price,
            Decimal::from_str("150").unwrap()
        );
    }

    #[test]
    fn price_and_size_bounds() {
        for bad in ["0", "\"-1\"", "\"abc\"", "\"1_000\"", "\"\"", "[1]"] {
            let l = OK.replace("\"187.5\"", bad);
            assert_eq!(reason(&line(&l)), InvalidValue, "price = {bad}");
        }
        let l = OK.replace("\"size\":\"100\"", "\"size\":0");
        assert_eq!(parse_tick(&line(&l)).unwrap().size, Decimal::ZERO);
        let l = OK.replace("\"size\":\"100\"", "\"size\":\"-0.5\"");
        assert_eq!(reason(&line(&l)), InvalidValue);
    }

    #[test]
    fn seq_must_be_non_negative_integer() {
        for bad in ["-1", "1.5", "\"3\"", "{}"] {
            let l = OK.replace("\"seq\":1", &format!("\"seq\":{bad}"));
            assert_eq!(reason(&line(&l)), InvalidValue, "seq = {bad}");
        }
        let l = OK.replace("\"seq\":1", "\"seq\":0");
        assert_eq!(parse_tick(&line(&l)).unwrap().seq, 0);
    }

    #[test]
    fn empty_strings_are_invalid() {
        assert_eq!(reason(&line(&OK.replace("\"XNAS\"", "\"\""))), InvalidValue);
        assert_eq!(
            reason(&line(&OK.replace("\"aapl\"", "\"  \""))),
            InvalidValue
        );
        assert_eq!(reason(&line(&OK.replace("\"aapl\"", "5"))), InvalidValue);
    }

    #[test]
    fn malformed_lines() {
        for bad in ["", "not json", "[1,2]", "\"str\"", "{\"venue\":", "42"] {
            assert_eq!(reason(bad), Malformed, "line = {bad:?}");
        }
    }

    #[test]
    fn missing_fields_are_all_named_and_precede_invalid_values() {
        let r = parse_tick(r#"{"venue":"","symbol":"A"}"#).unwrap_err();
        assert_eq!(r.reason, MissingField);
        assert!(r.message.contains("ts, price, size, seq"), "{}", r.message);
    }

    #[test]
    fn null_counts_as_missing() {
        let l = OK.replace("\"187.5\"", "null");
        let r = parse_tick(&line(&l)).unwrap_err();
        assert_eq!(r.reason, MissingField);
        assert!(r.message.contains("price"));
    }

    #[test]
    fn currency_is_optional_and_normalized() {
        let l = format!("{OK},\"currency\":\" eur\"");
        assert_eq!(
            parse_tick(&line(&l)).unwrap().currency.as_deref(),
            Some("EUR")
        );
        let l = format!("{OK},\"currency\":7");
        assert_eq!(reason(&line(&l)), InvalidValue);
    }

    #[test]
    fn other_fields_are_ignored() {
        let l = format!("{OK},\"extra\":{{\"nested\":[1,2]}}");
        assert!(parse_tick(&line(&l)).is_ok());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    proptest! {
        /// Any line at all yields a tick or a dead-letter reason; the parser never panics.
        #[test]
        fn never_panics(line in ".{0,200}") {
            let _ = parse_tick(&line);
            let _ = event_time_ms(&line);
        }

        /// A line parsed at the spans its source's scan found reads as a line parsed alone.
        #[test]
        fn parsing_at_a_sources_spans_equals_parsing_alone(
            symbol in prop_oneof![Just("aapl"), Just(" MSFT\t"), Just("a\\\"b"), Just("")],
            price in prop_oneof![Just("\"1.5\""), Just("2"), Just("-1"), Just("null"), Just("{}")],
            ts in prop_oneof![Just("\"2024-01-02T10:00:00Z\""), Just("1704189600123"), Just("\"x\"")],
            extra in prop_oneof![Just(""), Just(",\"seq\":2"), Just(",\"other\":[1]")],
        ) {
            let line = format!(
                "{{\"venue\":\"XNAS\",\"symbol\":\"{symbol}\",\"ts\":{ts},\"price\":{price},\"size\":\"3\",\"seq\":1{extra}}}"
            );
            let (ms, spans) = event_time_and_spans(&line);
            prop_assert_eq!(ms, event_time_ms(&line));
            let mut names = Names::default();
            prop_assert_eq!(parse_tick_at(&line, spans.as_ref(), &mut names), parse_tick(&line));
            prop_assert_eq!(parse_tick_at(&line, spans.as_ref(), &mut names), parse_tick(&line));
            // Spans read against another text do not panic.
            let _ = parse_tick_at("{}", spans.as_ref(), &mut names);
        }

        /// A name is its text trimmed and uppercased as `str` does it, however it is written
        /// and whatever was met before (ASCII on the stack, the rest through `to_uppercase`).
        #[test]
        fn a_name_is_its_text_trimmed_and_uppercased(
            texts in proptest::collection::vec(
                prop_oneof![
                    "[ \t]{0,2}[a-zA-Z0-9.]{0,8}[ \t]{0,2}",
                    "\\PC{0,12}",
                    "[a-z]{30,40}",
                    Just("straße".to_string()),
                    Just(" ǅx ".to_string()),
                ],
                1..20,
            ),
        ) {
            let mut names = Names::default();
            for text in texts.iter().chain(texts.iter()) {
                let name = Names::normalized(&mut names.symbols, text);
                prop_assert_eq!(&*name, text.trim().to_uppercase());
            }
        }

        /// Prices written as JSON numbers or strings are taken digit for digit.
        #[test]
        fn decimal_text_is_exact(int in 0u64..1_000_000_000, frac in "[0-9]{0,12}", quoted in any::<bool>()) {
            let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
            let json = if quoted { format!("\"{text}\"") } else { text.clone() };
            let raw: Box<RawValue> = serde_json::from_str(&json).unwrap();
            let parsed = parse_decimal("price", raw.get()).unwrap();
            prop_assert_eq!(parsed.to_string(), text);
        }

        /// Epoch milliseconds and the same instant as RFC 3339 give the same event time.
        #[test]
        fn epoch_ms_and_rfc3339_agree(ms in 0i64..4_102_444_800_000) {
            let as_int: Box<RawValue> = serde_json::from_str(&ms.to_string()).unwrap();
            let text = chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
            let as_str: Box<RawValue> = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            prop_assert_eq!(parse_ts(as_int.get()).unwrap(), parse_ts(as_str.get()).unwrap());
        }
    }
}

//! `map`: venue field mapping, the normalization services' per-venue code as configuration.
//!
//! Each raw record (a JSON object) is rewritten into the raw tick contract `normalize` reads:
//! fields renamed (`price = "px"`), defaults set where a field is absent, constants set on
//! every record, and the event time read from epoch seconds, milliseconds, microseconds or
//! nanoseconds, or with a `strftime` format, into `ts` (RFC 3339). Rules under
//! `venues.<VALUE>` apply, on top of the shared ones, to records whose `venue` field (before
//! renaming) has that value. A record that cannot be mapped is a dead letter naming the field.
//!
//! ```toml
//! [operators.venue_a]
//! type = "map"
//! input = "raw_a"
//! rename = { price = "px", size = "qty", symbol = "sym", seq = "id" }
//! constants = { venue = "VENUE_A" }
//! defaults = { currency = "USD" }
//! timestamp = { field = "time_ns", unit = "ns" }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::event_time::{TimeRule, TimestampConfig};
use crate::record::{format_ts_ns, DeadLetter, DeadLetterReason, RawLine};
use crate::OperatorError;

/// Configuration of a `map` operator (besides `type` and `input`).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// Renames: output field = the input field it is read from (`price = "px"`).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Values set on fields the record lacks (or has as null), after renaming.
    #[serde(default)]
    pub defaults: BTreeMap<String, Value>,
    /// Values set on every record, replacing what it has (`venue = "XLON"`).
    #[serde(default)]
    pub constants: BTreeMap<String, Value>,
    /// How to read the event time into `ts`; without it `ts` is passed on as is.
    pub timestamp: Option<TimestampConfig>,
    /// The input field whose value picks the rules under `venues` (default `venue`).
    pub venue_field: Option<String>,
    /// Rules for one venue value, applied on top of (and overriding) the shared ones.
    #[serde(default)]
    pub venues: BTreeMap<String, VenueRules>,
}

/// Rules for the records of one venue (see `venues`).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VenueRules {
    /// Renames, as in the shared rules.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Defaults, as in the shared rules.
    #[serde(default)]
    pub defaults: BTreeMap<String, Value>,
    /// Constants, as in the shared rules.
    #[serde(default)]
    pub constants: BTreeMap<String, Value>,
    /// The event time, as in the shared rules.
    pub timestamp: Option<TimestampConfig>,
}

/// The fields of the raw tick contract every tick must have.
const REQUIRED: &[&str] = &["venue", "symbol", "ts", "price", "size", "seq"];

/// One effective rule set.
#[derive(Debug, Clone, Default)]
struct Rules {
    rename: BTreeMap<String, String>,
    defaults: BTreeMap<String, Value>,
    constants: BTreeMap<String, Value>,
    time: Option<TimeRule>,
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub struct Mapper {
    shared: Rules,
    venue_field: String,
    venues: BTreeMap<String, Rules>,
}

fn check_names(prefix: &str, rules: &Rules, errors: &mut Vec<OperatorError>) {
    for (key, map) in [
        (
            "rename",
            rules
                .rename
                .keys()
                .chain(rules.rename.values())
                .collect::<Vec<_>>(),
        ),
        ("defaults", rules.defaults.keys().collect()),
        ("constants", rules.constants.keys().collect()),
    ] {
        if map.iter().any(|name| name.is_empty()) {
            errors.push(OperatorError::InvalidConfig {
                key: format!("{prefix}{key}"),
                message: "field names must not be empty".into(),
            });
        }
    }
}

impl Mapper {
    /// Validates a config; every problem is reported by its key.
    pub fn new(cfg: &MapConfig) -> Result<Self, Vec<OperatorError>> {
        let mut errors = Vec::new();
        let shared = Rules {
            rename: cfg.rename.clone(),
            defaults: cfg.defaults.clone(),
            constants: cfg.constants.clone(),
            time: cfg
                .timestamp
                .as_ref()
                .and_then(|t| TimeRule::from_config("timestamp", t, &mut errors)),
        };
        check_names("", &shared, &mut errors);
        let mut venues = BTreeMap::new();
        for (venue, v) in &cfg.venues {
            let prefix = format!("venues.{venue}.");
            let mut rules = shared.clone();
            rules.rename.extend(v.rename.clone());
            rules.defaults.extend(v.defaults.clone());
            rules.constants.extend(v.constants.clone());
            if let Some(t) = &v.timestamp {
                rules.time = TimeRule::from_config(&format!("{prefix}timestamp"), t, &mut errors);
            }
            check_names(&prefix, &rules, &mut errors);
            venues.insert(venue.clone(), rules);
        }
        let venue_field = cfg.venue_field.clone().unwrap_or_else(|| "venue".into());
        if venue_field.is_empty() {
            errors.push(OperatorError::InvalidConfig {
                key: "venue_field".into(),
                message: "must not be empty".into(),
            });
        }
        if errors.is_empty() {
            Ok(Mapper {
                shared,
                venue_field,
                venues,
            })
        } else {
            Err(errors)
        }
    }

    /// Maps one raw record, or says why it cannot be mapped.
    pub fn map(&self, line: RawLine) -> Result<RawLine, DeadLetter> {
        let RawLine { ordinal, text, .. } = line;
        let dead = |reason, message: String, raw: String| DeadLetter {
            reason,
            message,
            ordinal,
            raw,
        };
        if let Some((offset, _)) = tickflow_state::text::invalid_utf8(&text) {
            let message = format!("not valid UTF-8 (first invalid byte at {offset})");
            return Err(dead(DeadLetterReason::Malformed, message, text));
        }
        let mut obj: Map<String, Value> = match serde_json::from_str(&text) {
            Ok(Value::Object(obj)) => obj,
            Ok(other) => {
                let message = format!("not a JSON object (got {})", json_kind(&other));
                return Err(dead(DeadLetterReason::Malformed, message, text));
            }
            Err(e) => {
                let message = format!("not a JSON object: {e}");
                return Err(dead(DeadLetterReason::Malformed, message, text));
            }
        };
        let rules = match obj.get(&self.venue_field) {
            Some(Value::String(v)) => self.venues.get(v).unwrap_or(&self.shared),
            _ => &self.shared,
        };
        match rules.apply(&mut obj) {
            Ok(()) => match serde_json::to_string(&obj) {
                Ok(text) => Ok(RawLine {
                    ordinal,
                    text,
                    spans: None,
                }),
                Err(e) => Err(dead(
                    DeadLetterReason::Malformed,
                    format!("cannot render the mapped record: {e}"),
                    text,
                )),
            },
            Err((reason, message)) => Err(dead(reason, message, text)),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Rules {
    fn apply(&self, obj: &mut Map<String, Value>) -> Result<(), (DeadLetterReason, String)> {
        // Read every source field first, so swaps (`a = "b"`, `b = "a"`) work.
        let moved: Vec<(&String, Option<Value>)> = self
            .rename
            .iter()
            .map(|(to, from)| (to, obj.remove(from)))
            .collect();
        for (to, value) in moved {
            if let Some(value) = value {
                obj.insert(to.clone(), value);
            }
        }
        for (key, value) in &self.defaults {
            if obj.get(key).is_none_or(Value::is_null) {
                obj.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in &self.constants {
            obj.insert(key.clone(), value.clone());
        }
        // A required field of the tick contract read from a venue field the record lacks is
        // reported under the venue's name for it.
        for (to, from) in &self.rename {
            if REQUIRED.contains(&to.as_str()) && obj.get(to).is_none_or(Value::is_null) {
                return Err((
                    DeadLetterReason::MissingField,
                    format!("missing field `{from}` (mapped to `{to}`)"),
                ));
            }
        }
        if let Some(rule) = &self.time {
            let value = match obj.remove(&rule.field) {
                Some(Value::Null) | None => {
                    return Err((
                        DeadLetterReason::MissingField,
                        format!("missing field `{}` (the event time)", rule.field),
                    ))
                }
                Some(v) => v,
            };
            let ns = rule.read(&value)?;
            obj.insert("ts".into(), Value::String(format_ts_ns(ns)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Ordinal;

    fn mapper(toml_text: &str) -> Mapper {
        let cfg: MapConfig = toml::from_str(toml_text).unwrap();
        Mapper::new(&cfg).unwrap()
    }

    fn line(text: &str) -> RawLine {
        RawLine {
            ordinal: Ordinal { source: 0, line: 1 },
            text: text.into(),
            spans: None,
        }
    }

    fn mapped(m: &Mapper, text: &str) -> Value {
        serde_json::from_str(&m.map(line(text)).unwrap().text).unwrap()
    }

    #[test]
    fn renames_defaults_constants_and_epoch_ns() {
        let m = mapper(
            r#"
            rename = { price = "px", size = "qty", symbol = "sym" }
            defaults = { currency = "USD" }
            constants = { venue = "XA" }
            timestamp = { field = "time_ns", unit = "ns" }
            "#,
        );
        let v = mapped(
            &m,
            r#"{"px":"1.5","qty":2,"sym":"abc","time_ns":1700000000123456789,"seq":1,"venue":"x"}"#,
        );
        assert_eq!(v["price"], "1.5");
        assert_eq!(v["size"], 2);
        assert_eq!(v["symbol"], "abc");
        assert_eq!(v["currency"], "USD");
        assert_eq!(v["venue"], "XA");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123456789Z");
        assert!(v.get("time_ns").is_none() && v.get("px").is_none());
    }

    #[test]
    fn epoch_units_and_formats() {
        for (unit, value, want) in [
            ("s", "1700000000.25", "2023-11-14T22:13:20.250Z"),
            ("ms", "1700000000250", "2023-11-14T22:13:20.250Z"),
            ("us", "\"1700000000250000\"", "2023-11-14T22:13:20.250Z"),
        ] {
            let m = mapper(&format!(
                "timestamp = {{ field = \"t\", unit = \"{unit}\" }}"
            ));
            assert_eq!(
                mapped(&m, &format!(r#"{{"t":{value}}}"#))["ts"],
                want,
                "{unit}"
            );
        }
        let m = mapper(r#"timestamp = { field = "t", format = "%d/%m/%Y %H:%M:%S%.f" }"#);
        assert_eq!(
            mapped(&m, r#"{"t":"14/11/2023 22:13:20.5"}"#)["ts"],
            "2023-11-14T22:13:20.500Z"
        );
        let m = mapper(r#"timestamp = { field = "t", format = "%Y-%m-%d %H:%M:%S %z" }"#);
        assert_eq!(
            mapped(&m, r#"{"t":"2023-11-14 23:13:20 +0100"}"#)["ts"],
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn venue_rules_override_the_shared_ones() {
        let m = mapper(
            r#"
            rename = { price = "px" }
            [venues.B]
            rename = { price = "p" }
            constants = { currency = "EUR" }
            "#,
        );
        assert_eq!(mapped(&m, r#"{"venue":"A","px":1}"#)["price"], 1);
        let b = mapped(&m, r#"{"venue":"B","p":2,"px":9}"#);
        assert_eq!(
            (b["price"].clone(), b["currency"].clone()),
            (2.into(), "EUR".into())
        );
    }

    #[test]
    fn errors_are_dead_letters_naming_the_field() {
        let m = mapper(r#"timestamp = { field = "time_ns", unit = "ns" }"#);
        for (text, reason, needle) in [
            (r#"{"x":1}"#, DeadLetterReason::MissingField, "`time_ns`"),
            (
                r#"{"time_ns":"soon"}"#,
                DeadLetterReason::InvalidValue,
                "`time_ns`",
            ),
            (
                r#"{"time_ns":true}"#,
                DeadLetterReason::InvalidValue,
                "`time_ns`",
            ),
            (
                r#"{"time_ns":-5}"#,
                DeadLetterReason::InvalidValue,
                "`time_ns`",
            ),
            (
                r#"{"time_ns":1.5}"#,
                DeadLetterReason::InvalidValue,
                "ns precision",
            ),
            ("[1]", DeadLetterReason::Malformed, "not a JSON object"),
            ("{oops", DeadLetterReason::Malformed, "not a JSON object"),
        ] {
            let dl = m.map(line(text)).unwrap_err();
            assert_eq!(dl.reason, reason, "{text}");
            assert!(dl.message.contains(needle), "{text}: {}", dl.message);
            assert_eq!(dl.raw, text);
        }
        let m = mapper(r#"timestamp = { field = "t", format = "%Y-%m-%d" }"#);
        let dl = m.map(line(r#"{"t":"14/11/2023"}"#)).unwrap_err();
        assert!(dl.message.contains("`t`"), "{}", dl.message);
        let m = mapper(r#"rename = { price = "px", currency = "ccy" }"#);
        let dl = m.map(line(r#"{"qty":1}"#)).unwrap_err();
        assert_eq!(dl.reason, DeadLetterReason::MissingField);
        assert_eq!(dl.message, "missing field `px` (mapped to `price`)");
        // An optional field may be absent.
        assert!(m.map(line(r#"{"px":1}"#)).is_ok());
    }

    #[test]
    fn config_errors_name_their_keys() {
        let bad = |text: &str| -> Vec<String> {
            let cfg: MapConfig = toml::from_str(text).unwrap();
            Mapper::new(&cfg)
                .unwrap_err()
                .into_iter()
                .map(|e| e.to_string())
                .collect()
        };
        assert!(bad(r#"timestamp = { field = "t" }"#)[0].starts_with("timestamp.unit"));
        assert!(
            bad(r#"timestamp = { unit = "s", format = "%s" }"#)[0].starts_with("timestamp.format")
        );
        assert!(bad(r#"timestamp = { format = "%Q" }"#)[0].starts_with("timestamp.format"));
        assert!(
            bad("[venues.X.timestamp]\nfield = \"t\"")[0].starts_with("venues.X.timestamp.unit")
        );
        assert!(toml::from_str::<MapConfig>("renames = {}").is_err());
    }
}

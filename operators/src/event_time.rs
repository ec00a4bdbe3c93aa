//! Reading an event time from a record field: epoch seconds, milliseconds, microseconds or
//! nanoseconds, or text in a `strftime` format. `map` rewrites such a field into `ts`; a
//! source given `event_time` reads it to move its watermark.

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

use crate::record::DeadLetterReason;
use crate::OperatorError;

/// Where the event time is and how to read it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// The field holding the time, after renaming (default `ts`); it is replaced by `ts`.
    pub field: Option<String>,
    /// Epoch unit of a number (or numeric string): `s`, `ms`, `us` or `ns`. Seconds may have
    /// a fraction (`"1700000000.25"`).
    pub unit: Option<EpochUnit>,
    /// A `strftime` format for text times (`"%Y-%m-%d %H:%M:%S%.f"`); read as UTC unless the
    /// format has an offset (`%z`).
    pub format: Option<String>,
}

/// An epoch time unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EpochUnit {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl EpochUnit {
    fn ns_per_unit(self) -> i64 {
        match self {
            EpochUnit::S => 1_000_000_000,
            EpochUnit::Ms => 1_000_000,
            EpochUnit::Us => 1_000,
            EpochUnit::Ns => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EpochUnit::S => "epoch seconds",
            EpochUnit::Ms => "epoch milliseconds",
            EpochUnit::Us => "epoch microseconds",
            EpochUnit::Ns => "epoch nanoseconds",
        }
    }
}

#[derive(Debug, Clone)]
enum TimeReader {
    Epoch(EpochUnit),
    Format { format: String, zoned: bool },
}

/// A validated [`TimestampConfig`].
#[derive(Debug, Clone)]
pub struct TimeRule {
    /// The field read.
    pub field: String,
    reader: TimeReader,
}

impl TimeRule {
    /// Validates a config (`prefix`: its key in the node, for error keys).
    pub fn from_config(
        prefix: &str,
        cfg: &TimestampConfig,
        errors: &mut Vec<OperatorError>,
    ) -> Option<TimeRule> {
        let mut bad = |key: &str, message: &str| {
            errors.push(OperatorError::InvalidConfig {
                key: format!("{prefix}.{key}"),
                message: message.into(),
            })
        };
        let reader = match (cfg.unit, &cfg.format) {
            (Some(unit), None) => TimeReader::Epoch(unit),
            (None, Some(format)) => {
                use chrono::format::{Item, StrftimeItems};
                let items: Vec<Item> = StrftimeItems::new(format).collect();
                if format.trim().is_empty() || items.iter().any(|i| matches!(i, Item::Error)) {
                    bad("format", "is not a valid strftime format");
                    return None;
                }
                let zoned =
                    format.contains("%z") || format.contains("%:z") || format.contains("%#z");
                TimeReader::Format {
                    format: format.clone(),
                    zoned,
                }
            }
            (Some(_), Some(_)) => {
                bad("format", "give `unit` or `format`, not both");
                return None;
            }
            (None, None) => {
                bad("unit", "missing; give `unit` (s, ms, us, ns) or `format`");
                return None;
            }
        };
        let field = cfg.field.clone().unwrap_or_else(|| "ts".into());
        if field.is_empty() {
            bad("field", "must not be empty");
            return None;
        }
        Some(TimeRule { field, reader })
    }

    /// The time in ns since the epoch, or the dead-letter reason and message naming the field.
    pub fn read(&self, value: &Value) -> Result<i64, (DeadLetterReason, String)> {
        let field = &self.field;
        let invalid = |what: &str| {
            (
                DeadLetterReason::InvalidValue,
                format!("`{field}` {value} is not {what}"),
            )
        };
        let ns = match &self.reader {
            TimeReader::Epoch(unit) => {
                let text = match value {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.trim().to_string(),
                    _ => return Err(invalid(unit.name())),
                };
                let d = Decimal::from_str_exact(&text).map_err(|_| invalid(unit.name()))?;
                let ns = d
                    .checked_mul(Decimal::from(unit.ns_per_unit()))
                    .ok_or_else(|| invalid(unit.name()))?;
                if !ns.fract().is_zero() {
                    return Err(invalid(&format!(
                        "{} with at most ns precision",
                        unit.name()
                    )));
                }
                i64::try_from(ns).map_err(|_| invalid(unit.name()))?
            }
            TimeReader::Format { format, zoned } => {
                let Value::String(text) = value else {
                    return Err(invalid(&format!("text in the format {format:?}")));
                };
                let parsed = if *zoned {
                    DateTime::parse_from_str(text.trim(), format).map(|dt| dt.with_timezone(&Utc))
                } else {
                    NaiveDateTime::parse_from_str(text.trim(), format).map(|dt| dt.and_utc())
                };
                let dt = parsed
                    .map_err(|e| invalid(&format!("a time in the format {format:?} ({e})")))?;
                dt.timestamp_nanos_opt()
                    .ok_or_else(|| invalid("a time in range"))?
            }
        };
        if ns < 0 {
            return Err(invalid("a time after the Unix epoch"));
        }
        Ok(ns)
    }

    /// The event time of a raw JSON line in ms, if it has a readable one.
    pub fn ms_of_line(&self, line: &str) -> Option<u64> {
        let Value::Object(obj) = serde_json::from_str::<Value>(line).ok()? else {
            return None;
        };
        let ns = self.read(obj.get(&self.field)?).ok()?;
        u64::try_from(ns / 1_000_000).ok()
    }
}

/// Where a source finds a record's event time for its watermark.
#[derive(Debug, Clone, Default)]
pub enum EventTime {
    /// The raw tick contract's `ts` (RFC 3339 or epoch milliseconds).
    #[default]
    Ts,
    /// A venue field read by a rule.
    Field(TimeRule),
}

impl EventTime {
    /// The event time of a raw line in ms, if it has a readable one.
    pub fn ms(&self, line: &str) -> Option<u64> {
        self.read(line).0
    }

    /// [`EventTime::ms`], and where the tick fields lie when the scan for it found them.
    pub fn read(&self, line: &str) -> (Option<u64>, Option<crate::tick::FieldSpans>) {
        match self {
            EventTime::Ts => crate::tick::event_time_and_spans(line),
            EventTime::Field(rule) => (rule.ms_of_line(line), None),
        }
    }
}

//! Tick operators for tickflow: the record types and the per-record logic of `normalize`,
//! `enrich` and `window`.
//!
//! Everything here is plain, single-threaded logic with no dataflow in sight: the engine wraps
//! each operator in Timely plumbing (exchange, stashing by time, capabilities) and feeds it
//! records in a deterministic order. That keeps the contract testable with ordinary unit tests.
//!
//! Operator types are listed in one table, [`registry`].

pub mod enrich;
mod error;
pub mod normalize;
pub mod record;
pub mod tick;
pub mod window;

pub use error::OperatorError;
pub use record::RecordKind;

/// One operator type: its `type` name in graph TOML, the record kind it reads,
/// and its named outputs with the record kind of each (the first is the default output).
#[derive(Debug, Clone, Copy)]
pub struct OperatorType {
    /// The `type = "..."` value.
    pub name: &'static str,
    /// What the operator does, for `tickflow validate` messages and docs.
    pub description: &'static str,
    /// The record kind every input must carry.
    pub input: RecordKind,
    /// Named outputs, default first.
    pub outputs: &'static [(&'static str, RecordKind)],
}

/// Every operator type, in one greppable table.
pub fn registry() -> &'static [OperatorType] {
    &[
        OperatorType {
            name: "normalize",
            description: "parse raw ticks, convert currency, drop duplicates",
            input: RecordKind::Raw,
            outputs: &[
                ("out", RecordKind::Tick),
                ("dead_letter", RecordKind::DeadLetter),
            ],
        },
        OperatorType {
            name: "enrich",
            description: "join ticks with instrument reference data",
            input: RecordKind::Tick,
            outputs: &[
                ("out", RecordKind::Enriched),
                ("dead_letter", RecordKind::DeadLetter),
            ],
        },
        OperatorType {
            name: "window",
            description: "event-time OHLCV/VWAP bars over tumbling or sliding windows",
            input: RecordKind::Enriched,
            outputs: &[("out", RecordKind::Bar), ("late", RecordKind::Enriched)],
        },
    ]
}

/// Parses a duration string (`"500ms"`, `"5s"`, `"1m"`, `"1h 30m"`) into whole milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like \"500ms\", \"5s\" or \"1m\": {e}"))?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?} is finer than a millisecond"));
    }
    u64::try_from(d.as_millis()).map_err(|_| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("5s"), Ok(5_000));
        assert_eq!(duration_ms("1m"), Ok(60_000));
        assert_eq!(duration_ms("0s"), Ok(0));
        assert!(duration_ms("5").is_err());
        assert!(duration_ms("soon").is_err());
        assert!(duration_ms("1us").is_err());
    }
}

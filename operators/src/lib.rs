//! Tick operators for tickflow: the record types and the per-record logic of `normalize`,
//! `enrich` and `window`.
//!
//! Everything here is plain, single-threaded logic with no dataflow in sight: the engine wraps
//! each operator in Timely plumbing (exchange, stashing by time, capabilities) and feeds it
//! records in a deterministic order. That keeps the contract testable with ordinary unit tests.
//!
//! The engine's component registry (`tickflow_engine::components`) binds each to the dataflow.

mod bar;
pub use bar::instrument_route;
pub mod enrich;
mod error;
pub mod event_time;
pub mod map;
pub mod normalize;
pub mod record;
pub mod scan;
pub mod session;
pub mod tick;
pub mod window;

pub use error::OperatorError;
pub use record::RecordKind;

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

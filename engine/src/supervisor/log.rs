//! Reading the event log and stored projection views.

use std::path::Path;

use tickflow_state::{LogRecord, Store};

use super::*;

/// Opens the event log and decodes every record.
pub(super) fn read_log(
    dir: &Path,
    repair: bool,
) -> Result<(EventLog, OpenReport, Vec<LoggedEvent>), EngineError> {
    let path = dir.join(EVENT_LOG);
    let (log, report) = EventLog::open(&path, repair).map_err(|source| EngineError::EventLog {
        path: path.clone(),
        source,
    })?;
    let events = decode_all(&path, log.records())?;
    Ok((log, report, events))
}

fn decode_all(path: &Path, records: &[LogRecord]) -> Result<Vec<LoggedEvent>, EngineError> {
    let mut events = Vec::new();
    for r in records {
        let event = Event::decode(&r.payload).map_err(|e| {
            EngineError::Control(format!(
                "{}: record {} at byte {}: {e}",
                path.display(),
                r.seq,
                r.offset
            ))
        })?;
        events.push(LoggedEvent { seq: r.seq, event });
    }
    Ok(events)
}

/// Reads the event log of an engine data directory without starting anything (for
/// `tickflow events` and `tickflow replay`). Without `repair` the file is not changed (a
/// running engine may be appending to it); with it, the log is opened and repaired as
/// `serve --repair` would.
pub fn read_events(
    dir: &Path,
    repair: bool,
) -> Result<(Vec<LoggedEvent>, OpenReport), EngineError> {
    if repair {
        let (_, report, events) = read_log(dir, true)?;
        return Ok((events, report));
    }
    let path = dir.join(EVENT_LOG);
    if !path.is_file() {
        return Err(EngineError::Control(format!(
            "{} does not exist (is {} an engine data directory?)",
            path.display(),
            dir.display()
        )));
    }
    let (records, report) = EventLog::read(&path).map_err(|source| EngineError::EventLog {
        path: path.clone(),
        source,
    })?;
    Ok((decode_all(&path, &records)?, report))
}

/// A projection entry as of the newest checkpoint of a data directory.
pub(super) fn stored_view(
    dir: &Path,
    sink: &str,
    key: &str,
) -> Result<Option<String>, EngineError> {
    let Some(marker) = list_markers(dir)?.into_iter().find_map(|m| m.manifest.ok()) else {
        return Ok(None);
    };
    let state = |source| EngineError::State {
        part: format!("{}/state", dir.display()),
        source,
    };
    let store = Store::open_read_only(&dir.join("state")).map_err(state)?;
    let mut found = None;
    store
        .load(&crate::live::projection_table(sink), marker.id, |k, v| {
            if k == key.as_bytes() {
                found = Some(tickflow_state::codec::decode::<String>(v)?);
            }
            Ok(())
        })
        .map_err(state)?;
    Ok(found)
}

//! [`EventLog`]: an append-only file of checksummed records, the control plane's source of truth.
//!
//! Record: `[u32 len][u32 crc32c][u64 seq][payload]`, little-endian, `len` = payload bytes, the
//! CRC32C over `seq ‖ payload`, `seq` counting from 1 without gaps. An append is written and
//! fsync'd (and, when it created the file, the directory too) before it returns.
//!
//! Opening scans every record. A damaged **last** record (cut short by a crash, or with a bad
//! checksum and nothing after it) is a torn tail: it is truncated away and reported. A damaged
//! record with more data after it is corruption: opening fails with an error naming its byte
//! offset, unless `repair` is set, which truncates the log there (and reports what was lost).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StateError;

const HEADER: usize = 16;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What opening a log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes cut from the end: `(offset, bytes, why)` when a torn tail (or, with repair, a
    /// corrupt record and everything after it) was truncated.
    pub truncated: Option<(u64, u64, String)>,
}

/// An open event log.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    records: Vec<LogRecord>,
    len: u64,
}

fn io(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why the record at the start of `rest` cannot be read, or its `(seq, payload, size)`.
fn parse(rest: &[u8], expected_seq: u64) -> Result<(u64, &[u8], usize), (bool, String)> {
    if rest.len() < HEADER {
        return Err((
            true,
            format!("header cut short ({} of {HEADER} bytes)", rest.len()),
        ));
    }
    let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    let len = word(0) as usize;
    let crc = word(4);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&rest[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    let Some(body) = rest.get(8..HEADER + len) else {
        return Err((
            true,
            format!("payload cut short ({} of {len} bytes)", rest.len() - HEADER),
        ));
    };
    let at_end = rest.len() == HEADER + len;
    if crc32c::crc32c(body) != crc {
        return Err((at_end, "checksum mismatch".to_string()));
    }
    if seq != expected_seq {
        return Err((at_end, format!("sequence {seq}, expected {expected_seq}")));
    }
    Ok((seq, &rest[HEADER..HEADER + len], HEADER + len))
}

/// Whether an intact record with a sequence number after `seq` starts anywhere at or after
/// `from`.
fn intact_record_after(bytes: &[u8], from: usize, seq: u64) -> bool {
    (from..bytes.len().saturating_sub(HEADER - 1)).any(|at| {
        let rest = &bytes[at..];
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&rest[8..16]);
        let found = u64::from_le_bytes(seq_bytes);
        found > seq && parse(rest, found).is_ok()
    })
}

/// Reads every record of `bytes`: the records before the first damaged one, and where the
/// log would be cut (a torn tail, or with `repair` a damaged record and all after it).
fn scan(
    path: &Path,
    bytes: &[u8],
    repair: bool,
) -> Result<(Vec<LogRecord>, OpenReport), StateError> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut report = OpenReport::default();
    while offset < bytes.len() {
        match parse(&bytes[offset..], records.len() as u64 + 1) {
            Ok((seq, payload, size)) => {
                records.push(LogRecord {
                    seq,
                    offset: offset as u64,
                    payload: payload.to_vec(),
                });
                offset += size;
            }
            Err((cut_short, why)) => {
                // A record that looks cut short is a torn tail only if no intact record
                // follows it (a flipped bit in a length field also looks cut short).
                let torn_tail =
                    cut_short && !intact_record_after(bytes, offset + 1, records.len() as u64 + 1);
                if !torn_tail && !repair {
                    return Err(StateError::Corrupt(format!(
                        "{}: record {} at byte offset {offset}: {why}; the records after it \
                         cannot be trusted (open with --repair to truncate the log there)",
                        path.display(),
                        records.len() + 1
                    )));
                }
                let cut = (bytes.len() - offset) as u64;
                report.truncated = Some((offset as u64, cut, why));
                break;
            }
        }
    }
    Ok((records, report))
}

impl EventLog {
    /// Reads the log at `path` without changing it (for tools reading a log an engine may
    /// be appending to): the intact records, and a torn tail reported but left in place.
    pub fn read(path: &Path) -> Result<(Vec<LogRecord>, OpenReport), StateError> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        scan(path, &bytes, false)
    }

    /// Opens (or creates) the log at `path`; see the module docs for torn tails and `repair`.
    pub fn open(path: &Path, repair: bool) -> Result<(EventLog, OpenReport), StateError> {
        let created = !path.exists();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        if created {
            file.sync_all().map_err(|e| io(path, e))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io(dir, e))?;
            }
        }
        file.try_lock().map_err(|e| {
            StateError::InUse(format!(
                "{}: in use by another process ({e}); one engine per data directory",
                path.display()
            ))
        })?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(|e| io(path, e))?;
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let (records, report) = scan(path, &bytes, repair)?;
        let offset = report
            .truncated
            .as_ref()
            .map_or(bytes.len() as u64, |t| t.0);
        if report.truncated.is_some() {
            file.set_len(offset)
                .and_then(|_| file.sync_all())
                .map_err(|e| io(path, e))?;
        }
        let len = offset;
        Ok((
            EventLog {
                path: path.to_path_buf(),
                file,
                records,
                len,
            },
            report,
        ))
    }

    /// Appends a record and makes it durable; returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, StateError> {
        let seq = self.records.len() as u64 + 1;
        let len = u32::try_from(payload.len())
            .map_err(|_| StateError::Corrupt("event larger than 4 GiB".into()))?;
        let mut body = Vec::with_capacity(8 + payload.len());
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(payload);
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        record.extend_from_slice(&body);
        self.file
            .write_all(&record)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| io(&self.path, e))?;
        self.records.push(LogRecord {
            seq,
            offset: self.len,
            payload: payload.to_vec(),
        });
        self.len += record.len() as u64;
        Ok(seq)
    }

    /// Every record, oldest first.
    pub fn records(&self) -> &[LogRecord] {
        &self.records
    }

    /// The newest sequence number (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.records.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(log: &EventLog) -> Vec<Vec<u8>> {
        log.records().iter().map(|r| r.payload.clone()).collect()
    }

    #[test]
    fn appends_survive_reopen_with_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/events.log");
        let (mut log, report) = EventLog::open(&path, false).unwrap();
        assert_eq!(report, OpenReport::default());
        assert_eq!(log.append(b"one").unwrap(), 1);
        assert_eq!(log.append(b"").unwrap(), 2);
        assert_eq!(log.append(b"three").unwrap(), 3);
        drop(log);
        let (log, _) = EventLog::open(&path, false).unwrap();
        assert_eq!(
            payloads(&log),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert_eq!(log.last_seq(), 3);
    }

    #[test]
    fn truncation_at_every_offset_of_the_last_record_keeps_the_complete_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let (mut log, _) = EventLog::open(&path, false).unwrap();
        log.append(b"first event").unwrap();
        log.append(b"second event").unwrap();
        let last_start = log.records()[1].offset as usize;
        drop(log);
        let full = std::fs::read(&path).unwrap();
        for cut in last_start..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (mut log, report) = EventLog::open(&path, false).unwrap();
            assert_eq!(
                payloads(&log),
                vec![b"first event".to_vec()],
                "cut at {cut}"
            );
            let expect_report = cut > last_start;
            assert_eq!(report.truncated.is_some(), expect_report, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
            // Appending after the repair continues the sequence.
            assert_eq!(log.append(b"again").unwrap(), 2);
        }
    }

    #[test]
    fn a_flipped_bit_before_the_tail_stops_open_unless_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let (mut log, _) = EventLog::open(&path, false).unwrap();
        for e in ["a", "b", "c"] {
            log.append(e.as_bytes()).unwrap();
        }
        let second = log.records()[1].offset;
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second as usize + HEADER] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = EventLog::open(&path, false).unwrap_err().to_string();
        assert!(
            err.contains(&format!("byte offset {second}")) && err.contains("--repair"),
            "{err}"
        );
        // A flipped bit in a length field makes the record look cut short: still corruption.
        let mut len_flip = std::fs::read(&path).unwrap();
        len_flip[second as usize + HEADER] ^= 0x10;
        len_flip[second as usize + 1] ^= 0x01;
        let keep = std::fs::read(&path).unwrap();
        std::fs::write(&path, &len_flip).unwrap();
        let err = EventLog::open(&path, false).unwrap_err().to_string();
        assert!(err.contains(&format!("byte offset {second}")), "{err}");
        std::fs::write(&path, &keep).unwrap();
        let (log, report) = EventLog::open(&path, true).unwrap();
        assert_eq!(payloads(&log), vec![b"a".to_vec()]);
        assert_eq!(report.truncated.map(|t| t.0), Some(second));
        // One writer at a time: a second open is refused while the first is held.
        let err = EventLog::open(&path, false).unwrap_err();
        assert!(matches!(err, StateError::InUse(_)), "{err}");
        drop(log);
        // A flipped bit in the last record is a torn tail.
        let (mut log, _) = EventLog::open(&path, false).unwrap();
        log.append(b"b2").unwrap();
        let last = log.records()[1].offset as usize;
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[last + HEADER] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (log, report) = EventLog::open(&path, false).unwrap();
        assert_eq!(log.last_seq(), 1);
        assert!(report.truncated.unwrap().2.contains("checksum"));
    }
}

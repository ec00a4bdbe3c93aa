//! [`EventLog`]: an append-only, hash-chained file of checksummed records, the control
//! plane's source of truth and audit trail.
//!
//! Record: `[u32 len][u32 crc32c][u64 seq][32-byte prev][payload]`, little-endian, `len` =
//! payload bytes, the CRC32C over `seq ‖ prev ‖ payload`, `seq` counting from 1 without gaps.
//! `prev` chains the records: it is the hash of the record before (SHA-256 of its `prev ‖ seq
//! ‖ payload`; zeros for the first), so a record rewritten with a fresh checksum breaks the
//! chain at the record after it, and a rewritten last record changes the head hash
//! ([`EventLog::head`]) that an operator can note elsewhere. An append is written and fsync'd
//! (and, when it created the file, the directory too) before it returns.
//!
//! Opening scans and verifies every record. Only a last record *cut short* (its bytes end
//! before its length says, and they do not checksum as a complete record) is a torn tail, left
//! by a crash during an append: it is truncated away and reported. Anything else — a complete
//! record with a bad checksum, a wrong sequence number, a broken chain, a damaged record with
//! more data after it — is damage: opening fails with an error naming its byte offset, unless
//! `repair` is set. Repair never deletes: it copies the original file aside
//! (`events.log.damaged-<unix seconds>`), then cuts the log at the damage and reports what was
//! cut.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::StateError;

const HEADER: usize = 48;

/// A record's hash: what the next record's `prev` holds.
pub type ChainHash = [u8; 32];

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

/// What a cut removed from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Byte offset of the cut.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Why.
    pub why: String,
    /// Where the original file was kept (repairs only; a torn tail is not kept).
    pub saved_copy: Option<PathBuf>,
}

/// What opening a log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// What was cut from the end: a torn tail, or (with repair) the damaged record and
    /// everything after it.
    pub truncated: Option<Cut>,
    /// Hex SHA-256 head of the chain after the last intact record (64 zeros when empty).
    pub head: String,
}

/// An open event log.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    records: Vec<LogRecord>,
    len: u64,
    head: ChainHash,
}

fn io(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The hash a record with `prev`, `seq` and `payload` passes on to the next one.
fn chain(prev: &ChainHash, seq: u64, payload: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// Lower-case hex.
pub fn hex(hash: &ChainHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record as found at the start of some bytes.
struct Parsed<'a> {
    seq: u64,
    prev: ChainHash,
    payload: &'a [u8],
    size: usize,
}

/// Why bytes do not start with an intact record.
enum Bad {
    /// They end before the record does, and what is there is not a complete record with a
    /// damaged length: a torn tail if nothing intact follows.
    CutShort(String),
    /// A complete record that is wrong.
    Damaged(String),
}

fn word(rest: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]])
}

fn parse(rest: &[u8]) -> Result<Parsed<'_>, Bad> {
    parse_with(rest, true)
}

/// `recover_length`: when the bytes end before the record does, check whether they are a
/// complete record with a damaged length (a checksum over the rest: only for the tail).
fn parse_with(rest: &[u8], recover_length: bool) -> Result<Parsed<'_>, Bad> {
    if rest.len() < HEADER {
        return Err(Bad::CutShort(format!(
            "header cut short ({} of {HEADER} bytes)",
            rest.len()
        )));
    }
    let len = word(rest, 0) as usize;
    let crc = word(rest, 4);
    let Some(body) = rest.get(8..HEADER.saturating_add(len)) else {
        // All the bytes that are there checksum as one record: the record is complete and
        // its length field is what was damaged.
        if recover_length && crc32c::crc32c(&rest[8..]) == crc {
            return Err(Bad::Damaged("length field damaged".into()));
        }
        return Err(Bad::CutShort(format!(
            "payload cut short ({} of {len} bytes)",
            rest.len() - HEADER
        )));
    };
    if crc32c::crc32c(body) != crc {
        return Err(Bad::Damaged("checksum mismatch".into()));
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&rest[8..16]);
    let mut prev = [0u8; 32];
    prev.copy_from_slice(&rest[16..HEADER]);
    Ok(Parsed {
        seq: u64::from_le_bytes(seq_bytes),
        prev,
        payload: &rest[HEADER..HEADER + len],
        size: HEADER + len,
    })
}

/// Whether a record that checksums starts anywhere at or after `from`.
fn intact_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|at| parse_with(&bytes[at..], false).is_ok())
}

/// The verified records of `bytes`, the chain head after them, and the damage or torn tail
/// that ends them: `(offset, why, torn)`.
type Scan = (Vec<LogRecord>, ChainHash, Option<(usize, String, bool)>);

fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut head = [0u8; 32];
    while offset < bytes.len() {
        let expected = records.len() as u64 + 1;
        let problem = match parse(&bytes[offset..]) {
            Ok(r) if r.seq != expected => format!("sequence {}, expected {expected}", r.seq),
            Ok(r) if r.prev != head => format!(
                "hash chain broken: record {expected} does not follow the record before it                  (a record was rewritten or removed)"
            ),
            Ok(r) => {
                head = chain(&head, r.seq, r.payload);
                records.push(LogRecord {
                    seq: r.seq,
                    offset: offset as u64,
                    payload: r.payload.to_vec(),
                });
                offset += r.size;
                continue;
            }
            Err(Bad::Damaged(why)) => why,
            Err(Bad::CutShort(why)) => {
                // A flipped bit in a length field also looks cut short when a record follows.
                let torn = !intact_record_after(bytes, offset + 1);
                return (records, head, Some((offset, why, torn)));
            }
        };
        return (records, head, Some((offset, problem, false)));
    }
    (records, head, None)
}

fn damage(path: &Path, offset: usize, record: usize, why: &str) -> StateError {
    StateError::Corrupt(format!(
        "{}: record {record} at byte offset {offset}: {why}; the log cannot be trusted from          there (start with --repair to keep a copy of the file and cut it there)",
        path.display()
    ))
}

impl EventLog {
    /// Reads and verifies the log at `path` without changing it (for tools reading a log an
    /// engine may be appending to): the intact records, and a torn tail reported but left in
    /// place. Damage is an error.
    pub fn read(path: &Path) -> Result<(Vec<LogRecord>, OpenReport), StateError> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let (records, head, problem) = scan(&bytes);
        let truncated = match problem {
            None => None,
            Some((offset, why, true)) => Some(Cut {
                offset: offset as u64,
                bytes: (bytes.len() - offset) as u64,
                why,
                saved_copy: None,
            }),
            Some((offset, why, false)) => {
                return Err(damage(path, offset, records.len() + 1, &why))
            }
        };
        Ok((
            records,
            OpenReport {
                truncated,
                head: hex(&head),
            },
        ))
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
            sync_dir(path)?;
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
        let (records, head, problem) = scan(&bytes);
        let mut truncated = None;
        if let Some((offset, why, torn)) = problem {
            let mut saved_copy = None;
            if !torn {
                if !repair {
                    return Err(damage(path, offset, records.len() + 1, &why));
                }
                saved_copy = Some(keep_copy(path, &bytes)?);
            }
            file.set_len(offset as u64)
                .and_then(|_| file.sync_all())
                .map_err(|e| io(path, e))?;
            truncated = Some(Cut {
                offset: offset as u64,
                bytes: (bytes.len() - offset) as u64,
                why,
                saved_copy,
            });
        }
        let len = truncated.as_ref().map_or(bytes.len() as u64, |t| t.offset);
        Ok((
            EventLog {
                path: path.to_path_buf(),
                file,
                records,
                len,
                head,
            },
            OpenReport {
                truncated,
                head: hex(&head),
            },
        ))
    }

    /// Appends a record and makes it durable; returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, StateError> {
        let seq = self.records.len() as u64 + 1;
        let len = u32::try_from(payload.len())
            .map_err(|_| StateError::Corrupt("event larger than 4 GiB".into()))?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&self.head);
        record.extend_from_slice(payload);
        let crc = crc32c::crc32c(&record[8..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all(&record)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| io(&self.path, e))?;
        self.head = chain(&self.head, seq, payload);
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

    /// The chain head: the hash of the newest record, hex.
    pub fn head(&self) -> String {
        hex(&self.head)
    }
}

fn sync_dir(path: &Path) -> Result<(), StateError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// Writes `bytes` (the damaged log as found) beside `path`, durable, under a name no earlier
/// copy has; returns its path.
fn keep_copy(path: &Path, bytes: &[u8]) -> Result<PathBuf, StateError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path.file_name().map_or_else(
        || "events.log".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut n = 0;
    let copy = loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!(".{n}")
        };
        let candidate = path.with_file_name(format!("{name}.damaged-{secs}{suffix}"));
        if !candidate.exists() {
            break candidate;
        }
        n += 1;
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&copy)
        .map_err(|e| io(&copy, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&copy, e))?;
    sync_dir(&copy)?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(log: &EventLog) -> Vec<Vec<u8>> {
        log.records().iter().map(|r| r.payload.clone()).collect()
    }

    fn log_of(dir: &Path, events: &[&str]) -> (PathBuf, Vec<u64>) {
        let path = dir.join("events.log");
        let (mut log, _) = EventLog::open(&path, false).unwrap();
        for e in events {
            log.append(e.as_bytes()).unwrap();
        }
        let offsets = log.records().iter().map(|r| r.offset).collect();
        (path, offsets)
    }

    #[test]
    fn appends_survive_reopen_with_sequence_numbers_and_one_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/events.log");
        let (mut log, report) = EventLog::open(&path, false).unwrap();
        assert_eq!(report.truncated, None);
        assert_eq!(report.head, "0".repeat(64));
        assert_eq!(log.append(b"one").unwrap(), 1);
        assert_eq!(log.append(b"").unwrap(), 2);
        assert_eq!(log.append(b"three").unwrap(), 3);
        let head = log.head();
        drop(log);
        let (log, report) = EventLog::open(&path, false).unwrap();
        assert_eq!(
            payloads(&log),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert_eq!(log.last_seq(), 3);
        assert_eq!((log.head(), report.head), (head.clone(), head.clone()));
        let (_, read) = EventLog::read(&path).unwrap();
        assert_eq!(read.head, head);
    }

    #[test]
    fn truncation_at_every_offset_of_the_last_record_keeps_the_complete_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = log_of(dir.path(), &["first event", "second event"]);
        let last_start = offsets[1] as usize;
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
            // Appending after the cut continues the sequence and the chain.
            assert_eq!(log.append(b"again").unwrap(), 2);
            drop(log);
            let (log, _) = EventLog::open(&path, false).unwrap();
            assert_eq!(log.last_seq(), 2, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_in_the_last_complete_record_stops_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = log_of(dir.path(), &["a", "b", "the last event"]);
        let last = offsets[2] as usize;
        let keep = std::fs::read(&path).unwrap();
        for at in last..keep.len() {
            for bit in [0x01u8, 0x10, 0x80] {
                let mut bytes = keep.clone();
                bytes[at] ^= bit;
                std::fs::write(&path, &bytes).unwrap();
                let err = EventLog::open(&path, false).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("byte offset {last}")) && err.contains("--repair"),
                    "flip {bit:#x} at {at}: {err}"
                );
                assert!(EventLog::read(&path).is_err(), "flip {bit:#x} at {at}");
                // Refusing changed nothing.
                assert_eq!(std::fs::read(&path).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn repair_keeps_the_original_and_reports_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = log_of(dir.path(), &["a", "b", "c"]);
        let second = offsets[1] as usize;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second + HEADER] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = EventLog::open(&path, false).unwrap_err().to_string();
        assert!(err.contains(&format!("byte offset {second}")), "{err}");
        // A flipped bit in a length field makes the record look cut short: still damage.
        let mut len_flip = bytes.clone();
        len_flip[second + 1] ^= 0x01;
        std::fs::write(&path, &len_flip).unwrap();
        let err = EventLog::open(&path, false).unwrap_err().to_string();
        assert!(err.contains(&format!("byte offset {second}")), "{err}");
        std::fs::write(&path, &bytes).unwrap();
        let (log, report) = EventLog::open(&path, true).unwrap();
        assert_eq!(payloads(&log), vec![b"a".to_vec()]);
        let cut = report.truncated.unwrap();
        assert_eq!(
            (cut.offset, cut.bytes),
            (second as u64, (bytes.len() - second) as u64)
        );
        let copy = cut.saved_copy.expect("the original is kept");
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            bytes,
            "the copy is the original"
        );
        // One writer at a time: a second open is refused while the first is held.
        let err = EventLog::open(&path, false).unwrap_err();
        assert!(matches!(err, StateError::InUse(_)), "{err}");
    }

    #[test]
    fn a_rewritten_record_with_a_fresh_checksum_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = log_of(dir.path(), &["deploy v1", "approve", "rollback"]);
        let head = EventLog::read(&path).unwrap().1.head;
        let bytes = std::fs::read(&path).unwrap();
        // Rewrite record 2's payload (same length) and recompute its CRC, as a forger would.
        let rewrite = |bytes: &[u8], at: usize| {
            let mut forged = bytes.to_vec();
            forged[at + HEADER] = b'A';
            let len = word(&forged, at) as usize;
            let crc = crc32c::crc32c(&forged[at + 8..at + HEADER + len]);
            forged[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            forged
        };
        std::fs::write(&path, rewrite(&bytes, offsets[1] as usize)).unwrap();
        let err = EventLog::open(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("hash chain") && err.contains(&format!("byte offset {}", offsets[2])),
            "{err}"
        );
        // The last record rewritten: the chain holds, but the head the operator noted moves.
        std::fs::write(&path, rewrite(&bytes, offsets[2] as usize)).unwrap();
        let (_, report) = EventLog::read(&path).unwrap();
        assert_ne!(report.head, head);
    }
}

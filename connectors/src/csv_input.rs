//! CSV input for file sources (`format = "csv"`): a header row names the fields; each record
//! becomes a JSON object with the header's fields in order, so everything downstream reads
//! the same contract as JSON lines.
//!
//! Values (as written, not trimmed): empty fields are left out (a missing field); the text
//! columns (`venue`, `symbol`, `currency` unless configured) are always text; any other value
//! that is a JSON number (`101.25`, `7`) stays a number, exactly as written, and the rest is
//! text. A record whose field count differs from the header's, or
//! that is not UTF-8, is passed on as its raw text (not JSON), which `normalize` turns into a
//! `malformed` dead letter: nothing is dropped.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::{ConnectorError, ReadRecord, RecordReader, Resume};

/// Columns kept as text by default, even when they look like numbers.
pub const TEXT_COLUMNS: &[&str] = &["venue", "symbol", "currency"];

/// Reads a CSV file record by record.
pub struct CsvReader {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    headers: Vec<String>,
    /// Per column: kept as text.
    text: Vec<bool>,
    record: csv::ByteRecord,
    len: u64,
}

fn csv_error(path: &Path, line: u64, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Csv {
        path: path.to_path_buf(),
        line,
        message: e.to_string(),
    }
}

impl CsvReader {
    /// Opens `path` and reads its header row; `text_columns` stay text even when a value looks
    /// like a number.
    pub fn open(path: impl AsRef<Path>, text_columns: &[String]) -> Result<Self, ConnectorError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| ConnectorError::io(&path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ConnectorError::io(&path, e))?
            .len();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let headers = match reader.headers() {
            Ok(h) => h.iter().map(|f| f.trim().to_string()).collect::<Vec<_>>(),
            Err(e) => return Err(csv_error(&path, 1, e)),
        };
        if len > 0 && (headers.is_empty() || headers.iter().any(String::is_empty)) {
            return Err(csv_error(&path, 1, "the header row must name every column"));
        }
        let text = headers
            .iter()
            .map(|h| text_columns.iter().any(|t| t == h))
            .collect();
        Ok(CsvReader {
            path,
            reader,
            headers,
            text,
            record: csv::ByteRecord::new(),
            len,
        })
    }

    /// The record as a JSON object, or its raw text when it cannot be one.
    fn render(&self) -> String {
        let fields: Option<Vec<&str>> = self
            .record
            .iter()
            .map(|f| std::str::from_utf8(f).ok())
            .collect();
        let raw = || {
            let bytes: Vec<u8> = self.record.as_slice().to_vec();
            tickflow_state::text::line_text(&bytes)
        };
        let Some(fields) = fields else {
            return raw();
        };
        if fields.len() != self.headers.len() {
            return format!(
                "csv record with {} fields, the header has {}: {}",
                fields.len(),
                self.headers.len(),
                fields.join(",")
            );
        }
        let mut out = String::with_capacity(self.record.as_slice().len() + 16 * fields.len());
        out.push('{');
        let mut first = true;
        for ((name, value), text) in self.headers.iter().zip(fields).zip(&self.text) {
            if value.is_empty() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&serde_json::Value::from(name.as_str()).to_string());
            out.push(':');
            let number = !text && serde_json::from_str::<serde_json::Number>(value).is_ok();
            if number {
                out.push_str(value);
            } else {
                out.push_str(&serde_json::Value::from(value).to_string());
            }
        }
        out.push('}');
        out
    }
}

impl RecordReader for CsvReader {
    fn read_batch(
        &mut self,
        max: usize,
        out: &mut Vec<ReadRecord>,
    ) -> Result<bool, ConnectorError> {
        for _ in 0..max {
            let before = Resume {
                offset: self.reader.position().byte(),
                line: self.reader.position().line(),
            };
            let line = before.line;
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|e| csv_error(&self.path, line, e))?;
            if !more {
                return Ok(false);
            }
            let line = self.record.position().map_or(line, |p| p.line());
            out.push(ReadRecord {
                line,
                text: self.render(),
                before,
            });
        }
        Ok(true)
    }

    fn seek(&mut self, offset: u64, line: u64) -> Result<(), ConnectorError> {
        if offset > self.len {
            return Err(csv_error(
                &self.path,
                line,
                format!(
                    "checkpoint position {offset} is past the end of the file ({} bytes)",
                    self.len
                ),
            ));
        }
        let mut pos = csv::Position::new();
        pos.set_byte(offset).set_line(line);
        self.reader
            .seek(pos)
            .map_err(|e| csv_error(&self.path, line, e))
    }

    fn offset(&self) -> u64 {
        self.reader.position().byte()
    }

    fn line(&self) -> u64 {
        self.reader.position().line()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        TEXT_COLUMNS.iter().map(|c| c.to_string()).collect()
    }

    fn read_all(r: &mut CsvReader) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while r.read_batch(2, &mut out).unwrap() {}
        out.into_iter().map(|r| (r.line, r.text)).collect()
    }

    #[test]
    fn records_become_json_objects_and_resume_at_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "venue,symbol,ts,price,size,seq\n\
             XNAS,\"aa, pl\",2024-01-02T10:00:00Z,187.50,100,1\n\
             XNAS,\"multi\nline\",1704189600000,1e2,,2\n\
             XNAS,007,x,\"say \"\"hi\"\"\",5,3\n\
             short,row\n",
        )
        .unwrap();
        let mut r = CsvReader::open(&path, &defaults()).unwrap();
        let all = read_all(&mut r);
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[0].1,
            r#"{"venue":"XNAS","symbol":"aa, pl","ts":"2024-01-02T10:00:00Z","price":187.50,"size":100,"seq":1}"#
        );
        assert_eq!(
            all[1].1,
            r#"{"venue":"XNAS","symbol":"multi\nline","ts":1704189600000,"price":1e2,"seq":2}"#
        );
        assert_eq!(
            all[2].1,
            r#"{"venue":"XNAS","symbol":"007","ts":"x","price":"say \"hi\"","size":5,"seq":3}"#
        );
        assert!(all[3]
            .1
            .starts_with("csv record with 2 fields, the header has 6"));
        // Line numbers are the records' first lines; resuming after record 1 reads the rest.
        assert_eq!(
            all.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            vec![2, 3, 5, 6]
        );
        let mut r = CsvReader::open(&path, &defaults()).unwrap();
        let mut first = Vec::new();
        r.read_batch(2, &mut first).unwrap();
        // Where the reader stood before record 2 is where it stands after record 1.
        let (offset, line) = (first[1].before.offset, first[1].before.line);
        let mut again = CsvReader::open(&path, &defaults()).unwrap();
        again.seek(offset, line).unwrap();
        assert_eq!(read_all(&mut again), all[1..].to_vec());
    }

    #[test]
    fn configured_text_columns_stay_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "sym,px\n7203,2500.5\n").unwrap();
        let mut r = CsvReader::open(&path, &["sym".to_string()]).unwrap();
        assert_eq!(read_all(&mut r)[0].1, r#"{"sym":"7203","px":2500.5}"#);
        let mut r = CsvReader::open(&path, &defaults()).unwrap();
        assert_eq!(read_all(&mut r)[0].1, r#"{"sym":7203,"px":2500.5}"#);
    }
}

//! JSON-lines files: a batched line reader for sources, a file sink and a stdout sink.
//!
//! ```toml
//! [sources.ticks]
//! type = "file"
//! path = "examples/data/ticks.jsonl"
//! max_out_of_orderness = "2s"
//!
//! [sinks.bars]
//! type = "file"
//! input = "bars"
//! path = "out/bars.jsonl"
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConnectorError, LineSink, ReadRecord, Resume};

/// Configuration of a `file` source (besides `type`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file to read, relative to the working directory.
    pub path: String,
    /// `json` (default): one JSON object per line; `csv`: a header row naming the fields,
    /// then one record per row (quoted fields may hold commas, quotes and line breaks).
    #[serde(default)]
    pub format: FileFormat,
    /// CSV only: columns kept as text even when a value looks like a number (default `venue`,
    /// `symbol`, `currency`; name a venue's own columns, such as `sym`, before a `map`).
    pub text_columns: Option<Vec<String>>,
    /// Where a record's event time is when it is not in `ts` (RFC 3339 or epoch ms), such
    /// as venue records a `map` operator rewrites later: `{ field = "time_ns", unit = "ns" }`
    /// (or `format = "..."`). The watermark follows it.
    pub event_time: Option<tickflow_operators::event_time::TimestampConfig>,
    /// How far behind the newest event time the watermark trails; defaults to
    /// `[graph.defaults].max_out_of_orderness`.
    pub max_out_of_orderness: Option<String>,
    /// Replays the file no faster than this many records per second of wall-clock time
    /// (a demo, or a rollout rehearsed on recorded ticks); none: as fast as it can.
    pub replay_rate: Option<u64>,
}

/// The record format of a file source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// JSON lines.
    #[default]
    Json,
    /// CSV with a header row.
    Csv,
}

/// Configuration of a `file` sink (besides `type` and `input`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to write, relative to the working directory; parent folders are created.
    pub path: String,
}

/// Configuration of a `stdout` sink (besides `type` and `input`): it takes no options.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

/// Reads a file line by line in batches, numbering lines from 1.
pub struct LineReader {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    offset: u64,
    len: u64,
    buf: Vec<u8>,
}

impl LineReader {
    /// Opens `path` for reading.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| ConnectorError::io(&path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ConnectorError::io(&path, e))?
            .len();
        Ok(LineReader {
            path,
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            offset: 0,
            len,
            buf: Vec::with_capacity(256),
        })
    }

    /// Appends up to `max` lines to `out` as `(line_number, text)`, without terminators
    /// (bytes that are not UTF-8 are replaced). Returns `false` once the end of the file is reached.
    pub fn read_batch(
        &mut self,
        max: usize,
        out: &mut Vec<ReadRecord>,
    ) -> Result<bool, ConnectorError> {
        for _ in 0..max {
            let before = Resume {
                offset: self.offset,
                line: self.line,
            };
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| ConnectorError::io(&self.path, e))?;
            if n == 0 {
                return Ok(false);
            }
            self.offset += n as u64;
            self.line += 1;
            let mut bytes = &self.buf[..];
            if let Some(rest) = bytes.strip_suffix(b"\n") {
                bytes = rest;
            }
            if let Some(rest) = bytes.strip_suffix(b"\r") {
                bytes = rest;
            }
            out.push(ReadRecord {
                line: self.line,
                text: tickflow_state::text::line_text(bytes),
                before,
            });
        }
        Ok(true)
    }

    /// Bytes read so far.
    /// Continues from a position recorded earlier: `offset` bytes and `line` lines consumed.
    pub fn seek(&mut self, offset: u64, line: u64) -> Result<(), ConnectorError> {
        use std::io::Seek;
        if offset > self.len {
            return Err(ConnectorError::io(
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "checkpoint position {offset} is past the end of the file ({} bytes)",
                        self.len
                    ),
                ),
            ));
        }
        self.reader
            .seek(std::io::SeekFrom::Start(offset))
            .map_err(|e| ConnectorError::io(&self.path, e))?;
        self.offset = offset;
        self.line = line;
        Ok(())
    }

    /// Lines read so far.
    pub fn line(&self) -> u64 {
        self.line
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl crate::RecordReader for LineReader {
    fn read_batch(
        &mut self,
        max: usize,
        out: &mut Vec<ReadRecord>,
    ) -> Result<bool, ConnectorError> {
        LineReader::read_batch(self, max, out)
    }

    fn seek(&mut self, offset: u64, line: u64) -> Result<(), ConnectorError> {
        LineReader::seek(self, offset, line)
    }

    fn offset(&self) -> u64 {
        LineReader::offset(self)
    }

    fn line(&self) -> u64 {
        LineReader::line(self)
    }

    fn len(&self) -> u64 {
        LineReader::len(self)
    }
}

/// Writes lines to a file, created (with its parent folders) or truncated on open.
pub struct FileSink {
    path: PathBuf,
    writer: BufWriter<File>,
    bytes: u64,
}

impl FileSink {
    /// Creates or truncates `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| ConnectorError::io(parent, e))?;
        }
        let file = File::create(&path).map_err(|e| ConnectorError::io(&path, e))?;
        Ok(FileSink {
            path,
            writer: BufWriter::with_capacity(1 << 16, file),
            bytes: 0,
        })
    }

    /// Reopens an output file written before a restart, dropping everything past `bytes`
    /// (output made after the checkpoint being resumed from), and appends from there.
    pub fn open_at(path: impl AsRef<Path>, bytes: u64) -> Result<Self, ConnectorError> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| ConnectorError::io(&path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ConnectorError::io(&path, e))?
            .len();
        if len < bytes {
            return Err(ConnectorError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("has {len} bytes, fewer than the {bytes} the checkpoint recorded"),
                ),
            ));
        }
        file.set_len(bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| ConnectorError::io(&path, e))?;
        let mut writer = BufWriter::with_capacity(1 << 16, file);
        use std::io::Seek;
        writer
            .seek(std::io::SeekFrom::Start(bytes))
            .map_err(|e| ConnectorError::io(&path, e))?;
        Ok(FileSink {
            path,
            writer,
            bytes,
        })
    }
}

impl LineSink for FileSink {
    fn write_line(&mut self, line: &str) -> Result<(), ConnectorError> {
        self.bytes += line.len() as u64 + 1;
        self.writer
            .write_all(line.as_bytes())
            .and_then(|_| self.writer.write_all(b"\n"))
            .map_err(|e| ConnectorError::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.writer
            .flush()
            .map_err(|e| ConnectorError::io(&self.path, e))
    }

    fn sync(&mut self, fsync: bool) -> Result<u64, ConnectorError> {
        self.flush()?;
        if fsync {
            self.writer
                .get_ref()
                .sync_data()
                .map_err(|e| ConnectorError::io(&self.path, e))?;
        }
        Ok(self.bytes)
    }
}

/// Writes lines to standard output.
pub struct StdoutSink {
    out: BufWriter<std::io::Stdout>,
}

impl StdoutSink {
    /// A sink on this process's standard output.
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::new(std::io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl LineSink for StdoutSink {
    fn write_line(&mut self, line: &str) -> Result<(), ConnectorError> {
        writeln!(self.out, "{line}").map_err(|e| ConnectorError::io("<stdout>", e))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out
            .flush()
            .map_err(|e| ConnectorError::io("<stdout>", e))
    }

    fn sync(&mut self, _fsync: bool) -> Result<u64, ConnectorError> {
        self.flush()?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbered_lines_in_batches_and_strips_terminators() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, b"a\r\nb\n\nd\xffe").unwrap();
        let mut r = LineReader::open(&path).unwrap();
        assert_eq!(r.len(), 9);
        let mut out = vec![];
        let lines = |out: &[ReadRecord]| -> Vec<(u64, String)> {
            out.iter().map(|r| (r.line, r.text.clone())).collect()
        };
        assert!(r.read_batch(2, &mut out).unwrap());
        assert_eq!(lines(&out), vec![(1, "a".into()), (2, "b".into())]);
        assert_eq!(out[1].before, Resume { offset: 3, line: 1 });
        out.clear();
        assert!(!r.read_batch(10, &mut out).unwrap());
        // Bytes that are not UTF-8 travel whole, for normalize to dead-letter.
        let invalid = tickflow_state::text::line_text(b"d\xffe");
        assert_eq!(lines(&out), vec![(3, "".into()), (4, invalid.clone())]);
        assert_eq!(r.offset(), 9);
        // Resuming from a recorded position continues line numbers and bytes.
        let mut r = LineReader::open(&path).unwrap();
        r.seek(5, 2).unwrap();
        out.clear();
        r.read_batch(10, &mut out).unwrap();
        assert_eq!(lines(&out), vec![(3, "".into()), (4, invalid)]);
        assert!(r.seek(10, 0).is_err());
    }

    #[test]
    fn file_sink_creates_parents_and_writes_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let mut s = FileSink::create(&path).unwrap();
        s.write_line("{\"x\":1}").unwrap();
        s.write_line("{\"x\":2}").unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"x\":1}\n{\"x\":2}\n"
        );
        assert_eq!(s.sync(true).unwrap(), 16);
        drop(s);
        // Reopened at a checkpoint: later output is dropped, new lines follow.
        let mut s = FileSink::open_at(&path, 8).unwrap();
        s.write_line("{\"x\":3}").unwrap();
        assert_eq!(s.sync(true).unwrap(), 16);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"x\":1}\n{\"x\":3}\n"
        );
        assert!(FileSink::open_at(&path, 99).is_err());
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = LineReader::open("/nonexistent/ticks.jsonl").err().unwrap();
        assert!(err.to_string().starts_with("/nonexistent/ticks.jsonl:"));
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let err = toml::from_str::<FileSinkConfig>("path = \"x\"\npathh = \"y\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `pathh`"), "{err}");
        assert!(toml::from_str::<FileSourceConfig>("path = \"x\"\nformat = \"csv\"").is_ok());
        assert!(toml::from_str::<FileSourceConfig>("path = \"x\"\nformat = \"xml\"").is_err());
        assert!(toml::from_str::<FileSourceConfig>("path = \"x\"\nfromat = \"csv\"").is_err());
        assert!(toml::from_str::<StdoutSinkConfig>("color = true").is_err());
    }
}

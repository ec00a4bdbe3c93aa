//! Sources and sinks for tickflow: JSON-lines files, stdout, Kafka topics, and reference data
//! from CSV.
//!
//! Connectors move bytes and lines; they know nothing of ticks or dataflows. The engine reads
//! lines through a [`RecordReader`], writes rendered records through a [`LineSink`], and loads
//! reference tables through [`reference::read_csv`]. The engine's component registry binds
//! them to source and sink types.

pub mod csv_input;
mod error;
pub mod file;
pub mod kafka;
pub mod reference;

pub use error::ConnectorError;

/// A file-like input read in batches of records, each numbered, with a byte position a
/// restore seeks back to: JSON lines ([`file::LineReader`]) and CSV ([`csv_input::CsvReader`]).
pub trait RecordReader: Send {
    /// Appends up to `max` records to `out`; returns `false` once the end of the input is
    /// reached.
    fn read_batch(&mut self, max: usize, out: &mut Vec<ReadRecord>)
        -> Result<bool, ConnectorError>;
    /// Continues from a position recorded earlier: `offset` bytes consumed, `line` as
    /// [`RecordReader::line`] returned then.
    fn seek(&mut self, offset: u64, line: u64) -> Result<(), ConnectorError>;
    /// Bytes consumed.
    fn offset(&self) -> u64;
    /// Where the reader stands in lines (what a restore passes back to [`RecordReader::seek`]).
    fn line(&self) -> u64;
    /// The input's length in bytes when it was opened.
    fn len(&self) -> u64;
    /// Whether the input was empty when opened.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a reader stands: what [`RecordReader::seek`] continues from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    /// Bytes consumed.
    pub offset: u64,
    /// Lines, as [`RecordReader::line`] counts them.
    pub line: u64,
}

/// One record a [`RecordReader`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Its (first) line number.
    pub line: u64,
    /// Its JSON text.
    pub text: String,
    /// Where the reader stood before it: seeking there reads it again.
    pub before: Resume,
}

/// Configuration of a `projection` sink (besides `type` and `input`).
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSinkConfig {
    /// The record field whose value is the key (for example `instrument_id`).
    pub key: String,
}

/// The key of a JSON record: its `field`, text as is, any other value in JSON form; `None` if
/// the line is not a JSON object with that field (or it is `null`). Kafka sinks key messages
/// and projection sinks key their rows with it.
pub fn record_key(line: &str, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    match value.get(field)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Somewhere rendered records go, one line each.
pub trait LineSink: Send {
    /// Writes one line (a terminator is added).
    fn write_line(&mut self, line: &str) -> Result<(), ConnectorError>;
    /// Hands everything written so far to the operating system (flushes buffers).
    fn flush(&mut self) -> Result<(), ConnectorError>;
    /// Hands everything written so far to the operating system and returns the output's
    /// length in bytes, the position a restart truncates back to (0 where output cannot be
    /// truncated, such as stdout). With `fsync` the output is also made durable; without, the
    /// caller syncs the file later (the checkpoint coordinator does, before committing).
    fn sync(&mut self, fsync: bool) -> Result<u64, ConnectorError>;
}

//! Sources and sinks for tickflow: JSON-lines files, stdout, Kafka topics, and reference data
//! from CSV.
//!
//! Connectors move bytes and lines; they know nothing of ticks or dataflows. The engine reads
//! lines through [`file::LineReader`], writes rendered records through a [`LineSink`], and loads
//! reference tables through [`reference::read_csv`]. Connector types are listed in one table,
//! [`registry`].

mod error;
pub mod file;
pub mod kafka;
pub mod reference;

pub use error::ConnectorError;

/// Whether a connector type reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Reads records into the graph (`[sources.X]`).
    Source,
    /// Writes records out of the graph (`[sinks.X]`).
    Sink,
}

/// One connector type, by its `type = "..."` name in graph TOML.
#[derive(Debug, Clone, Copy)]
pub struct ConnectorType {
    /// The `type` value.
    pub name: &'static str,
    /// Source or sink.
    pub direction: Direction,
    /// What it does.
    pub description: &'static str,
}

/// Every connector type, in one greppable table.
pub fn registry() -> &'static [ConnectorType] {
    &[
        ConnectorType {
            name: "file",
            direction: Direction::Source,
            description: "JSON lines from a file, one raw tick per line",
        },
        ConnectorType {
            name: "file",
            direction: Direction::Sink,
            description: "JSON lines to a file (created or truncated at start)",
        },
        ConnectorType {
            name: "stdout",
            direction: Direction::Sink,
            description: "JSON lines to standard output",
        },
        ConnectorType {
            name: "kafka",
            direction: Direction::Source,
            description: "JSON records from a Kafka topic, partitions spread over the workers, \
                          offsets in checkpoints",
        },
        ConnectorType {
            name: "kafka",
            direction: Direction::Sink,
            description: "JSON records to a Kafka topic, keyed by `key`; each record once \
                          across restores",
        },
        ConnectorType {
            name: "projection",
            direction: Direction::Sink,
            description: "the latest record per `key` field, kept in the state store and read \
                          through the API (`tickflow serve`)",
        },
    ]
}

/// Configuration of a `projection` sink (besides `type` and `input`).
#[derive(Debug, Clone, serde::Deserialize)]
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
    /// A Kafka sink's position, recorded in checkpoints beside [`LineSink::sync`]'s value.
    fn kafka_position(&self) -> Option<kafka::KafkaSinkPosition> {
        None
    }
}

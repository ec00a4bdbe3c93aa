//! The connectors crate's error type.

use std::path::PathBuf;

/// A connector failed to read or write.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A CSV file could not be parsed.
    #[error("{path}:{line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A Kafka client failed (the message names the topic or brokers).
    #[error("kafka: {0}")]
    Kafka(String),
}

impl ConnectorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConnectorError::Io {
            path: path.into(),
            source,
        }
    }
}

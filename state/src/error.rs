//! The state crate's error type.

use std::path::PathBuf;

/// Errors raised while storing, encoding or decoding operator state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The stored bytes carry a format version this build does not understand.
    #[error("unsupported state format version {found} (this build reads version {expected})")]
    UnsupportedVersion {
        /// Version byte found in the stored value.
        found: u8,
        /// Version this build writes and reads.
        expected: u8,
    },
    /// The stored bytes are empty, truncated or otherwise not a valid encoding.
    #[error("corrupt state value: {0}")]
    Corrupt(String),
    /// RocksDB refused an operation.
    #[error("state store {0}")]
    Db(String),
    /// Another process holds the file.
    #[error("{0}")]
    InUse(String),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

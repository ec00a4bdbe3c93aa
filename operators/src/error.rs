//! The operators crate's error type: configuration and reference-data problems found
//! before a dataflow runs. Bad ticks are never errors; they are dead letters.

/// A problem with an operator's configuration or reference data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// A configuration value is out of range or unparseable.
    #[error("{key}: {message}")]
    InvalidConfig {
        /// The config key at fault, relative to the operator's table.
        key: String,
        /// Why the value is wrong.
        message: String,
    },
    /// A reference-data row is unusable.
    #[error("{file}:{line}: {message}")]
    Reference {
        /// The reference file.
        file: String,
        /// 1-based line number in that file.
        line: u64,
        /// Why the row is wrong.
        message: String,
    },
}

//! The state crate's error type.

/// Errors raised while encoding or decoding operator state.
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
}

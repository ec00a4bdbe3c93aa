//! The failure slot every worker of a run shares.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The first error any worker hit. Every worker checks it between steps and drops the
/// dataflow once it is set, so a failure stops the run at once; the run then reports it.
#[derive(Debug, Default)]
pub struct FailureSlot {
    failed: std::sync::atomic::AtomicBool,
    message: Mutex<Option<String>>,
}

impl FailureSlot {
    /// Whether a failure was recorded.
    pub fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The first failure recorded.
    pub fn message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Shared by every worker of a run.
pub type Failure = Arc<FailureSlot>;

pub fn fail(failure: &Failure, message: impl std::fmt::Display) {
    let message = message.to_string();
    tracing::error!("{message}");
    failure
        .message
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(message);
    failure.failed.store(true, Ordering::Release);
}

//! The engine's error type.

use std::fmt;

/// One problem found in a graph definition, located by file, TOML path and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The graph file.
    pub file: String,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// Dotted TOML path of the key at fault (`operators.bars.size`), or empty for the file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A rule the engine enforces (on names, paths, resources), broken: the message says which
/// rule and by what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

impl From<String> for RuleError {
    fn from(message: String) -> Self {
        RuleError(message)
    }
}

impl From<&str> for RuleError {
    fn from(message: &str) -> Self {
        RuleError(message.to_string())
    }
}

impl From<RuleError> for String {
    fn from(rule: RuleError) -> Self {
        rule.0
    }
}

/// Errors from compiling or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The graph file could not be read.
    #[error("cannot read graph {path}: {source}")]
    ReadGraph {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The graph failed validation; every problem is listed.
    #[error("{} error(s) in graph:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ValidationError>),
    /// A file sink would write where it must not (over an input, inside the data directory).
    #[error("refused: {0}")]
    Files(#[from] RuleError),
    /// A connector failed while the graph ran.
    #[error("while running: {0}")]
    Connector(String),
    /// Checkpoint storage or recovery failed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The dataflow could not start or a worker failed.
    #[error("dataflow failed: {0}")]
    Dataflow(String),
    /// A run of a cluster under `tickflow serve` lost a peer (it closed its connections
    /// before the dataflow finished, or could not be reached at start): the run can be
    /// started again once every process is back.
    #[error("lost a peer: {0}")]
    PeerLost(String),
    /// A backtest cannot run these graphs.
    #[error("backtest: {0}")]
    Backtest(String),
    /// The control plane (event log, supervisor) failed.
    #[error("control plane: {0}")]
    Control(String),
    /// A state store operation of a checkpoint part failed.
    #[error("{part}: {source}")]
    State {
        /// The part or table.
        part: String,
        /// Why.
        #[source]
        source: tickflow_state::StateError,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The event log could not be opened or read.
    #[error("event log {path}: {source}")]
    EventLog {
        /// The log file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: tickflow_state::StateError,
    },
    /// The server's path configuration is unusable.
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    /// A connector failed.
    #[error("{0}")]
    Io(#[from] tickflow_connectors::ConnectorError),
    /// A record could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The message a panic carried (`panic!("...")`), for reporting it as a failure.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

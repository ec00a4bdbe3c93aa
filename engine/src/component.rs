//! The component model: every source, operator and sink type is one registry entry
//! ([`crate::components::sources`], [`crate::components::operators`],
//! [`crate::components::sinks`]) and the engine learns about a type only through it.
//!
//! An entry names the type, documents it, gives the JSON schema of its config (generated from
//! the config type's doc comments, which the README's graph reference is made of), declares its
//! inputs and named outputs with their record kinds, and builds a validated component from a
//! node's TOML. The built component ([`Source`], [`Operator`], [`Sink`]) says which state
//! tables it keeps, what its checkpoints depend on (the state fingerprint), and renders itself
//! into the timely scope. Validation, `graph` (dot), the fingerprint, checkpoint bookkeeping,
//! metrics labels and rendering all go through these traits; nothing matches on type names.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tickflow_operators::event_time::{EventTime, TimeRule, TimestampConfig};
use tickflow_operators::record::RawLine;
use tickflow_operators::{duration_ms, OperatorError, RecordKind};
use tickflow_state::TableDescriptor;

use crate::checkpoint::{DataDir, OpaquePosition, SinkPosition};
use crate::policy::GraphPolicy;
use crate::render::source::DriverSettings;
use crate::render::{AnyStream, RenderCx, SinkCx, SourceCx, S};
use crate::{EngineError, RuleError};

/// The graph-wide settings a component's config may default to.
#[derive(Debug, Clone)]
pub struct GraphDefaults {
    /// `[graph].name`.
    pub name: String,
    /// `[graph].base_currency`.
    pub base_currency: String,
    /// `[graph.defaults].max_out_of_orderness`, ms.
    pub max_out_of_orderness_ms: u64,
}

/// One problem with a node's config, by its key inside the node (`None`: the node itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key at fault, dotted below the node (`fx.EUR`), if any.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// What a registry entry's `build` gets: the node's config values (without `type` and
/// `input`), the graph's defaults and the path policy. Problems are collected, not returned
/// one at a time, so a node reports every bad key at once.
pub struct BuildCx<'a> {
    /// The graph-wide defaults.
    pub graph: &'a GraphDefaults,
    /// The node's name.
    pub node: &'a str,
    values: toml::Table,
    policy: &'a GraphPolicy,
    pub(crate) problems: Vec<Problem>,
    pub(crate) files_read: Vec<(String, PathBuf)>,
    /// The TOML path of the node (`operators.bars`), for naming files read.
    path: String,
}

impl<'a> BuildCx<'a> {
    pub(crate) fn new(
        graph: &'a GraphDefaults,
        node: &'a str,
        path: String,
        values: toml::Table,
        policy: &'a GraphPolicy,
    ) -> Self {
        BuildCx {
            graph,
            node,
            values,
            policy,
            problems: Vec::new(),
            files_read: Vec::new(),
            path,
        }
    }

    /// Records a problem with `key` (dotted below the node).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: Some(key.to_string()),
            message: message.into(),
        });
    }

    /// The node's typed config; a serde error is recorded with the key it names.
    pub fn config<T: DeserializeOwned>(&mut self) -> Option<T> {
        match toml::Value::Table(self.values.clone()).try_into::<T>() {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                let message = e.to_string();
                let key = config_error_key(&message);
                self.problems.push(Problem {
                    key,
                    message: message.lines().next().unwrap_or("").trim().to_string(),
                });
                None
            }
        }
    }

    /// A duration key in ms: `default` when absent, recorded as a problem when malformed.
    pub fn duration(&mut self, key: &str, text: Option<&str>, default: u64) -> u64 {
        match text.map(duration_ms) {
            None => default,
            Some(Ok(ms)) => ms,
            Some(Err(msg)) => {
                self.error(key, msg);
                default
            }
        }
    }

    /// A key that must not be blank.
    pub fn non_empty(&mut self, key: &str, value: &str, message: &str) -> bool {
        if value.trim().is_empty() {
            self.error(key, message);
            return false;
        }
        true
    }

    /// The file `path` (key `key`) names, if the path policy lets the graph read it.
    pub fn readable(&mut self, key: &str, path: &str, what: &str) -> Option<PathBuf> {
        match self.policy.readable(path) {
            Ok(p) => {
                self.files_read
                    .push((format!("{}.{key}", self.path), p.clone()));
                Some(p)
            }
            Err(rule) => {
                self.error(key, format!("{what}: {rule}"));
                None
            }
        }
    }

    /// The file sink path `path` (key `key`), if the path policy lets the graph write it.
    pub fn writable(&mut self, key: &str, path: &str, what: &str) -> Option<PathBuf> {
        match self.policy.writable(path) {
            Ok(()) => Some(PathBuf::from(path)),
            Err(rule) => {
                self.error(key, format!("{what}: {rule}"));
                None
            }
        }
    }

    /// Records an operator crate's config errors.
    pub fn operator_errors(&mut self, errors: Vec<OperatorError>) {
        for e in errors {
            match e {
                OperatorError::InvalidConfig { key, message } => self.error(&key, message),
                other @ OperatorError::Reference { .. } => {
                    self.error("reference", other.to_string())
                }
            }
        }
    }

    /// A source's `event_time` key: where its records' event time is.
    pub fn event_time(&mut self, cfg: Option<&TimestampConfig>) -> EventTime {
        let Some(cfg) = cfg else {
            return EventTime::Ts;
        };
        let mut errors = Vec::new();
        let rule = TimeRule::from_config("event_time", cfg, &mut errors);
        self.operator_errors(errors);
        rule.map_or(EventTime::Ts, EventTime::Field)
    }

    /// Whether no problem was recorded.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The config key a serde error message is about: "unknown field `x`", "missing field `x`",
/// or a trailing "in `x`".
pub(crate) fn config_error_key(message: &str) -> Option<String> {
    let backticked = |s: &str| -> Option<String> {
        let start = s.find('`')? + 1;
        let end = s[start..].find('`')? + start;
        Some(s[start..end].to_string())
    };
    if let Some(pos) = message.rfind("\nin `") {
        return backticked(&message[pos..]);
    }
    for marker in ["unknown field `", "missing field `"] {
        if let Some(pos) = message.find(marker) {
            return backticked(&message[pos..]);
        }
    }
    None
}

/// The JSON schema of a config type (for the generated reference).
pub type SchemaFn = fn() -> schemars::Schema;

/// A source type's registry entry. Every source has one output, `out`, of raw records.
pub struct SourceType {
    /// The `type = "..."` value.
    pub name: &'static str,
    /// What it reads.
    pub description: &'static str,
    /// A minimal config (the keys besides `type` and `input`), for the reference and tests.
    pub example: &'static str,
    /// Its config's schema.
    pub schema: SchemaFn,
    /// Validates a node's config into a source.
    pub build: fn(&mut BuildCx) -> Option<Arc<dyn Source>>,
}

/// An operator type's registry entry.
pub struct OperatorType {
    /// The `type = "..."` value.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The record kind every input must carry.
    pub input: RecordKind,
    /// Named outputs, default first; [`Operator::render`] returns streams in this order.
    pub outputs: &'static [(&'static str, RecordKind)],
    /// A minimal config (the keys besides `type` and `input`), for the reference and tests.
    pub example: &'static str,
    /// Its config's schema.
    pub schema: SchemaFn,
    /// Validates a node's config into an operator.
    pub build: fn(&mut BuildCx) -> Option<Box<dyn Operator>>,
}

/// A sink type's registry entry. A sink reads records of any kind, rendered as JSON lines.
pub struct SinkType {
    /// The `type = "..."` value.
    pub name: &'static str,
    /// Where it writes.
    pub description: &'static str,
    /// A minimal config (the keys besides `type` and `input`), for the reference and tests.
    pub example: &'static str,
    /// Its config's schema.
    pub schema: SchemaFn,
    /// Validates a node's config into a sink.
    pub build: fn(&mut BuildCx) -> Option<Arc<dyn Sink>>,
}

/// The output every source has.
pub const SOURCE_OUTPUTS: &[(&str, RecordKind)] = &[("out", RecordKind::Raw)];

/// What a validated graph tells its components once every node is built.
#[derive(Debug, Clone, Copy)]
pub struct GraphFacts {
    /// The longest [`Operator::horizon_ms`] of the graph, if any operator has one.
    pub horizon_ms: Option<u64>,
}

/// A validated source.
pub trait Source: fmt::Debug + Send + Sync {
    /// What its checkpoints depend on (part of the state fingerprint).
    fn state_identity(&self) -> String;
    /// How the source driver runs it: watermark lag, idleness, where event time is, and
    /// whether every worker reads a share (one checkpoint part per worker) or one worker all.
    fn driver(&self) -> &DriverSettings;
    /// Renders the source: a stream of raw records at watermark times.
    fn render<'s>(&self, cx: SourceCx<'s>) -> S<'s, RawLine>;
}

/// A validated operator.
pub trait Operator: fmt::Debug + Send + Sync {
    /// The state tables it keeps (empty: stateless).
    fn state_tables(&self) -> &'static [TableDescriptor] {
        &[]
    }
    /// Whether its tables are saved at every checkpoint (`false`: written once per data
    /// directory, such as enrich's reference copy).
    fn checkpointed(&self) -> bool {
        !self.state_tables().is_empty()
    }
    /// What its checkpoints depend on, for the state fingerprint (`None`: nothing; its
    /// settings may change between versions that continue each other's checkpoints).
    fn state_identity(&self) -> Option<String> {
        None
    }
    /// How long, in event time, a record may still change its results (windows:
    /// size + allowed lateness); the graph's longest is [`GraphFacts::horizon_ms`].
    fn horizon_ms(&self) -> Option<u64> {
        None
    }
    /// Event-time lengths its results are judged on (window sizes, slides, allowed lateness):
    /// sources step their watermarks by a divisor of every one (see
    /// [`crate::render::source::watermark_step_ms`]).
    fn event_time_grid_ms(&self) -> Vec<u64> {
        Vec::new()
    }
    /// Settles defaults that depend on the whole graph.
    fn finish(&mut self, _facts: &GraphFacts) {}
    /// Called once per run with a data directory, before the workers start: a component may
    /// pin what it read at validation to what the directory stored (returns the pinned copy).
    fn pin(&self, _name: &str, _dir: &DataDir) -> Result<Option<Arc<dyn Operator>>, EngineError> {
        Ok(None)
    }
    /// Renders the operator on its (concatenated) input; returns one stream per output of its
    /// registry entry, in that order.
    fn render<'s>(&self, cx: &RenderCx<'s, '_>, input: AnyStream<'s>) -> Vec<AnyStream<'s>>;
}

/// A validated sink.
pub trait Sink: fmt::Debug + Send + Sync {
    /// What its checkpoints depend on (part of the state fingerprint).
    fn state_identity(&self) -> String;
    /// The state tables it keeps.
    fn state_tables(&self) -> &'static [TableDescriptor] {
        &[]
    }
    /// The file it writes, if it writes one (checked against what the graph and other
    /// deployments read and write).
    fn output_file(&self) -> Option<&Path> {
        None
    }
    /// The same sink writing to `place(its file)` instead (a deployment's own directory).
    fn relocated(
        &self,
        _place: &dyn Fn(&Path) -> Result<PathBuf, RuleError>,
    ) -> Result<Option<Arc<dyn Sink>>, RuleError> {
        Ok(None)
    }
    /// Opens the writer on the sink worker (the last), continuing from `resume` (the restored checkpoint's
    /// position) or starting afresh.
    fn open(
        &self,
        cx: &SinkCx,
        resume: Option<&SinkPosition>,
    ) -> Result<Box<dyn SinkWriter>, EngineError>;
}

/// Where a sink's rendered lines go, driven by the sink driver ([`crate::render::sink`]).
pub trait SinkWriter: Send {
    /// Writes one line.
    fn write_line(&mut self, line: &str) -> Result<(), EngineError>;
    /// Hands everything written to the operating system (the end of the input).
    fn flush(&mut self) -> Result<(), EngineError>;
    /// Makes what was written part of checkpoint `label` and returns the writer's position,
    /// which a restore hands back to [`Sink::open`] (the driver adds the lines written).
    fn checkpoint(&mut self, label: u64, cx: &SinkCx) -> Result<OpaquePosition, EngineError>;
}

macro_rules! debug_by_name {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.name)
            }
        }
    )*};
}

debug_by_name!(SourceType, OperatorType, SinkType);

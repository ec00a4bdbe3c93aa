//! Graph TOML -> validated [`Plan`].
//!
//! Compilation has two views of the file: `toml_edit` keeps the position of every key (for
//! line numbers) and `toml` gives plain values for each component's typed `<Name>Config`.
//! Every problem is collected, each with its TOML path and line; nothing is reported one at a
//! time. `tickflow validate` and `tickflow run` call the same [`compile_file`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml_edit::{ImDocument, Item, Table};

use tickflow_operators::{duration_ms, RecordKind};

use crate::checkpoint::CheckpointConfig;
use crate::component::{
    BuildCx, GraphDefaults, GraphFacts, Operator, OperatorType, Problem, Sink, SinkType, Source,
    SourceType, SOURCE_OUTPUTS,
};
use crate::components;
use crate::plan::*;
use crate::policy::GraphPolicy;
use crate::{EngineError, RuleError, ValidationError};

mod nodes;
mod sections;
mod wiring;

/// Default for `[graph].base_currency`.
pub const DEFAULT_BASE_CURRENCY: &str = "USD";
/// Default for `[graph.defaults].max_out_of_orderness`.
pub const DEFAULT_MAX_OUT_OF_ORDERNESS: &str = "1s";

/// Longest graph or node name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a graph name (`dots`: `.` allowed) or a node name (no dots: `node.output` names an
/// output): 1 to [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 _ -`. Names reach file names,
/// column families, metric labels and the audit trail, so nothing else is accepted.
pub fn identifier(name: &str, dots: bool) -> Result<(), RuleError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (dots && c == '.');
    let alphabet = if dots {
        "A-Z a-z 0-9 _ - ."
    } else {
        "A-Z a-z 0-9 _ -"
    };
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "must be 1 to {MAX_NAME_LEN} characters of {alphabet} (got {:?})",
            name.chars().take(MAX_NAME_LEN + 1).collect::<String>()
        )
        .into());
    }
    Ok(())
}

/// Reads and compiles a graph file.
pub fn compile_file(path: impl AsRef<Path>) -> Result<Plan, EngineError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::ReadGraph {
        path: path.display().to_string(),
        source,
    })?;
    compile_str(&text, &path.display().to_string())
}

/// Compiles graph TOML; `file` names it in error messages. Relative paths inside the graph
/// are relative to the working directory.
pub fn compile_str(text: &str, file: &str) -> Result<Plan, EngineError> {
    compile_confined(text, file, &GraphPolicy::free())
}

/// Compiles graph TOML whose file paths must satisfy `policy` (a graph submitted over the
/// API): a path that breaks it is an error naming its TOML key and the rule; no file outside
/// the policy's roots is opened.
pub fn compile_confined(text: &str, file: &str, policy: &GraphPolicy) -> Result<Plan, EngineError> {
    let mut c = Compiler {
        file: file.to_string(),
        text,
        errors: Vec::new(),
        warnings: Vec::new(),
        policy,
        files_read: Vec::new(),
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
    };
    let plan = c.compile();
    match plan {
        Some(plan) if c.errors.is_empty() => Ok(Plan {
            warnings: c.warnings,
            files_read: c.files_read,
            ..plan
        }),
        _ => Err(EngineError::Invalid(c.errors)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Sources,
    Operators,
    Sinks,
}

impl Section {
    const ALL: [Section; 3] = [Section::Sources, Section::Operators, Section::Sinks];

    fn key(self) -> &'static str {
        match self {
            Section::Sources => "sources",
            Section::Operators => "operators",
            Section::Sinks => "sinks",
        }
    }
}

/// An input as written: the name and the line it is on.
type RawInput = (String, Option<usize>);

/// A node whose inputs are not resolved yet: the plan, its raw inputs, its header line.
type Pending<T> = (T, Vec<RawInput>, Option<usize>);

/// One `[section.name]` table before validation.
struct RawNode<'d> {
    section: Section,
    name: String,
    table: &'d Table,
    values: toml::Table,
    line: Option<usize>,
    type_name: String,
    inputs: Vec<(String, Option<usize>)>,
}

impl RawNode<'_> {
    fn path(&self) -> String {
        format!("{}.{}", self.section.key(), self.name)
    }
}

struct Compiler<'t> {
    file: String,
    text: &'t str,
    errors: Vec<ValidationError>,
    warnings: Vec<ValidationError>,
    policy: &'t GraphPolicy,
    /// The files the graph reads, by TOML key.
    files_read: Vec<(String, PathBuf)>,
    /// Byte offset of each line's start.
    line_starts: Vec<usize>,
}

fn span_start(span: Option<Range<usize>>) -> Option<usize> {
    span.map(|s| s.start)
}

impl Compiler<'_> {
    /// The 1-based line of a byte offset (a binary search over the line starts: compiling
    /// stays linear in the graph's size).
    fn line_at(&self, offset: Option<usize>) -> Option<usize> {
        offset.map(|o| self.line_starts.partition_point(|start| *start <= o))
    }

    fn error(&mut self, path: impl Into<String>, line: Option<usize>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            file: self.file.clone(),
            line,
            path: path.into(),
            message: message.into(),
        });
    }

    fn key_line(&self, table: &Table, key: &str) -> Option<usize> {
        self.line_at(span_start(
            table.get_key_value(key).and_then(|(k, _)| k.span()),
        ))
    }

    fn compile(&mut self) -> Option<Plan> {
        let doc = match ImDocument::parse(self.text.to_string()) {
            Ok(doc) => doc,
            Err(e) => {
                let line = self.line_at(span_start(e.span()));
                self.error("", line, format!("invalid TOML: {}", e.message().trim()));
                return None;
            }
        };
        let values: toml::Table = match toml::from_str(self.text) {
            Ok(v) => v,
            Err(e) => {
                let line = self.line_at(span_start(e.span()));
                self.error("", line, format!("invalid TOML: {}", e.message().trim()));
                return None;
            }
        };
        let root = doc.as_table();
        for (key, _) in root.iter() {
            if ![
                "graph",
                "checkpoint",
                "rollout",
                "sources",
                "operators",
                "sinks",
            ]
            .contains(&key)
            {
                let line = self.key_line(root, key);
                self.error(
                    key,
                    line,
                    "unknown table; expected `graph`, `checkpoint`, `rollout`, `sources`, \
                     `operators` or `sinks`",
                );
            }
        }
        let nodes: usize = ["sources", "operators", "sinks"]
            .iter()
            .filter_map(|k| root.get(k).and_then(Item::as_table))
            .map(Table::len)
            .sum();
        if nodes > self.policy.max_nodes {
            self.error(
                "",
                None,
                format!(
                    "the graph has {nodes} nodes; at most {} are allowed",
                    self.policy.max_nodes
                ),
            );
            return None;
        }
        let header = self.graph_section(root);
        let checkpoint = self.checkpoint_section(root);
        self.rollout_section(root, &values);
        let nodes = self.collect_nodes(root, &values);
        let mut identity = values.clone();
        identity.remove("checkpoint");
        identity.remove("rollout");
        let plan = self.build_plan(header, nodes)?;
        let fingerprint = match fingerprint(&identity) {
            Ok(f) => f,
            Err(e) => {
                self.error("", None, format!("cannot fingerprint the graph: {e}"));
                return None;
            }
        };
        Some(Plan {
            checkpoint,
            fingerprint,
            ..plan
        })
    }
}

/// SHA-256 (hex) of a graph's TOML values, independent of comments, layout and key order.
fn fingerprint(values: &toml::Table) -> Result<String, toml::ser::Error> {
    use sha2::{Digest, Sha256};
    let canonical = toml::to_string(values)?;
    Ok(format!("{:x}", Sha256::digest(canonical.as_bytes())))
}

/// A node built by its registry entry.
enum Built {
    Source(&'static SourceType, Arc<dyn Source>),
    Operator(&'static OperatorType, Box<dyn Operator>),
    Sink(&'static SinkType, Arc<dyn Sink>),
}

struct GraphHeader {
    name: String,
    version: i64,
    base_currency: String,
    max_out_of_orderness_ms: u64,
}

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
            if !["graph", "checkpoint", "sources", "operators", "sinks"].contains(&key) {
                let line = self.key_line(root, key);
                self.error(
                    key,
                    line,
                    "unknown table; expected `graph`, `checkpoint`, `sources`, `operators` or `sinks`",
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
        let nodes = self.collect_nodes(root, &values);
        let mut identity = values.clone();
        identity.remove("checkpoint");
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

    /// `[checkpoint]`: `interval` (event time, default 10s), `retain` (default 3) and
    /// `min_pause` (wall clock between commit markers, default 50ms).
    fn checkpoint_section(&mut self, root: &Table) -> CheckpointConfig {
        let mut cfg = CheckpointConfig::default();
        let Some(item) = root.get("checkpoint") else {
            return cfg;
        };
        let Some(table) = item.as_table_like() else {
            let line = self.key_line(root, "checkpoint");
            self.error("checkpoint", line, "must be a table");
            return cfg;
        };
        for (key, value) in table.iter() {
            let line = self.line_at(span_start(
                table.get_key_value(key).and_then(|(k, _)| k.span()),
            ));
            let path = format!("checkpoint.{key}");
            match key {
                "interval" => match value.as_str().map(duration_ms) {
                    Some(Ok(ms)) if ms >= 1 => cfg.interval_ms = ms,
                    Some(Ok(_)) => self.error(path, line, "must be at least 1ms"),
                    Some(Err(msg)) => self.error(path, line, msg),
                    None => self.error(path, line, "must be a duration string such as \"10s\""),
                },
                "retain" => match value.as_integer() {
                    Some(n) if n >= 1 => cfg.retain = n as usize,
                    _ => self.error(path, line, "must be an integer >= 1"),
                },
                "min_pause" => match value.as_str().map(duration_ms) {
                    Some(Ok(ms)) => cfg.min_pause_ms = ms,
                    Some(Err(msg)) => self.error(path, line, msg),
                    None => self.error(path, line, "must be a duration string such as \"50ms\""),
                },
                _ => self.error(
                    path,
                    line,
                    "unknown key; expected `interval`, `retain` or `min_pause`",
                ),
            }
        }
        cfg
    }

    fn graph_section(&mut self, root: &Table) -> GraphHeader {
        let mut header = GraphHeader {
            name: String::new(),
            version: 1,
            base_currency: DEFAULT_BASE_CURRENCY.to_string(),
            max_out_of_orderness_ms: duration_ms(DEFAULT_MAX_OUT_OF_ORDERNESS).unwrap_or(1_000),
        };
        let Some(graph) = root.get("graph").and_then(Item::as_table) else {
            let line = self.key_line(root, "graph");
            self.error(
                "graph",
                line,
                "a `[graph]` table with `name` and `version` is required",
            );
            return header;
        };
        for (key, item) in graph.iter() {
            let line = self.key_line(graph, key);
            let path = format!("graph.{key}");
            match key {
                "name" => match item.as_str().map(|s| (s, identifier(s, true))) {
                    Some((s, Ok(()))) => header.name = s.to_string(),
                    Some((_, Err(rule))) => self.error(path, line, rule),
                    None => self.error(path, line, "must be a string"),
                },
                "version" => match item.as_integer() {
                    Some(v) if v >= 1 => header.version = v,
                    _ => self.error(path, line, "must be an integer >= 1"),
                },
                "base_currency" => match item.as_str() {
                    Some(s) if !s.trim().is_empty() => header.base_currency = s.trim().to_uppercase(),
                    _ => self.error(path, line, "must be a currency code such as \"USD\""),
                },
                "description" => {
                    if item.as_str().is_none() {
                        self.error(path, line, "must be a string");
                    }
                }
                "defaults" => match item.as_table_like() {
                    Some(defaults) => {
                        for (dkey, ditem) in defaults.iter() {
                            let dpath = format!("graph.defaults.{dkey}");
                            let dline = self.line_at(span_start(
                                defaults.get_key_value(dkey).and_then(|(k, _)| k.span()),
                            ));
                            match (dkey, ditem.as_str()) {
                                ("max_out_of_orderness", Some(text)) => match duration_ms(text) {
                                    Ok(ms) => header.max_out_of_orderness_ms = ms,
                                    Err(msg) => self.error(dpath, dline, msg),
                                },
                                ("max_out_of_orderness", None) => {
                                    self.error(dpath, dline, "must be a duration string such as \"2s\"")
                                }
                                _ => self.error(
                                    dpath,
                                    dline,
                                    "unknown key; expected `max_out_of_orderness`",
                                ),
                            }
                        }
                    }
                    None => self.error(path, line, "must be a table"),
                },
                _ => self.error(
                    path,
                    line,
                    "unknown key; expected `name`, `version`, `base_currency`, `description` or `defaults`",
                ),
            }
        }
        if !graph.contains_key("name") {
            let line = self.key_line(root, "graph");
            self.error("graph.name", line, "missing; every graph needs a name");
        }
        if !graph.contains_key("version") {
            let line = self.key_line(root, "graph");
            self.error(
                "graph.version",
                line,
                "missing; every graph needs a version",
            );
        }
        header
    }

    fn collect_nodes<'d>(&mut self, root: &'d Table, values: &toml::Table) -> Vec<RawNode<'d>> {
        let mut nodes = Vec::new();
        let mut seen: HashMap<String, Section> = HashMap::new();
        for section in Section::ALL {
            let Some(item) = root.get(section.key()) else {
                continue;
            };
            let Some(table) = item.as_table() else {
                let line = self.key_line(root, section.key());
                self.error(section.key(), line, "must be a table of named nodes");
                continue;
            };
            for (name, node_item) in table.iter() {
                let line = self.key_line(table, name);
                if let Err(rule) = identifier(name, false) {
                    let shown = format!("{}.\"{}\"", section.key(), name.escape_debug());
                    self.error(shown, line, format!("node name: {rule}"));
                    continue;
                }
                let path = format!("{}.{name}", section.key());
                let Some(node_table) = node_item.as_table() else {
                    self.error(path, line, "must be a table such as `[sources.ticks]`");
                    continue;
                };
                // Sources and operators share one namespace (inputs name them); sinks have their own.
                let clash = if section == Section::Sinks {
                    None
                } else {
                    seen.insert(name.to_string(), section)
                };
                if let Some(other) = clash {
                    self.error(
                        path.clone(),
                        line,
                        format!(
                            "name `{name}` is already used by `{}.{name}`; node names must be unique",
                            other.key()
                        ),
                    );
                }
                let type_name = match node_table.get("type").map(|t| t.as_str()) {
                    Some(Some(t)) => t.to_string(),
                    Some(None) => {
                        let l = self.key_line(node_table, "type");
                        self.error(format!("{path}.type"), l, "must be a string");
                        continue;
                    }
                    None => {
                        self.error(
                            format!("{path}.type"),
                            line,
                            "missing; every node needs a `type`",
                        );
                        continue;
                    }
                };
                let inputs = self.node_inputs(section, &path, node_table, line);
                let node_values = values
                    .get(section.key())
                    .and_then(|s| s.get(name))
                    .and_then(|v| v.as_table())
                    .cloned()
                    .unwrap_or_default();
                nodes.push(RawNode {
                    section,
                    name: name.to_string(),
                    table: node_table,
                    values: node_values,
                    line,
                    type_name,
                    inputs,
                });
            }
        }
        nodes
    }

    fn node_inputs(
        &mut self,
        section: Section,
        path: &str,
        table: &Table,
        line: Option<usize>,
    ) -> Vec<(String, Option<usize>)> {
        let input_line = self.key_line(table, "input");
        match (section, table.get("input")) {
            (Section::Sources, None) => Vec::new(),
            (Section::Sources, Some(_)) => {
                self.error(format!("{path}.input"), input_line, "sources take no input");
                Vec::new()
            }
            (_, None) => {
                self.error(
                    format!("{path}.input"),
                    line,
                    "missing; name the node (or `node.output`) this reads",
                );
                Vec::new()
            }
            (_, Some(item)) => {
                let names: Option<Vec<String>> = if let Some(s) = item.as_str() {
                    Some(vec![s.to_string()])
                } else {
                    item.as_array().and_then(|a| {
                        a.iter()
                            .map(|v| v.as_str().map(String::from))
                            .collect::<Option<Vec<_>>>()
                    })
                };
                match names {
                    Some(names) if !names.is_empty() => {
                        names.into_iter().map(|n| (n, input_line)).collect()
                    }
                    _ => {
                        self.error(
                            format!("{path}.input"),
                            input_line,
                            "must be a node name or a non-empty array of them",
                        );
                        Vec::new()
                    }
                }
            }
        }
    }

    /// Builds one node through its type's registry entry; its problems are reported with
    /// their TOML paths and lines. `None` if the type is unknown or the config invalid.
    fn build_node<T>(
        &mut self,
        defaults: &GraphDefaults,
        node: &RawNode,
        known: &[(&'static str, T)],
        build: impl FnOnce(T, &mut BuildCx) -> Option<Built>,
    ) -> Option<Built>
    where
        T: Copy,
    {
        let Some((_, entry)) = known.iter().find(|(n, _)| *n == node.type_name) else {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            let line = self.key_line(node.table, "type");
            let what = match node.section {
                Section::Sources => "source",
                Section::Operators => "operator",
                Section::Sinks => "sink",
            };
            self.error(
                format!("{}.type", node.path()),
                line,
                format!(
                    "unknown {what} type `{}`; known: {}",
                    node.type_name,
                    names.join(", ")
                ),
            );
            return None;
        };
        let mut values = node.values.clone();
        values.remove("type");
        values.remove("input");
        let mut cx = BuildCx::new(defaults, &node.name, node.path(), values, self.policy);
        let built = build(*entry, &mut cx);
        self.files_read.append(&mut cx.files_read);
        let failed = !cx.problems.is_empty();
        for problem in std::mem::take(&mut cx.problems) {
            self.node_problem(node, problem);
        }
        if failed {
            None
        } else {
            built
        }
    }

    /// Reports a node's config problem at its key's line (or the node's).
    fn node_problem(&mut self, node: &RawNode, problem: Problem) {
        let (path, line) = match problem.key {
            Some(key) => {
                let top = key.split('.').next().unwrap_or(&key).to_string();
                let line = self.key_line(node.table, &top).or(node.line);
                (format!("{}.{key}", node.path()), line)
            }
            None => (node.path(), node.line),
        };
        self.error(path, line, problem.message);
    }

    fn build_plan(&mut self, header: GraphHeader, nodes: Vec<RawNode>) -> Option<Plan> {
        let defaults = GraphDefaults {
            name: header.name.clone(),
            base_currency: header.base_currency.clone(),
            max_out_of_orderness_ms: header.max_out_of_orderness_ms,
        };
        let source_types: Vec<(&str, &'static SourceType)> =
            components::sources().iter().map(|t| (t.name, t)).collect();
        let operator_types: Vec<(&str, &'static OperatorType)> = components::operators()
            .iter()
            .map(|t| (t.name, t))
            .collect();
        let sink_types: Vec<(&str, &'static SinkType)> =
            components::sinks().iter().map(|t| (t.name, t)).collect();
        let mut sources = Vec::new();
        let mut built_ops: Vec<(&'static OperatorType, Box<dyn Operator>, &RawNode)> = Vec::new();
        let mut sinks: Vec<Pending<SinkPlan>> = Vec::new();
        let mut outputs: HashMap<String, Vec<(&'static str, RecordKind)>> = HashMap::new();
        for node in &nodes {
            // Outputs are known from the type even when the config is invalid, so inputs
            // naming this node are still checked.
            match node.section {
                Section::Sources => {
                    outputs.insert(node.name.clone(), SOURCE_OUTPUTS.to_vec());
                    let built = self.build_node(&defaults, node, &source_types, |t, cx| {
                        (t.build)(cx).map(|c| Built::Source(t, c))
                    });
                    if let Some(Built::Source(kind, component)) = built {
                        sources.push(SourcePlan {
                            name: node.name.clone(),
                            kind,
                            component,
                        });
                    }
                }
                Section::Operators => {
                    if let Some((_, t)) = operator_types.iter().find(|(n, _)| *n == node.type_name)
                    {
                        outputs.insert(node.name.clone(), t.outputs.to_vec());
                    }
                    let built = self.build_node(&defaults, node, &operator_types, |t, cx| {
                        (t.build)(cx).map(|c| Built::Operator(t, c))
                    });
                    if let Some(Built::Operator(kind, component)) = built {
                        built_ops.push((kind, component, node));
                    }
                }
                Section::Sinks => {
                    let built = self.build_node(&defaults, node, &sink_types, |t, cx| {
                        (t.build)(cx).map(|c| Built::Sink(t, c))
                    });
                    if let Some(Built::Sink(kind, component)) = built {
                        sinks.push((
                            SinkPlan {
                                name: node.name.clone(),
                                kind,
                                component,
                                inputs: Vec::new(),
                            },
                            node.inputs.clone(),
                            node.line,
                        ));
                    }
                }
            }
        }

        // Settle what depends on the whole graph (normalize's dedup retention follows the
        // longest window horizon).
        let facts = GraphFacts {
            horizon_ms: built_ops
                .iter()
                .filter_map(|(_, o, _)| o.horizon_ms())
                .max(),
        };
        let mut operators: Vec<Pending<OperatorPlan>> = Vec::new();
        for (kind, mut component, node) in built_ops {
            component.finish(&facts);
            operators.push((
                OperatorPlan {
                    name: node.name.clone(),
                    kind,
                    component: Arc::from(component),
                    inputs: Vec::new(),
                },
                node.inputs.clone(),
                node.line,
            ));
        }
        let op_inputs: HashMap<String, RecordKind> = operators
            .iter()
            .map(|(o, _, _)| (o.name.clone(), o.kind.input))
            .collect();

        // Resolve inputs and check record kinds.
        let section_of: HashMap<&str, Section> = nodes
            .iter()
            .filter(|n| n.section != Section::Sinks)
            .map(|n| (n.name.as_str(), n.section))
            .collect();
        let sink_names: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.section == Section::Sinks)
            .map(|n| n.name.as_str())
            .collect();
        let resolve = |c: &mut Self,
                       path: &str,
                       raw: &[(String, Option<usize>)],
                       want: Option<RecordKind>| {
            let mut refs = Vec::new();
            for (text, line) in raw {
                let (node, output) = match text.split_once('.') {
                    Some((n, o)) => (n, o),
                    None => (text.as_str(), "out"),
                };
                let Some(outs) = outputs.get(node) else {
                    let msg = if sink_names.contains(node) {
                        format!("`{node}` is only a sink; sinks have no outputs")
                    } else {
                        format!("`{text}` does not name a source or operator")
                    };
                    c.error(format!("{path}.input"), *line, msg);
                    continue;
                };
                let Some((_, kind)) = outs.iter().find(|(name, _)| *name == output) else {
                    let names: Vec<&str> = outs.iter().map(|(n, _)| *n).collect();
                    c.error(
                        format!("{path}.input"),
                        *line,
                        format!(
                            "`{node}` has no output `{output}`; its outputs: {}",
                            names.join(", ")
                        ),
                    );
                    continue;
                };
                if let Some(want) = want {
                    if *kind != want {
                        c.error(
                            format!("{path}.input"),
                            *line,
                            format!(
                                "`{text}` carries {} records but this node reads {} records",
                                kind.name(),
                                want.name()
                            ),
                        );
                        continue;
                    }
                }
                refs.push(OutputRef {
                    node: node.to_string(),
                    output: output.to_string(),
                    kind: *kind,
                });
            }
            refs
        };
        for (op, raw, _) in operators.iter_mut() {
            let want = op_inputs.get(&op.name).copied();
            op.inputs = resolve(self, &format!("operators.{}", op.name), raw, want);
        }
        let mut sink_plans = Vec::new();
        for (mut sink, raw, _) in sinks {
            sink.inputs = resolve(self, &format!("sinks.{}", sink.name), &raw, None);
            sink_plans.push(sink);
        }

        let operators = self.topological(operators);

        // Outputs nobody reads: their records are counted but not kept.
        let mut read: BTreeSet<(String, String)> = BTreeSet::new();
        for input in operators
            .iter()
            .flat_map(|o| o.inputs.iter())
            .chain(sink_plans.iter().flat_map(|s| s.inputs.iter()))
        {
            read.insert((input.node.clone(), input.output.clone()));
        }
        let node_lines: HashMap<&str, Option<usize>> =
            nodes.iter().map(|n| (n.name.as_str(), n.line)).collect();
        let mut all_outputs: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for (node, outs) in &outputs {
            all_outputs.insert(node.clone(), outs.iter().map(|(n, _)| *n).collect());
        }
        for (node, outs) in all_outputs {
            for out in outs {
                if !read.contains(&(node.clone(), out.to_string())) {
                    let section = section_of
                        .get(node.as_str())
                        .map_or("operators", |s| s.key());
                    let line = node_lines.get(node.as_str()).copied().flatten();
                    self.warnings.push(ValidationError {
                        file: self.file.clone(),
                        line,
                        path: format!("{section}.{node}"),
                        message: format!(
                            "output `{out}` is read by no node or sink: its records are counted but not kept"
                        ),
                    });
                }
            }
        }

        if sources.is_empty() && self.errors.is_empty() {
            self.error("sources", None, "the graph has no source");
        }
        if sink_plans.is_empty() && self.errors.is_empty() {
            self.error("sinks", None, "the graph has no sink");
        }
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        sink_plans.sort_by(|a, b| a.name.cmp(&b.name));
        Some(Plan {
            name: header.name,
            version: header.version,
            sources,
            operators,
            sinks: sink_plans,
            warnings: Vec::new(),
            checkpoint: CheckpointConfig::default(),
            fingerprint: String::new(),
            files_read: Vec::new(),
        })
    }

    /// Orders operators so each comes after the operators it reads, the first by name among
    /// those ready at each step (Kahn's algorithm); reports cycles.
    fn topological(&mut self, operators: Vec<Pending<OperatorPlan>>) -> Vec<OperatorPlan> {
        let mut all: Vec<(OperatorPlan, Option<usize>)> =
            operators.into_iter().map(|(o, _, l)| (o, l)).collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let index: HashMap<String, usize> = all
            .iter()
            .enumerate()
            .map(|(i, (o, _))| (o.name.clone(), i))
            .collect();
        let mut waiting = vec![0usize; all.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
        for (i, (op, _)) in all.iter().enumerate() {
            let deps: BTreeSet<usize> = op
                .inputs
                .iter()
                .filter_map(|input| index.get(&input.node).copied())
                .collect();
            waiting[i] = deps.len();
            for d in deps {
                dependents[d].push(i);
            }
        }
        let mut ready: BTreeSet<usize> = (0..all.len()).filter(|i| waiting[*i] == 0).collect();
        let mut order = Vec::with_capacity(all.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        let mut slots: Vec<Option<(OperatorPlan, Option<usize>)>> =
            all.into_iter().map(Some).collect();
        let ordered: Vec<OperatorPlan> = order
            .iter()
            .filter_map(|i| slots[*i].take().map(|(o, _)| o))
            .collect();
        let remaining: Vec<(OperatorPlan, Option<usize>)> = slots.into_iter().flatten().collect();
        if !remaining.is_empty() {
            let cycle: Vec<String> = remaining.iter().map(|(o, _)| o.name.clone()).collect();
            for (op, line) in &remaining {
                self.error(
                    format!("operators.{}.input", op.name),
                    *line,
                    format!(
                        "cycle: operators {} read each other's outputs",
                        cycle.join(", ")
                    ),
                );
            }
        }
        ordered
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

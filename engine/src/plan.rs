//! The validated plan a graph compiles to, and its Graphviz rendering.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use tickflow_operators::RecordKind;

use crate::checkpoint::CheckpointConfig;
use crate::component::{Operator, OperatorType, Sink, SinkType, Source, SourceType};
use crate::ValidationError;

/// A reference to one named output of a node: `normalize` (its default output `out`) or
/// `normalize.dead_letter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRef {
    /// The source or operator.
    pub node: String,
    /// The output's name.
    pub output: String,
    /// The record kind it carries.
    pub kind: RecordKind,
}

impl OutputRef {
    /// `node` for the default output, `node.output` otherwise.
    pub fn label(&self) -> String {
        if self.output == "out" {
            self.node.clone()
        } else {
            format!("{}.{}", self.node, self.output)
        }
    }
}

/// A source in the plan. Its index in [`Plan::sources`] is its id in record ordinals.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// The source's name.
    pub name: String,
    /// Its type's registry entry.
    pub kind: &'static SourceType,
    /// The validated source.
    pub component: Arc<dyn Source>,
}

/// An operator in the plan.
#[derive(Debug, Clone)]
pub struct OperatorPlan {
    /// The operator's name.
    pub name: String,
    /// Its type's registry entry.
    pub kind: &'static OperatorType,
    /// The validated operator.
    pub component: Arc<dyn Operator>,
    /// The outputs it reads, concatenated.
    pub inputs: Vec<OutputRef>,
}

/// A sink in the plan.
#[derive(Debug, Clone)]
pub struct SinkPlan {
    /// The sink's name.
    pub name: String,
    /// Its type's registry entry.
    pub kind: &'static SinkType,
    /// The validated sink.
    pub component: Arc<dyn Sink>,
    /// The outputs it writes.
    pub inputs: Vec<OutputRef>,
    /// During a canary rollout: which of its inputs each record passes from.
    pub route: Option<crate::render::route::Route>,
}

/// A validated graph: everything the dataflow builder needs, nothing left to check.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `[graph].name`.
    pub name: String,
    /// `[graph].version`.
    pub version: i64,
    /// Sources, sorted by name.
    pub sources: Vec<SourcePlan>,
    /// Operators, each after the operators it reads.
    pub operators: Vec<OperatorPlan>,
    /// Sinks, sorted by name.
    pub sinks: Vec<SinkPlan>,
    /// Problems that do not stop the graph (an output nobody reads).
    pub warnings: Vec<ValidationError>,
    /// `[checkpoint]` settings (used when the run has a data directory).
    pub checkpoint: CheckpointConfig,
    /// SHA-256 of the graph definition without `[checkpoint]`: what a data directory is tied to.
    pub fingerprint: String,
    /// The files it reads (sources, reference data), by TOML key.
    pub files_read: Vec<(String, PathBuf)>,
}

impl Plan {
    /// SHA-256 (hex) of what this plan's checkpoints depend on: source names and inputs,
    /// stateful operators (name, type, window shape, dedup retention) and sinks (name and
    /// target). Two versions with the same value can continue from each other's checkpoints;
    /// stateless settings (field mapping, currency rates, enrichment columns, routing,
    /// `[checkpoint]`) may differ.
    pub fn state_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut text = String::new();
        for s in &self.sources {
            let _ = writeln!(text, "source {} {}", s.name, s.component.state_identity());
        }
        for o in &self.operators {
            if let Some(state) = o.component.state_identity() {
                let _ = writeln!(text, "operator {} {} {state}", o.name, o.kind.name);
            }
        }
        for s in &self.sinks {
            let _ = writeln!(text, "sink {} {}", s.name, s.component.state_identity());
        }
        let _ = writeln!(text, "checkpoint {}", self.checkpoint.interval_ms);
        format!("{:x}", Sha256::digest(text.as_bytes()))
    }

    /// The longest time, in event time, a record may still change the graph's results (the
    /// longest [`crate::component::Operator::horizon_ms`]; 0 without windows).
    pub fn horizon_ms(&self) -> u64 {
        self.operators
            .iter()
            .filter_map(|o| o.component.horizon_ms())
            .max()
            .unwrap_or(0)
    }

    /// The nodes as JSON: what the API shows of a compiled graph version.
    pub fn describe(&self) -> serde_json::Value {
        let inputs = |i: &[OutputRef]| i.iter().map(OutputRef::label).collect::<Vec<_>>();
        serde_json::json!({
            "sources": self.sources.iter().map(|s| serde_json::json!({
                "name": s.name,
                "type": s.kind.name,
                "max_out_of_orderness_ms": s.component.driver().max_out_of_orderness_ms,
            })).collect::<Vec<_>>(),
            "operators": self.operators.iter().map(|o| serde_json::json!({
                "name": o.name,
                "type": o.kind.name,
                "inputs": inputs(&o.inputs),
            })).collect::<Vec<_>>(),
            "sinks": self.sinks.iter().map(|s| serde_json::json!({
                "name": s.name,
                "type": s.kind.name,
                "inputs": inputs(&s.inputs),
            })).collect::<Vec<_>>(),
            "checkpoint_interval_ms": self.checkpoint.interval_ms,
            "fingerprint": self.fingerprint,
            "state_fingerprint": self.state_fingerprint(),
            "state_parts": crate::state_plan::parts_of(self),
        })
    }

    /// Source names by id, for rendering dead letters.
    /// A canary's new version names its sources as that version does (see
    /// [`crate::canary`]).
    pub fn source_names(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| {
                let name = &s.name;
                name.strip_prefix(crate::canary::CANARY_PREFIX)
                    .unwrap_or(name)
                    .to_string()
            })
            .collect()
    }

    /// The graph as Graphviz dot: sources, operators and sinks as nodes, one edge per input,
    /// labelled with the output name and record kind.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph \"{}\" {{", escape(&self.name));
        let _ = writeln!(out, "  rankdir=LR;");
        for s in &self.sources {
            let _ = writeln!(
                out,
                "  \"{}\" [shape=cylinder, label=\"{}\\n{} source\"];",
                escape(&s.name),
                escape(&s.name),
                s.kind.name
            );
        }
        for o in &self.operators {
            let _ = writeln!(
                out,
                "  \"{}\" [shape=box, label=\"{}\\n{}\"];",
                escape(&o.name),
                escape(&o.name),
                o.kind.name
            );
        }
        for s in &self.sinks {
            let _ = writeln!(
                out,
                "  \"sink:{}\" [shape=folder, label=\"{}\\n{} sink\"];",
                escape(&s.name),
                escape(&s.name),
                s.kind.name
            );
        }
        let edges = self
            .operators
            .iter()
            .map(|o| (o.name.clone(), &o.inputs))
            .chain(
                self.sinks
                    .iter()
                    .map(|s| (format!("sink:{}", s.name), &s.inputs)),
            );
        for (target, inputs) in edges {
            for input in inputs {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\" [label=\"{} ({})\"];",
                    escape(&input.node),
                    escape(&target),
                    input.output,
                    input.kind.name()
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

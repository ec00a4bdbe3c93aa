//! The plan: nodes built, graph-wide settings settled, inputs resolved and kind-checked,
//! operators ordered, unread outputs reported.

use super::*;

/// Each node's outputs with their record kinds.
type Outputs = HashMap<String, Vec<(&'static str, RecordKind)>>;

/// The nodes built, before their inputs are resolved.
#[derive(Default)]
struct Nodes {
    sources: Vec<SourcePlan>,
    operators: Vec<Pending<OperatorPlan>>,
    sinks: Vec<Pending<SinkPlan>>,
    outputs: Outputs,
}

impl Compiler<'_> {
    pub(super) fn build_plan(&mut self, header: GraphHeader, nodes: Vec<RawNode>) -> Option<Plan> {
        let built = self.build_nodes(&header, &nodes);
        let Nodes {
            mut sources,
            operators,
            sinks,
            outputs,
        } = built;
        let mut operators: Vec<Pending<OperatorPlan>> = operators;
        let mut sink_plans = Vec::new();
        for (op, raw, _) in operators.iter_mut() {
            let path = format!("operators.{}", op.name);
            op.inputs = self.resolve(&path, raw, Some(op.kind.input), &outputs, &nodes);
        }
        for (mut sink, raw, _) in sinks {
            let path = format!("sinks.{}", sink.name);
            sink.inputs = self.resolve(&path, &raw, None, &outputs, &nodes);
            sink_plans.push(sink);
        }
        let operators = self.topological(operators);
        self.warn_unread(&nodes, &outputs, &operators, &sink_plans);
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

    /// Builds every node through its registry entry, then settles what depends on the whole
    /// graph (normalize's dedup retention follows the longest window horizon).
    fn build_nodes<'n>(&mut self, header: &GraphHeader, nodes: &'n [RawNode]) -> Nodes {
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
        let mut out = Nodes::default();
        let mut built_ops: Vec<(&'static OperatorType, Box<dyn Operator>, &'n RawNode)> =
            Vec::new();
        for node in nodes {
            // Outputs are known from the type even when the config is invalid, so inputs
            // naming this node are still checked.
            match node.section {
                Section::Sources => {
                    out.outputs
                        .insert(node.name.clone(), SOURCE_OUTPUTS.to_vec());
                    let built = self.build_node(&defaults, node, &source_types, |t, cx| {
                        (t.build)(cx).map(|c| Built::Source(t, c))
                    });
                    if let Some(Built::Source(kind, component)) = built {
                        out.sources.push(SourcePlan {
                            name: node.name.clone(),
                            kind,
                            component,
                        });
                    }
                }
                Section::Operators => {
                    if let Some((_, t)) = operator_types.iter().find(|(n, _)| *n == node.type_name)
                    {
                        out.outputs.insert(node.name.clone(), t.outputs.to_vec());
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
                        let sink = SinkPlan {
                            name: node.name.clone(),
                            kind,
                            component,
                            inputs: Vec::new(),
                            route: None,
                        };
                        out.sinks.push((sink, node.inputs.clone(), node.line));
                    }
                }
            }
        }
        let facts = GraphFacts {
            horizon_ms: built_ops
                .iter()
                .filter_map(|(_, o, _)| o.horizon_ms())
                .max(),
        };
        for (kind, mut component, node) in built_ops {
            component.finish(&facts);
            let op = OperatorPlan {
                name: node.name.clone(),
                kind,
                component: Arc::from(component),
                inputs: Vec::new(),
            };
            out.operators.push((op, node.inputs.clone(), node.line));
        }
        out
    }

    /// Resolves the inputs of node `path` as written to outputs, checking that each exists
    /// and (for operators) carries the kind the node reads.
    fn resolve(
        &mut self,
        path: &str,
        raw: &[RawInput],
        want: Option<RecordKind>,
        outputs: &Outputs,
        nodes: &[RawNode],
    ) -> Vec<OutputRef> {
        let mut refs = Vec::new();
        for (text, line) in raw {
            let (node, output) = text.split_once('.').unwrap_or((text.as_str(), "out"));
            let Some(outs) = outputs.get(node) else {
                let is_sink = nodes
                    .iter()
                    .any(|n| n.section == Section::Sinks && n.name == node);
                let msg = if is_sink {
                    format!("`{node}` is only a sink; sinks have no outputs")
                } else {
                    format!("`{text}` does not name a source or operator")
                };
                self.error(format!("{path}.input"), *line, msg);
                continue;
            };
            let Some((_, kind)) = outs.iter().find(|(name, _)| *name == output) else {
                let names: Vec<&str> = outs.iter().map(|(n, _)| *n).collect();
                let msg = format!(
                    "`{node}` has no output `{output}`; its outputs: {}",
                    names.join(", ")
                );
                self.error(format!("{path}.input"), *line, msg);
                continue;
            };
            if let Some(want) = want.filter(|w| w != kind) {
                let msg = format!(
                    "`{text}` carries {} records but this node reads {} records",
                    kind.name(),
                    want.name()
                );
                self.error(format!("{path}.input"), *line, msg);
                continue;
            }
            refs.push(OutputRef {
                node: node.to_string(),
                output: output.to_string(),
                kind: *kind,
            });
        }
        refs
    }

    /// Warns of outputs nobody reads: their records are counted but not kept.
    fn warn_unread(
        &mut self,
        nodes: &[RawNode],
        outputs: &Outputs,
        operators: &[OperatorPlan],
        sinks: &[SinkPlan],
    ) {
        let read: BTreeSet<(&str, &str)> = operators
            .iter()
            .flat_map(|o| o.inputs.iter())
            .chain(sinks.iter().flat_map(|s| s.inputs.iter()))
            .map(|i| (i.node.as_str(), i.output.as_str()))
            .collect();
        let sorted: BTreeMap<&String, &Vec<(&'static str, RecordKind)>> = outputs.iter().collect();
        for (node, outs) in sorted {
            let Some(raw) = nodes
                .iter()
                .find(|n| n.section != Section::Sinks && n.name == *node)
            else {
                continue;
            };
            for (out, _) in outs {
                if read.contains(&(node.as_str(), *out)) {
                    continue;
                }
                self.warnings.push(ValidationError {
                    file: self.file.clone(),
                    line: raw.line,
                    path: format!("{}.{node}", raw.section.key()),
                    message: format!(
                        "output `{out}` is read by no node or sink: its records are counted but \
                         not kept"
                    ),
                });
            }
        }
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

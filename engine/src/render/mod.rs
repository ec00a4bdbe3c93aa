//! Builds a [`Plan`] into Timely operators, one small file per concern.
//!
//! Timely times are event-time watermarks in milliseconds. A source emits every record at its
//! stamp, its partition's watermark (`max event time seen - max_out_of_orderness`, in the
//! graph's watermark steps) over the records before it, holding partitions that run ahead back
//! until the capability reaches their stamps ([`source`]), so every downstream frontier is the
//! global watermark and every record's time depends only on its partition's order. Stateful operators stash input by time ([`stash`]) and apply it in time order,
//! each time's records sorted by input position, once the frontier has passed: results depend
//! only on the input, never on worker count or scheduling. Sinks render JSON lines, gather
//! them on the last worker and write each time's lines sorted ([`sink`]).
//!
//! [`build`] knows no component type: it asks each node's component to render itself.
//!
//! - [`failure`]: the failure slot every worker checks between steps;
//! - [`flow`]: how far a source may run ahead of the sinks;
//! - [`part`]: checkpoint parts (positions, operator state snapshots, restores);
//! - [`streams`]: streams of any record kind, by `(node, output)`;
//! - [`stash`], [`split`]: stashing by time; a stateless operator with ok and error outputs;
//! - [`source`]: the source driver (pause, flow control, watermarks, idleness, positions);
//! - [`dedup`], [`window`]: the stateful operators' timely plumbing;
//! - [`route`], [`divergence`]: production sinks fed by two versions during a canary rollout,
//!   and the two versions' bars compared;
//! - [`sink`]: the sink driver.

pub mod dedup;
pub mod divergence;
pub mod failure;
pub mod flow;
pub mod part;
pub mod relay;
pub mod route;
pub mod sink;
pub mod source;
pub mod split;
pub mod stash;
pub mod streams;
pub mod window;

use std::sync::Arc;

use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};

use crate::checkpoint::PartId;
use crate::live::Live;
use crate::metrics::{Metrics, NodeMetrics};
use crate::plan::{OutputRef, Plan};

pub use failure::{fail, Failure, FailureSlot};
pub use flow::{FlowControl, BATCH, MAX_RECORDS_IN_FLIGHT};
pub use part::{Durability, OperatorPart, Part, RestoredTable};
pub use sink::SinkCx;
pub use streams::{AnyStream, S};

/// A node's counters: the run's metrics and the node's index in them.
pub type Counters = (Arc<Metrics>, Option<usize>);

/// The node's counters, if it has any.
pub fn counters(c: &Counters) -> Option<&NodeMetrics> {
    c.1.and_then(|i| c.0.nodes.get(i))
}

/// What an operator renders itself with.
pub struct RenderCx<'s, 'a> {
    /// The worker's scope.
    pub scope: Scope<'s, u64>,
    /// The node's name.
    pub name: &'a str,
    /// The run's metrics.
    pub metrics: &'a Arc<Metrics>,
    /// The run's failure slot.
    pub failure: &'a Failure,
    /// Checkpointing, when the run has a data directory.
    pub durable: Option<&'a Durability>,
}

impl RenderCx<'_, '_> {
    /// The node's counters.
    pub fn counters(&self) -> Counters {
        (
            Arc::clone(self.metrics),
            self.metrics.index_of("operator", self.name),
        )
    }

    /// This worker's checkpoint part for the node's `tables`, when the run checkpoints.
    pub fn operator_part(
        &self,
        tables: &[tickflow_state::TableDescriptor],
    ) -> Option<OperatorPart> {
        self.durable
            .map(|d| OperatorPart::new(d, self.name, self.scope.index(), tables))
    }
}

/// What a source renders itself with.
pub struct SourceCx<'s> {
    /// The worker's scope.
    pub scope: Scope<'s, u64>,
    /// The source's index in the plan (its id in record ordinals).
    pub id: usize,
    /// The source's name.
    pub name: String,
    /// The run's metrics.
    pub metrics: Arc<Metrics>,
    /// The run's failure slot.
    pub failure: Failure,
    /// Completion at the sinks, for flow control.
    pub probe: ProbeHandle<u64>,
    /// This worker's checkpoint part, when the run checkpoints.
    pub part: Option<Part>,
    /// Pause and stop.
    pub live: Option<Arc<Live>>,
    /// The graph's watermark step ([`source::watermark_step_ms`]).
    pub watermark_step_ms: u64,
}

/// Builds the whole plan into `scope`; with `durable`, every part takes part in checkpoints
/// and resumes from the checkpoint being restored.
pub fn build(
    scope: Scope<'_, u64>,
    plan: &Plan,
    metrics: &Arc<Metrics>,
    failure: &Failure,
    durable: Option<&Durability>,
    live: Option<&Arc<Live>>,
) {
    let mut streams = streams::Streams::new(scope);
    // Completion at the sinks, which sources use to hold back.
    let probe = ProbeHandle::new();
    let watermark_step_ms = source::watermark_step_ms(
        plan.operators
            .iter()
            .flat_map(|op| op.component.event_time_grid_ms()),
    );
    for (id, src) in plan.sources.iter().enumerate() {
        let part_id = if src.component.driver().parallel {
            PartId::SourceWorker(src.name.clone(), scope.index())
        } else {
            PartId::Source(src.name.clone())
        };
        let stream = src.component.render(SourceCx {
            scope,
            id,
            name: src.name.clone(),
            metrics: Arc::clone(metrics),
            failure: Arc::clone(failure),
            probe: probe.clone(),
            part: durable.map(|d| Part::new(d, part_id)),
            live: live.cloned(),
            watermark_step_ms,
        });
        streams.insert(&src.name, "out", AnyStream::Raw(stream));
    }
    for op in &plan.operators {
        let Some(input) = streams.input(&op.inputs) else {
            fail(
                failure,
                format!(
                    "operator {}: its inputs are missing or of mixed kinds",
                    op.name
                ),
            );
            continue;
        };
        if input.kind() != op.kind.input {
            fail(
                failure,
                format!(
                    "operator {}: input carries {} records, it reads {}",
                    op.name,
                    input.kind().name(),
                    op.kind.input.name()
                ),
            );
            continue;
        }
        let cx = RenderCx {
            scope,
            name: &op.name,
            metrics,
            failure,
            durable,
        };
        let outputs = op.component.render(&cx, input);
        if outputs.len() != op.kind.outputs.len() {
            fail(
                failure,
                format!(
                    "operator {}: rendered {} outputs, its type declares {}",
                    op.name,
                    outputs.len(),
                    op.kind.outputs.len()
                ),
            );
            continue;
        }
        for ((output, kind), stream) in op.kind.outputs.iter().zip(outputs) {
            if stream.kind() != *kind {
                fail(
                    failure,
                    format!(
                        "operator {}: output {output} is not {}",
                        op.name,
                        kind.name()
                    ),
                );
            }
            streams.insert(&op.name, output, stream);
        }
    }
    if let Some(ends) = durable.and_then(|d| d.relay.as_ref()) {
        relay::render(scope, ends, probe.clone());
    }
    let names = Arc::new(plan.source_names());
    // A canary's two versions' bars, compared once per set of inputs.
    let mut compared = std::collections::BTreeSet::new();
    for s in &plan.sinks {
        let Some(route) = &s.route else { continue };
        let (current, canary) = s.inputs.split_at(route.canary_from.min(s.inputs.len()));
        let labels: Vec<String> = current.iter().map(OutputRef::label).collect();
        if !compared.insert(labels) {
            continue;
        }
        if let (Some(AnyStream::Bar(a)), Some(AnyStream::Bar(b))) =
            (streams.input(current), streams.input(canary))
        {
            let resumed = durable.and_then(|d| d.restore.as_ref()).map_or(0, |m| m.id);
            divergence::compare((a, b), route.horizon_ms, resumed, Arc::clone(metrics));
        }
    }
    for s in &plan.sinks {
        if let Some(lines) = streams.lines(&s.inputs, &names, s.route.as_ref()) {
            let cx = SinkCx {
                name: s.name.clone(),
                metrics: Arc::clone(metrics),
                failure: Arc::clone(failure),
                live: live.cloned(),
                durable: durable
                    .filter(|_| scope.index() == sink::sink_worker(scope.peers()))
                    .cloned(),
                wipe: durable.is_some_and(|d| d.wipe.contains(&s.name)).into(),
            };
            sink::drive(lines.probe_with(&probe), Arc::clone(&s.component), cx);
        }
    }
}

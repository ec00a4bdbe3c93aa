//! `normalize`: parse raw ticks, convert currency, drop duplicates.

use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;

use tickflow_operators::normalize::{NormalizeConfig, Normalizer, TABLES};
use tickflow_operators::RecordKind;
use tickflow_state::TableDescriptor;

use crate::component::{BuildCx, GraphFacts, Operator, OperatorType};
use crate::render::dedup::dedup;
use crate::render::source::raw_route;
use crate::render::split::split_map;
use crate::render::{AnyStream, RenderCx};

/// Dedup retention when the graph has no window to derive it from.
pub const DEFAULT_DEDUP_RETENTION_MS: u64 = 60_000;

/// The registry entry.
pub const TYPE: OperatorType = OperatorType {
    name: "normalize",
    description: "parse raw ticks, convert currency, drop duplicates",
    input: RecordKind::Raw,
    outputs: &[
        ("out", RecordKind::Tick),
        ("dead_letter", RecordKind::DeadLetter),
    ],
    example: r#"fx = { EUR = "1.08", GBP = "1.27" }"#,
    schema: || schemars::schema_for!(NormalizeConfig),
    build,
};

#[derive(Debug)]
struct Normalize {
    normalizer: Normalizer,
    /// `dedup_retention` as configured.
    explicit_retention_ms: Option<u64>,
    /// The retention in force (settled by [`Operator::finish`]).
    retention_ms: u64,
}

fn build(cx: &mut BuildCx) -> Option<Box<dyn Operator>> {
    let cfg: NormalizeConfig = cx.config()?;
    let explicit = cfg
        .dedup_retention
        .as_deref()
        .map(|t| cx.duration("dedup_retention", Some(t), 0));
    match Normalizer::new(&cfg, &cx.graph.base_currency) {
        Ok(normalizer) => Some(Box::new(Normalize {
            normalizer,
            explicit_retention_ms: explicit,
            retention_ms: explicit.unwrap_or(DEFAULT_DEDUP_RETENTION_MS),
        })),
        Err(errors) => {
            cx.operator_errors(errors);
            None
        }
    }
}

impl Operator for Normalize {
    fn state_tables(&self) -> &'static [TableDescriptor] {
        TABLES
    }

    fn state_identity(&self) -> Option<String> {
        // The stored layout is part of the identity (another version can only adopt a data
        // dir whose dedup keys were routed and stored the same way; builds that stored them
        // by venue alone wrote manifest format 2, which this build refuses).
        Some(format!("dedup {} by venue and seq", self.retention_ms))
    }

    /// Dedup keys live at least as long as a duplicate could still land in a window.
    fn finish(&mut self, facts: &GraphFacts) {
        self.retention_ms = self
            .explicit_retention_ms
            .or(facts.horizon_ms)
            .unwrap_or(DEFAULT_DEDUP_RETENTION_MS);
    }

    fn render<'s>(&self, cx: &RenderCx<'s, '_>, input: AnyStream<'s>) -> Vec<AnyStream<'s>> {
        let Some(input) = input.raw() else {
            return Vec::new();
        };
        let mut normalizer = self.normalizer.clone();
        let metrics = Arc::clone(cx.metrics);
        // Dedup reports normalize's `out`; the parse stage reports `in` and `dead_letter`.
        let (ticks, dead) = split_map(
            input,
            Exchange::new(raw_route(cx.scope.peers())),
            "NormalizeParse",
            (cx.counters(), false),
            move |line| {
                normalizer
                    .normalize(line)
                    .inspect_err(|dl| metrics.dead_letter(dl.reason, 1))
            },
        );
        let part = cx.operator_part(TABLES);
        let ticks = dedup(ticks, self.retention_ms, cx.counters(), part, cx.failure);
        vec![AnyStream::Tick(ticks), AnyStream::DeadLetter(dead)]
    }
}

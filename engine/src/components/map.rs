//! `map`: venue field mapping (rename, defaults, constants, event time) into the raw tick
//! contract; records that cannot be mapped are dead letters naming the field.

use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;

use crate::render::source::raw_route;

use tickflow_operators::map::{MapConfig, Mapper};
use tickflow_operators::RecordKind;

use crate::component::{BuildCx, Operator, OperatorType};
use crate::render::split::split_map;
use crate::render::{AnyStream, RenderCx};

/// The registry entry.
pub const TYPE: OperatorType = OperatorType {
    name: "map",
    description: "venue field mapping: rename fields, set defaults and constants, read the \
                  event time (epoch s/ms/us/ns or strftime) into the raw tick contract",
    input: RecordKind::Raw,
    outputs: &[
        ("out", RecordKind::Raw),
        ("dead_letter", RecordKind::DeadLetter),
    ],
    example: r#"rename = { price = "px", size = "qty", symbol = "sym", seq = "id" }
constants = { venue = "XLON" }
timestamp = { field = "time_ns", unit = "ns" }"#,
    schema: || schemars::schema_for!(MapConfig),
    build,
};

#[derive(Debug)]
struct Map(Mapper);

fn build(cx: &mut BuildCx) -> Option<Box<dyn Operator>> {
    let cfg: MapConfig = cx.config()?;
    match Mapper::new(&cfg) {
        Ok(m) => Some(Box::new(Map(m))),
        Err(errors) => {
            cx.operator_errors(errors);
            None
        }
    }
}

impl Operator for Map {
    fn render<'s>(&self, cx: &RenderCx<'s, '_>, input: AnyStream<'s>) -> Vec<AnyStream<'s>> {
        let Some(input) = input.raw() else {
            return Vec::new();
        };
        let mapper = self.0.clone();
        let metrics = Arc::clone(cx.metrics);
        let (ok, dead) = split_map(
            input,
            Exchange::new(raw_route(cx.scope.peers())),
            "Map",
            (cx.counters(), true),
            move |line| {
                mapper
                    .map(line)
                    .inspect_err(|dl| metrics.dead_letter(dl.reason, 1))
            },
        );
        vec![AnyStream::Raw(ok), AnyStream::DeadLetter(dead)]
    }
}

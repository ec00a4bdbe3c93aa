//! `stdout` sink: JSON lines to standard output.

use std::sync::Arc;

use tickflow_connectors::file::{StdoutSink, StdoutSinkConfig};

use crate::checkpoint::SinkPosition;
use crate::component::{BuildCx, Sink, SinkType, SinkWriter};
use crate::render::SinkCx;
use crate::EngineError;

use super::file_sink::Lines;

/// The registry entry.
pub const TYPE: SinkType = SinkType {
    name: "stdout",
    description: "JSON lines to standard output",
    example: r#""#,
    schema: || schemars::schema_for!(StdoutSinkConfig),
    build,
};

#[derive(Debug)]
struct Stdout;

fn build(cx: &mut BuildCx) -> Option<Arc<dyn Sink>> {
    let _: StdoutSinkConfig = cx.config()?;
    Some(Arc::new(Stdout))
}

impl Sink for Stdout {
    fn state_identity(&self) -> String {
        "Stdout".into()
    }

    fn open(
        &self,
        _cx: &SinkCx,
        _resume: Option<&SinkPosition>,
    ) -> Result<Box<dyn SinkWriter>, EngineError> {
        Ok(Box::new(Lines(StdoutSink::new())))
    }
}

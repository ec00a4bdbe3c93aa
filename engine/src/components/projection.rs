//! `projection` sink: the latest record per key, kept in the state store and read through
//! the API.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tickflow_connectors::ProjectionSinkConfig;
use tickflow_state::TableDescriptor;

use crate::checkpoint::{table_key, OpaquePosition, SinkPosition};
use crate::component::{BuildCx, Sink, SinkType, SinkWriter};
use crate::live::{ProjectionView, PROJECTION_TABLES};
use crate::metrics::Metrics;
use crate::render::SinkCx;
use crate::EngineError;

/// The registry entry.
pub const TYPE: SinkType = SinkType {
    name: "projection",
    description: "the latest record per `key` field, kept in the state store and read through \
                  the API (`tickflow serve`)",
    example: r#"key = "instrument_id""#,
    schema: || schemars::schema_for!(ProjectionSinkConfig),
    build,
};

#[derive(Debug)]
struct Projection {
    key: String,
}

fn build(cx: &mut BuildCx) -> Option<Arc<dyn Sink>> {
    let cfg: ProjectionSinkConfig = cx.config()?;
    if !cx.non_empty("key", &cfg.key, "must name the record field to key by") {
        return None;
    }
    Some(Arc::new(Projection { key: cfg.key }))
}

impl Sink for Projection {
    fn state_identity(&self) -> String {
        format!("Projection {{ key: {:?} }}", self.key)
    }

    fn state_tables(&self) -> &'static [TableDescriptor] {
        PROJECTION_TABLES
    }

    fn open(
        &self,
        cx: &SinkCx,
        _resume: Option<&SinkPosition>,
    ) -> Result<Box<dyn SinkWriter>, EngineError> {
        let view = Arc::new(ProjectionView::new(&self.key));
        if let Some(live) = &cx.live {
            live.add_view(&cx.name, Arc::clone(&view));
        }
        let table = PROJECTION_TABLES[0].name;
        let entries = cx.restored_table(table).into_iter().flatten();
        let rewrite = cx.durable.as_ref().is_some_and(|d| d.rewrite);
        view.restore(entries.map(|(k, v)| (k.as_slice(), v.as_slice())), rewrite)
            .map_err(|source| EngineError::State {
                part: format!("restoring {}/{table}", cx.name),
                source,
            })?;
        Ok(Box::new(ProjectionWriter {
            view,
            metrics: Arc::clone(&cx.metrics),
        }))
    }
}

/// Each line becomes the latest record of its key.
struct ProjectionWriter {
    view: Arc<ProjectionView>,
    metrics: Arc<Metrics>,
}

impl SinkWriter for ProjectionWriter {
    fn write_line(&mut self, line: &str) -> Result<(), EngineError> {
        if !self.view.upsert(line) {
            self.metrics.unkeyed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Writes the keys changed since the previous checkpoint (the coordinator syncs the store).
    fn checkpoint(&mut self, label: u64, cx: &SinkCx) -> Result<OpaquePosition, EngineError> {
        let ops = self.view.snapshot().map_err(|source| EngineError::State {
            part: table_key(&cx.name, PROJECTION_TABLES[0].name),
            source,
        })?;
        cx.write_table(label, PROJECTION_TABLES[0].name, ops)?;
        // Its state is the table: the position itself holds nothing.
        Ok(OpaquePosition::new("projection/1", serde_json::json!({})))
    }
}

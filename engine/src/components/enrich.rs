//! `enrich`: join ticks with instrument reference data.

use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;

use tickflow_connectors::reference;
use tickflow_operators::enrich::{EnrichConfig, ReferenceData, TABLES};
use tickflow_operators::RecordKind;
use tickflow_state::TableDescriptor;

use crate::checkpoint::{table_key, DataDir};
use crate::component::{BuildCx, Operator, OperatorType};
use crate::render::split::split_map;
use crate::render::{AnyStream, RenderCx};
use crate::EngineError;

/// The registry entry.
pub const TYPE: OperatorType = OperatorType {
    name: "enrich",
    description: "join ticks with instrument reference data",
    input: RecordKind::Tick,
    outputs: &[
        ("out", RecordKind::Enriched),
        ("dead_letter", RecordKind::DeadLetter),
    ],
    example: r#"reference = "examples/data/instruments.csv""#,
    schema: || schemars::schema_for!(EnrichConfig),
    build,
};

#[derive(Debug)]
struct Enrich {
    reference: Arc<ReferenceData>,
}

fn build(cx: &mut BuildCx) -> Option<Box<dyn Operator>> {
    let cfg: EnrichConfig = cx.config()?;
    let path = cx.readable("reference", &cfg.reference, "reference file")?;
    let table = match reference::read_csv(&path) {
        Ok(t) => t,
        Err(e) => {
            cx.error("reference", e.to_string());
            return None;
        }
    };
    match ReferenceData::from_rows(&cfg.reference, &table.header, &table.rows) {
        Ok(r) => Some(Box::new(Enrich {
            reference: Arc::new(r),
        })),
        Err(errors) => {
            cx.operator_errors(errors);
            None
        }
    }
}

impl Operator for Enrich {
    fn state_tables(&self) -> &'static [TableDescriptor] {
        TABLES
    }

    /// The reference copy is written once per data directory, not at every checkpoint.
    fn checkpointed(&self) -> bool {
        false
    }

    /// Joins with the reference data stored when the data directory was created (stored now
    /// if this run creates it), so a resumed run joins exactly as the run it continues.
    fn pin(&self, name: &str, dir: &DataDir) -> Result<Option<Arc<dyn Operator>>, EngineError> {
        let cf = table_key(name, TABLES[0].name);
        let state = |source| EngineError::State {
            part: cf.clone(),
            source,
        };
        let mut stored = Vec::new();
        dir.store
            .load(&cf, u64::MAX, |k, v| {
                stored.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .map_err(state)?;
        if stored.is_empty() {
            dir.store
                .put_base(&cf, &self.reference.to_entries())
                .map_err(state)?;
            return Ok(None);
        }
        let pinned =
            ReferenceData::from_entries(stored.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                .map_err(state)?;
        if pinned != *self.reference {
            eprintln!(
                "warning: operator {name}: the reference data file changed since data dir {} was \
                 created; the stored copy ({} instruments) is used (--fresh takes the new file)",
                dir.path.display(),
                pinned.len()
            );
        }
        Ok(Some(Arc::new(Enrich {
            reference: Arc::new(pinned),
        })))
    }

    fn render<'s>(&self, cx: &RenderCx<'s, '_>, input: AnyStream<'s>) -> Vec<AnyStream<'s>> {
        let Some(input) = input.tick() else {
            return Vec::new();
        };
        let reference = Arc::clone(&self.reference);
        let metrics = Arc::clone(cx.metrics);
        let (ok, dead) = split_map(
            input,
            Pipeline,
            "Enrich",
            (cx.counters(), true),
            move |tick| {
                reference
                    .enrich(tick)
                    .inspect_err(|dl| metrics.dead_letter(dl.reason, 1))
            },
        );
        vec![AnyStream::Enriched(ok), AnyStream::DeadLetter(dead)]
    }
}

//! `file` source: JSON lines or CSV from a file, read by one worker.

use std::path::PathBuf;
use std::sync::Arc;

use tickflow_connectors::csv_input::CsvReader;
use tickflow_connectors::file::{FileFormat, FileSourceConfig, LineReader};
use tickflow_connectors::RecordReader;
use tickflow_operators::event_time::EventTime;
use tickflow_operators::record::RawLine;

use crate::component::{BuildCx, Source, SourceType};
use crate::render::file_source::file_source;
use crate::render::{SourceCx, S};

/// The registry entry.
pub const TYPE: SourceType = SourceType {
    name: "file",
    description: "raw ticks from a file: JSON lines (default) or CSV with a header \
                  (`format = \"csv\"`)",
    example: r#"path = "examples/data/ticks.jsonl"
max_out_of_orderness = "2s""#,
    schema: || schemars::schema_for!(FileSourceConfig),
    build,
};

#[derive(Debug)]
struct FileSource {
    path: PathBuf,
    format: FileFormat,
    event_time: EventTime,
    max_out_of_orderness_ms: u64,
}

fn build(cx: &mut BuildCx) -> Option<Arc<dyn Source>> {
    let cfg: FileSourceConfig = cx.config()?;
    let path = cx.readable("path", &cfg.path, "input file");
    let ooo = cx.duration(
        "max_out_of_orderness",
        cfg.max_out_of_orderness.as_deref(),
        cx.graph.max_out_of_orderness_ms,
    );
    let event_time = cx.event_time(cfg.event_time.as_ref());
    // Every key is checked before giving up, so every error is reported.
    Some(Arc::new(FileSource {
        path: path?,
        format: cfg.format,
        event_time,
        max_out_of_orderness_ms: ooo,
    }))
}

impl Source for FileSource {
    fn state_identity(&self) -> String {
        let mut id = format!("File {{ path: {:?}", self.path);
        if self.format != FileFormat::Json {
            id.push_str(&format!(", format: {:?}", self.format));
        }
        if let EventTime::Field(rule) = &self.event_time {
            id.push_str(&format!(", event_time: {rule:?}"));
        }
        id + " }"
    }

    fn max_out_of_orderness_ms(&self) -> u64 {
        self.max_out_of_orderness_ms
    }

    fn parallel(&self) -> bool {
        false
    }

    fn render<'s>(&self, cx: SourceCx<'s>) -> S<'s, RawLine> {
        let (path, format) = (self.path.clone(), self.format);
        file_source(
            cx,
            (self.max_out_of_orderness_ms, self.event_time.clone()),
            Box::new(move || -> Result<Box<dyn RecordReader>, _> {
                Ok(match format {
                    FileFormat::Json => Box::new(LineReader::open(&path)?),
                    FileFormat::Csv => Box::new(CsvReader::open(&path)?),
                })
            }),
        )
    }
}

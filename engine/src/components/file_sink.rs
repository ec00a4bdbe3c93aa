//! `file` sink: JSON lines to a file, truncated back to the checkpoint on resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tickflow_connectors::file::{FileSink, FileSinkConfig};
use tickflow_connectors::LineSink;

use crate::checkpoint::{OpaquePosition, SinkPosition};
use crate::component::{BuildCx, Sink, SinkType, SinkWriter};
use crate::render::SinkCx;
use crate::{EngineError, RuleError};

/// The registry entry.
pub const TYPE: SinkType = SinkType {
    name: "file",
    description: "JSON lines to a file (created or truncated at start)",
    example: r#"path = "out/bars.jsonl""#,
    schema: || schemars::schema_for!(FileSinkConfig),
    build,
};

#[derive(Debug)]
struct FileOut {
    path: PathBuf,
}

fn build(cx: &mut BuildCx) -> Option<Arc<dyn Sink>> {
    let cfg: FileSinkConfig = cx.config()?;
    let path = cx.writable("path", &cfg.path, "output file")?;
    Some(Arc::new(FileOut { path }))
}

impl Sink for FileOut {
    fn state_identity(&self) -> String {
        format!("File {{ path: {:?} }}", self.path)
    }

    fn output_file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn relocated(
        &self,
        place: &dyn Fn(&Path) -> Result<PathBuf, RuleError>,
    ) -> Result<Option<Arc<dyn Sink>>, RuleError> {
        Ok(Some(Arc::new(FileOut {
            path: place(&self.path)?,
        })))
    }

    fn open(
        &self,
        cx: &SinkCx,
        resume: Option<&SinkPosition>,
    ) -> Result<Box<dyn SinkWriter>, EngineError> {
        let sink = match resume {
            Some(pos) => {
                let state = pos.writer.state_of(POSITION)?;
                let bytes = state["bytes"].as_u64().ok_or_else(|| {
                    EngineError::Checkpoint(format!("sink {}: position without `bytes`", cx.name))
                })?;
                FileSink::open_at(&self.path, bytes)?
            }
            None => FileSink::create(&self.path)?,
        };
        Ok(Box::new(Lines(sink)))
    }
}

/// The position format of a file sink: `{"bytes": length}`.
const POSITION: &str = "file/1";

/// A [`LineSink`] whose durable position is its length in bytes (0 for stdout).
pub(crate) struct Lines<W>(pub(crate) W);

impl<W: LineSink> SinkWriter for Lines<W> {
    fn write_line(&mut self, line: &str) -> Result<(), EngineError> {
        Ok(self.0.write_line(line)?)
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        Ok(self.0.flush()?)
    }

    /// Hands the lines to the OS; the coordinator fsyncs the file before committing.
    fn checkpoint(&mut self, _label: u64, _cx: &SinkCx) -> Result<OpaquePosition, EngineError> {
        let bytes = self.0.sync(false)?;
        Ok(OpaquePosition::new(
            POSITION,
            serde_json::json!({ "bytes": bytes }),
        ))
    }
}

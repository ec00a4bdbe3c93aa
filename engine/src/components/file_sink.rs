//! `file` sink: JSON lines to a file, truncated back to the checkpoint on resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tickflow_connectors::file::{FileSink, FileSinkConfig};
use tickflow_connectors::LineSink;

use crate::checkpoint::SinkPosition;
use crate::component::{BuildCx, Sink, SinkType, SinkWriter};
use crate::render::SinkCx;
use crate::EngineError;

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
        place: &dyn Fn(&Path) -> Result<PathBuf, String>,
    ) -> Result<Option<Arc<dyn Sink>>, String> {
        Ok(Some(Arc::new(FileOut {
            path: place(&self.path)?,
        })))
    }

    fn open(
        &self,
        _cx: &SinkCx,
        resume: Option<&SinkPosition>,
    ) -> Result<Box<dyn SinkWriter>, EngineError> {
        let sink = match resume {
            Some(pos) => FileSink::open_at(&self.path, pos.bytes)?,
            None => FileSink::create(&self.path)?,
        };
        Ok(Box::new(Lines(sink)))
    }
}

/// A [`LineSink`] whose durable position is its length in bytes.
pub(crate) struct Lines<W>(pub(crate) W);

impl<W: LineSink> SinkWriter for Lines<W> {
    fn write_line(&mut self, line: &str) -> Result<(), EngineError> {
        Ok(self.0.write_line(line)?)
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        Ok(self.0.flush()?)
    }

    /// Hands the lines to the OS; the coordinator fsyncs the file before committing.
    fn checkpoint(&mut self, _label: u64, _cx: &SinkCx) -> Result<SinkPosition, EngineError> {
        Ok(SinkPosition {
            bytes: self.0.sync(false)?,
            lines: 0,
            kafka: None,
        })
    }
}

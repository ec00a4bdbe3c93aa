//! `file` source: JSON lines or CSV from a file, read by one worker.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tickflow_connectors::csv_input::{CsvReader, TEXT_COLUMNS};
use tickflow_connectors::file::{FileFormat, FileSourceConfig, LineReader};
use tickflow_connectors::{ReadRecord, RecordReader, Resume};
use tickflow_operators::event_time::EventTime;
use tickflow_operators::record::{Ordinal, RawLine};

use crate::checkpoint::OpaquePosition;
use crate::component::{BuildCx, Source, SourceType};
use crate::render::source::{drive, reader_state, DriverSettings, OpenCx, Polled, SourceReader};
use crate::render::{SourceCx, S};
use crate::EngineError;

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
    /// CSV columns kept as text.
    text_columns: Vec<String>,
    /// Records per second of wall-clock time, at most.
    replay_rate: Option<u64>,
    driver: DriverSettings,
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
    if cfg.replay_rate == Some(0) {
        cx.error("replay_rate", "must be at least 1 record per second");
    }
    if cfg.text_columns.is_some() && cfg.format != FileFormat::Csv {
        cx.error(
            "text_columns",
            "only CSV sources (`format = \"csv\"`) take `text_columns`",
        );
    }
    let text_columns = cfg
        .text_columns
        .clone()
        .unwrap_or_else(|| TEXT_COLUMNS.iter().map(|c| c.to_string()).collect());
    // Every key is checked before giving up, so every error is reported.
    Some(Arc::new(FileSource {
        path: path?,
        format: cfg.format,
        text_columns,
        replay_rate: cfg.replay_rate,
        driver: DriverSettings {
            max_out_of_orderness_ms: ooo,
            idle_timeout: Duration::ZERO,
            event_time,
            parallel: false,
        },
    }))
}

impl Source for FileSource {
    fn state_identity(&self) -> String {
        let mut id = format!("File {{ path: {:?}", self.path);
        if self.format != FileFormat::Json {
            id.push_str(&format!(
                ", format: {:?}, text_columns: {:?}",
                self.format, self.text_columns
            ));
        }
        if let EventTime::Field(rule) = &self.driver.event_time {
            id.push_str(&format!(", event_time: {rule:?}"));
        }
        id + " }"
    }

    fn driver(&self) -> &DriverSettings {
        &self.driver
    }

    fn render<'s>(&self, cx: SourceCx<'s>) -> S<'s, RawLine> {
        let settings = self.driver.clone();
        let (path, format, text) = (self.path.clone(), self.format, self.text_columns.clone());
        let rate = self.replay_rate;
        drive(
            cx,
            settings,
            Box::new(move |cx| open(cx, &path, (format, &text), rate)),
        )
    }
}

/// The position format of each reader.
fn position_format(format: FileFormat) -> &'static str {
    match format {
        FileFormat::Json => "file/1",
        FileFormat::Csv => "csv/1",
    }
}

/// The worker that reads file source `source` of a run with `peers` workers.
pub fn reading_worker(source: u32, peers: usize) -> usize {
    source as usize % peers.max(1)
}

/// Opens the file on the worker that reads it ([`reading_worker`]), at the restored position
/// if there is one.
fn open(
    cx: &OpenCx,
    path: &PathBuf,
    (format, text_columns): (FileFormat, &[String]),
    replay_rate: Option<u64>,
) -> Result<Option<Box<dyn SourceReader>>, EngineError> {
    let (index, peers) = cx.worker;
    if reading_worker(cx.source, peers) != index {
        return Ok(None);
    }
    let mut inner: Box<dyn RecordReader> = match format {
        FileFormat::Json => Box::new(LineReader::open(path)?),
        FileFormat::Csv => Box::new(CsvReader::open(path, text_columns)?),
    };
    let kind = position_format(format);
    if let Some(restored) = cx.restored {
        let states = reader_state(&restored.readers, kind)?;
        let [state] = states.as_slice() else {
            return Err(EngineError::Checkpoint(format!(
                "source {}: {} positions in the checkpoint, a file source has one",
                cx.name,
                states.len()
            )));
        };
        let at = |key: &str| {
            state[key].as_u64().ok_or_else(|| {
                EngineError::Checkpoint(format!("source {}: position without `{key}`", cx.name))
            })
        };
        inner.seek(at("offset")?, at("line")?)?;
    }
    cx.metrics
        .bytes_total
        .fetch_add(inner.len() - inner.offset(), Ordering::Relaxed);
    Ok(Some(Box::new(FileReader {
        inner,
        kind,
        source: cx.source,
        done: false,
        buf: Vec::new(),
        pace: replay_rate.map(|rate| (rate, std::time::Instant::now(), 0)),
    })))
}

/// A file as a one-partition source reader.
struct FileReader {
    inner: Box<dyn RecordReader>,
    kind: &'static str,
    source: u32,
    done: bool,
    buf: Vec<ReadRecord>,
    /// `replay_rate`: records per second, since when, records read since.
    pace: Option<(u64, std::time::Instant, u64)>,
}

impl SourceReader for FileReader {
    fn partitions(&self) -> Vec<i32> {
        vec![0]
    }

    fn poll(
        &mut self,
        max: usize,
        out: &mut Vec<Polled>,
        at_end: &mut Vec<i32>,
    ) -> Result<u64, EngineError> {
        let before = self.inner.offset();
        self.buf.clear();
        let max = match &mut self.pace {
            None => max,
            Some((rate, since, read)) => {
                let allowed = (since.elapsed().as_secs_f64() * *rate as f64) as u64;
                let n = allowed.saturating_sub(*read).min(max as u64);
                *read += n;
                n as usize
            }
        };
        if max == 0 {
            return Ok(0);
        }
        let more = self.inner.read_batch(max, &mut self.buf)?;
        let source = self.source;
        out.extend(self.buf.drain(..).map(|r| Polled {
            partition: 0,
            ordinal: Ordinal {
                source,
                line: r.line,
            },
            text: r.text,
            at: r.before,
        }));
        if !more {
            self.done = true;
            at_end.push(0);
        }
        Ok(self.inner.offset() - before)
    }

    fn done(&self, _partition: i32) -> bool {
        self.done
    }

    fn position(&self, rewind: &[(i32, Resume)]) -> OpaquePosition {
        let at = rewind.first().map_or(
            Resume {
                offset: self.inner.offset(),
                line: self.inner.line(),
            },
            |(_, at)| *at,
        );
        OpaquePosition {
            format: self.kind.to_string(),
            state: serde_json::json!({ "offset": at.offset, "line": at.line }),
        }
    }
}

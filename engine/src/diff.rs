//! A keyed diff of two versions' outputs: which records match, which differ (and in which
//! fields), which only one version wrote. `tickflow diff` runs it on a recorded input (a
//! backtest); tickflow's outputs are deterministic, so an unchanged graph gives no difference
//! and any difference is the change itself.
//!
//! A record's key is, by the fields it has: a bar's `instrument_id`, `window_start` and
//! `window_end` (a bar emitted again with a later `revision` replaces the earlier one: the
//! last revision is compared); a dead letter's `source` and `line`; a tick's `venue` and `seq`
//! (late ticks); else the whole line. Records with the same key in one output are told apart
//! by their order (`#2`, `#3`, ...).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::RuleError;
use crate::live::Live;
use crate::policy::GraphPolicy;
use crate::{compile_confined, compile_str, EngineError, Metrics, RunOptions};

/// Field sets that key a record, tried in order.
const KEYS: [&[&str]; 3] = [
    &["instrument_id", "window_start", "window_end"],
    &["source", "line"],
    &["venue", "seq"],
];

/// How two versions' outputs of one sink compare.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SinkDiff {
    /// Keys whose records are equal.
    pub matched: u64,
    /// Keys whose records differ.
    pub differing: u64,
    /// Keys only the old (current) version wrote.
    pub only_old: u64,
    /// Keys only the new version wrote.
    pub only_new: u64,
    /// Per field, how many differing records differ in it.
    pub fields: BTreeMap<String, u64>,
    /// The first few differences of each kind.
    pub samples: Vec<Sample>,
}

impl SinkDiff {
    /// Keys differing or only in one version, per key compared (0 when none was).
    pub fn divergence(&self) -> f64 {
        let off = self.differing + self.only_old + self.only_new;
        off as f64 / (off + self.matched).max(1) as f64
    }

    /// Whether the two outputs are the same.
    pub fn is_same(&self) -> bool {
        self.differing == 0 && self.only_old == 0 && self.only_new == 0
    }
}

/// One difference, for a person to look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sample {
    /// The record of `key` differs in `fields`: `(field, old value, new value)`.
    Differs {
        key: String,
        fields: Vec<(String, Value, Value)>,
    },
    /// Only the old version wrote `key`.
    OnlyOld { key: String, record: Value },
    /// Only the new version wrote `key`.
    OnlyNew { key: String, record: Value },
}

/// A record's key (see the module docs) and the record.
fn keyed(line: &str) -> (String, Value) {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => return (line.to_string(), Value::String(line.to_string())),
    };
    let key = value.as_object().and_then(|o| {
        KEYS.iter()
            .find(|fields| fields.iter().all(|f| o.contains_key(*f)))
            .map(|fields| {
                fields
                    .iter()
                    .map(|f| match &o[*f] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
    });
    (key.unwrap_or_else(|| line.to_string()), value)
}

/// Whether `new` is a later emission of the same bar than `old` (a higher `revision`).
fn revises(old: &Value, new: &Value) -> bool {
    let revision = |v: &Value| v.get("revision").and_then(Value::as_u64);
    matches!((revision(old), revision(new)), (Some(a), Some(b)) if b > a)
}

/// An output's records by key.
fn by_key<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (key, value) = keyed(line);
        match out.get_mut(&key) {
            None => {
                out.insert(key, value);
            }
            Some(old) if revises(old, &value) => *old = value,
            Some(_) => {
                let n = seen.entry(key.clone()).or_insert(1);
                *n += 1;
                out.insert(format!("{key} #{n}"), value);
            }
        }
    }
    out
}

/// The fields in which two records differ, with both values (`null` for a missing one).
fn differing_fields(old: &Value, new: &Value) -> Vec<(String, Value, Value)> {
    match (old.as_object(), new.as_object()) {
        (Some(a), Some(b)) => {
            let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
            names.sort();
            names.dedup();
            let get = |m: &Map<String, Value>, k: &str| m.get(k).cloned().unwrap_or(Value::Null);
            names
                .into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| (k.clone(), get(a, k), get(b, k)))
                .collect()
        }
        _ => vec![("line".to_string(), old.clone(), new.clone())],
    }
}

/// Compares the records (one JSON object per line) the old and the new version wrote to one
/// sink, keeping up to `samples` examples of each kind of difference.
pub fn diff_lines<'a>(
    old: impl Iterator<Item = &'a str>,
    new: impl Iterator<Item = &'a str>,
    samples: usize,
) -> SinkDiff {
    let (old, mut new) = (by_key(old), by_key(new));
    let mut d = SinkDiff::default();
    let (mut differs, mut only_old) = (Vec::new(), Vec::new());
    for (key, a) in old {
        match new.remove(&key) {
            Some(b) if a == b => d.matched += 1,
            Some(b) => {
                d.differing += 1;
                let fields = differing_fields(&a, &b);
                for (f, _, _) in &fields {
                    *d.fields.entry(f.clone()).or_default() += 1;
                }
                if differs.len() < samples {
                    differs.push(Sample::Differs { key, fields });
                }
            }
            None => {
                d.only_old += 1;
                if only_old.len() < samples {
                    only_old.push(Sample::OnlyOld { key, record: a });
                }
            }
        }
    }
    d.only_new = new.len() as u64;
    d.samples = differs;
    d.samples.extend(only_old);
    d.samples.extend(
        new.into_iter()
            .take(samples)
            .map(|(key, record)| Sample::OnlyNew { key, record }),
    );
    d
}

/// The graph TOML `text` (from `file`) rewritten for a backtest: its one source reads the
/// recorded `input` (a file source keeps its format settings; any other becomes a file
/// source), and every sink but a projection (which stays in memory) writes the file
/// `out/<sink>.jsonl` instead: never a production file or topic. Returns the new text and the
/// sinks' files by sink name.
pub fn backtest_graph(
    text: &str,
    file: &str,
    input: &Path,
    out: &Path,
) -> Result<(String, BTreeMap<String, std::path::PathBuf>), EngineError> {
    use toml_edit::{value, DocumentMut, Item};
    let invalid = |why: String| EngineError::Backtest(format!("{file}: {why}"));
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| invalid(e.to_string()))?;
    let as_text = |p: &Path| p.display().to_string();
    let sources = doc
        .get_mut("sources")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| invalid("has no [sources]".into()))?;
    let names: Vec<String> = sources.iter().map(|(k, _)| k.to_string()).collect();
    let [name] = names.as_slice() else {
        return Err(invalid(format!(
            "a backtest replaces the graph's one source with the recorded input, but it has \
             {} ({})",
            names.len(),
            names.join(", ")
        )));
    };
    let source = sources
        .get_mut(name)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| invalid(format!("sources.{name} is not a table")))?;
    if source.get("type").and_then(Item::as_str) != Some("file") {
        source.clear();
        source.insert("type", value("file"));
    }
    source.insert("path", value(as_text(input)));
    let files = redirect_sinks(&mut doc, |name| as_text(&out.join(format!("{name}.jsonl"))))
        .into_iter()
        .map(|(k, v)| (k, PathBuf::from(v)))
        .collect();
    Ok((doc.to_string(), files))
}

/// Every sink of the graph document but a projection (which stays in memory) becomes a file
/// sink writing `path(name)`; returns those paths by sink name.
fn redirect_sinks(
    doc: &mut toml_edit::DocumentMut,
    path: impl Fn(&str) -> String,
) -> BTreeMap<String, String> {
    use toml_edit::{value, Item};
    let mut files = BTreeMap::new();
    let Some(sinks) = doc.get_mut("sinks").and_then(Item::as_table_like_mut) else {
        return files;
    };
    for (name, sink) in sinks.iter_mut() {
        let Some(sink) = sink.as_table_like_mut() else {
            continue;
        };
        if sink.get("type").and_then(Item::as_str) == Some("projection") {
            continue;
        }
        let input = sink.get("input").cloned().unwrap_or(Item::None);
        let file = path(&name);
        sink.clear();
        sink.insert("type", value("file"));
        sink.insert("input", input);
        sink.insert("path", value(file.clone()));
        files.insert(name.to_string(), file);
    }
    files
}

/// The graph TOML `text` of a shadow run: every sink but a projection writes the relative
/// file `shadow/<sink>.jsonl` (placed in the shadow deployment's own output directory), never
/// a production file or topic. Sources read as they are, but a Kafka source reads (and commits
/// its offsets) as a consumer group of its own, `<group>.shadow-<tag>`: never the production
/// deployment's group, so it starts where `start` says (`earliest`: the whole topic).
pub fn shadow_graph(text: &str, file: &str, tag: &str) -> Result<String, EngineError> {
    use toml_edit::DocumentMut;
    let invalid = |why: String| EngineError::Backtest(format!("{file}: {why}"));
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| invalid(e.to_string()))?;
    own_groups(&mut doc, &format!("shadow-{tag}"));
    redirect_sinks(&mut doc, |name| format!("shadow/{name}.jsonl"));
    Ok(doc.to_string())
}

/// The graph TOML `text` with every Kafka source reading as a consumer group of its own,
/// `<group>.<tag>` (a canary's new version beside production's).
pub fn own_consumer_groups(text: &str, file: &str, tag: &str) -> Result<String, EngineError> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EngineError::Backtest(format!("{file}: {e}")))?;
    own_groups(&mut doc, tag);
    Ok(doc.to_string())
}

fn own_groups(doc: &mut toml_edit::DocumentMut, tag: &str) {
    use toml_edit::{value, Item};
    let graph = doc
        .get("graph")
        .and_then(|g| g.get("name"))
        .and_then(Item::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(sources) = doc.get_mut("sources").and_then(Item::as_table_like_mut) else {
        return;
    };
    for (name, source) in sources.iter_mut() {
        let Some(source) = source.as_table_like_mut() else {
            continue;
        };
        if source.get("type").and_then(Item::as_str) != Some("kafka") {
            continue;
        }
        let group = source
            .get("group_id")
            .and_then(Item::as_str)
            .map_or_else(|| format!("tickflow.{graph}.{name}"), String::from);
        source.insert("group_id", value(format!("{group}.{tag}")));
    }
}

/// The records of one output that are final at event time `through` (ms): those of a window
/// that ended at least `horizon_ms` (its size and allowed lateness, at most) before it. Lines
/// without a `window_end` are final only when `through` is the end of time (both runs
/// done): `None` then means the sink cannot be compared yet.
pub fn final_lines(text: &str, through: u64, horizon_ms: u64) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let end = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("window_end")?.as_str().map(str::to_string))
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.timestamp_millis().max(0) as u64);
        match end {
            Some(end) if end.saturating_add(horizon_ms) <= through => out.push(line),
            Some(_) => {}
            None if through == u64::MAX => out.push(line),
            None => return None,
        }
    }
    Some(out)
}

/// One version of a backtest: its graph TOML, and the name errors give it.
pub struct Version<'a> {
    /// The TOML text.
    pub toml: &'a str,
    /// Its file, or `graph vN`.
    pub file: &'a str,
}

/// How a backtest runs.
pub struct BacktestLimits {
    /// Worker threads of each run.
    pub workers: usize,
    /// Differences kept as samples per kind and sink.
    pub samples: usize,
    /// Longest a run may take before the backtest is given up.
    pub timeout: Option<Duration>,
}

/// What a backtest found.
#[derive(Debug, Clone, Serialize)]
pub struct Backtest {
    /// The recorded input.
    pub input: PathBuf,
    /// Records the input held.
    pub input_records: u64,
    /// Whether every sink's output is the same.
    pub same: bool,
    /// The keyed diff of each sink both versions have.
    pub sinks: BTreeMap<String, SinkDiff>,
    /// Sinks only one version has.
    pub unpaired_sinks: Vec<String>,
}

/// Runs `old` and then `new` on the recorded `input` (see [`backtest_graph`]), their outputs
/// under `out/old` and `out/new`, and diffs every sink both have. Each graph is first compiled
/// as written under `policy` (what it reads must be allowed there); `input` must have been
/// checked already.
pub fn backtest(
    (old, new): (Version<'_>, Version<'_>),
    input: &Path,
    out: &Path,
    limits: &BacktestLimits,
    policy: &GraphPolicy,
) -> Result<Backtest, EngineError> {
    let (old_files, read) = run_version(&old, input, &out.join("old"), limits, policy)?;
    let (new_files, _) = run_version(&new, input, &out.join("new"), limits, policy)?;
    let read_file = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| EngineError::File {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut sinks = BTreeMap::new();
    let mut unpaired = Vec::new();
    for (name, old_path) in &old_files {
        let Some(new_path) = new_files.get(name) else {
            unpaired.push(format!("sink `{name}` is only in the old version"));
            continue;
        };
        let (a, b) = (read_file(old_path)?, read_file(new_path)?);
        sinks.insert(
            name.clone(),
            diff_lines(a.lines(), b.lines(), limits.samples),
        );
    }
    unpaired.extend(
        new_files
            .keys()
            .filter(|n| !old_files.contains_key(*n))
            .map(|n| format!("sink `{n}` is only in the new version")),
    );
    Ok(Backtest {
        input: input.to_path_buf(),
        input_records: read,
        same: unpaired.is_empty() && sinks.values().all(SinkDiff::is_same),
        sinks,
        unpaired_sinks: unpaired,
    })
}

/// One version run on the recording: its sinks' files by name, and the records it read.
fn run_version(
    version: &Version<'_>,
    input: &Path,
    out: &Path,
    limits: &BacktestLimits,
    policy: &GraphPolicy,
) -> Result<(BTreeMap<String, PathBuf>, u64), EngineError> {
    compile_confined(version.toml, version.file, policy)?;
    let (text, files) = backtest_graph(version.toml, version.file, input, out)?;
    let plan = Arc::new(compile_str(&text, version.file)?);
    let metrics = Arc::new(Metrics::for_plan(&plan));
    let live = Live::new(false, None);
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The run is stopped (and the backtest given up) once it takes longer than the timeout.
    let watchdog = limits.timeout.map(|timeout| {
        let (live, done) = (Arc::clone(&live), Arc::clone(&done));
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::Relaxed;
            while started.elapsed() < timeout && !done.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !done.load(Relaxed) {
                live.stop();
            }
        })
    });
    let options = RunOptions {
        workers: limits.workers.max(1),
        live: Some(Arc::clone(&live)),
        ..RunOptions::default()
    };
    let summary = crate::run(plan, &options, metrics);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    let summary = summary?;
    if summary.stopped {
        return Err(EngineError::Backtest(format!(
            "{}: the run took longer than {} s and was stopped",
            version.file,
            limits.timeout.map_or(0, |t| t.as_secs())
        )));
    }
    Ok((files, summary.input_records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(id: &str, end: &str, close: &str, revision: u64) -> String {
        format!(
            r#"{{"instrument_id":"{id}","window_start":"s","window_end":"{end}","close":"{close}","revision":{revision}}}"#
        )
    }

    #[test]
    fn bars_are_keyed_by_instrument_and_window_and_compared_at_their_last_revision() {
        let old = [
            bar("A", "1", "10", 0),
            bar("B", "1", "20", 0),
            bar("B", "1", "21", 1),
            bar("C", "1", "30", 0),
        ]
        .join("\n");
        let new = [
            bar("A", "1", "10", 0),
            bar("B", "1", "22", 1),
            bar("D", "1", "40", 0),
        ]
        .join("\n");
        let d = diff_lines(old.lines(), new.lines(), 10);
        assert_eq!(
            (d.matched, d.differing, d.only_old, d.only_new),
            (1, 1, 1, 1)
        );
        assert_eq!(d.fields, [("close".to_string(), 1)].into());
        assert_eq!(
            d.samples[0],
            Sample::Differs {
                key: "B s 1".into(),
                fields: vec![("close".into(), "21".into(), "22".into())],
            }
        );
        assert!(!d.is_same());
        let same = diff_lines(old.lines(), old.lines(), 10);
        assert!(same.is_same() && same.matched == 3);
    }

    #[test]
    fn a_backtest_graph_reads_the_recording_and_writes_no_production_output() {
        let text = "[graph]\nname = \"g\"\nversion = 1\n[sources.ticks]\ntype = \"kafka\"\n\
                    brokers = \"b:9092\"\ntopic = \"raw\"\n[sinks.bars]\ntype = \"kafka\"\n\
                    input = \"bars\"\nbrokers = \"b:9092\"\ntopic = \"prod\"\n\
                    [sinks.latest]\ntype = \"projection\"\ninput = \"bars\"\nkey = \"id\"\n";
        let (out, files) = backtest_graph(
            text,
            "g.toml",
            Path::new("/rec/ticks.jsonl"),
            Path::new("/o"),
        )
        .unwrap();
        let doc: toml::Table = out.parse().unwrap();
        assert_eq!(doc["sources"]["ticks"]["type"].as_str(), Some("file"));
        assert_eq!(
            doc["sources"]["ticks"]["path"].as_str(),
            Some("/rec/ticks.jsonl")
        );
        assert!(doc["sources"]["ticks"].get("topic").is_none());
        assert_eq!(doc["sinks"]["bars"]["path"].as_str(), Some("/o/bars.jsonl"));
        assert!(
            doc["sinks"]["bars"].get("topic").is_none(),
            "no production topic"
        );
        assert_eq!(doc["sinks"]["latest"]["type"].as_str(), Some("projection"));
        assert_eq!(files.keys().collect::<Vec<_>>(), ["bars"]);
        let two = format!("{text}[sources.more]\ntype = \"file\"\npath = \"x\"\n");
        let err = backtest_graph(&two, "g.toml", Path::new("r"), Path::new("o")).unwrap_err();
        assert!(err.to_string().contains("has 2 (ticks, more)"), "{err}");
    }

    #[test]
    fn dead_letters_ticks_and_other_lines_have_keys_of_their_own() {
        let old = "{\"source\":\"t\",\"line\":3,\"reason\":\"malformed\"}\n{\"venue\":\"X\",\"seq\":1,\"price\":\"1\"}\nplain\nplain\n";
        let new = "{\"source\":\"t\",\"line\":3,\"reason\":\"invalid_value\"}\n{\"venue\":\"X\",\"seq\":1,\"price\":\"1\"}\nplain\n";
        let d = diff_lines(old.lines(), new.lines(), 1);
        assert_eq!(
            (d.matched, d.differing, d.only_old, d.only_new),
            (2, 1, 1, 0)
        );
        assert_eq!(d.fields, [("reason".to_string(), 1)].into());
        assert_eq!(d.samples.len(), 2, "one sample of each kind found");
    }
}

/// A Kafka offset range as a backtest's recorded input: partition -> `[from, to)`.
pub type KafkaRange = BTreeMap<i32, (i64, i64)>;

/// Parses `PARTITION:FROM-TO[,PARTITION:FROM-TO...]` (`TO` exclusive).
pub fn parse_kafka_range(spec: &str) -> Result<KafkaRange, RuleError> {
    let mut ranges = KafkaRange::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}`: expected PARTITION:FROM-TO, such as 0:100-200");
        let (p, range) = part.split_once(':').ok_or_else(bad)?;
        let (from, to) = range.split_once('-').ok_or_else(bad)?;
        let (p, from, to) = (
            p.trim().parse::<i32>().map_err(|_| bad())?,
            from.trim().parse::<i64>().map_err(|_| bad())?,
            to.trim().parse::<i64>().map_err(|_| bad())?,
        );
        if from < 0 || to <= from {
            return Err(format!("`{part}`: the range must be FROM < TO, both from 0").into());
        }
        if ranges.insert(p, (from, to)).is_some() {
            return Err(format!("partition {p} is given twice").into());
        }
    }
    if ranges.is_empty() {
        return Err("no partition range given".into());
    }
    Ok(ranges)
}

/// The brokers and topic of the graph TOML `text`'s one source, a Kafka source.
pub fn kafka_source(text: &str, file: &str) -> Result<(String, String), EngineError> {
    let invalid = |why: String| EngineError::Backtest(format!("{file}: {why}"));
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
    let sources = doc
        .get("sources")
        .and_then(|s| s.as_table())
        .ok_or_else(|| invalid("has no [sources]".into()))?;
    let [(name, source)] = sources.iter().collect::<Vec<_>>()[..] else {
        return Err(invalid(format!(
            "a backtest on a Kafka range reads the graph's one source, but it has {}",
            sources.len()
        )));
    };
    let key = |k: &str| source.get(k).and_then(|v| v.as_str()).map(String::from);
    match (key("type").as_deref(), key("brokers"), key("topic")) {
        (Some("kafka"), Some(brokers), Some(topic)) => Ok((brokers, topic)),
        _ => Err(invalid(format!(
            "sources.{name} is not a Kafka source with `brokers` and `topic`"
        ))),
    }
}

/// Records the range `ranges` of the topic of `text`'s Kafka source into `path`, one value a
/// line, in one deterministic order (see [`tickflow_connectors::kafka::read_range`]); returns
/// the records written. At most `max_bytes` are read.
pub fn record_kafka_range(
    (text, file): (&str, &str),
    ranges: &KafkaRange,
    path: &Path,
    max_bytes: u64,
) -> Result<u64, EngineError> {
    use std::io::Write;
    let (brokers, topic) = kafka_source(text, file)?;
    let values = tickflow_connectors::kafka::read_range(&brokers, &topic, ranges, max_bytes)
        .map_err(|e| EngineError::Backtest(format!("{topic}: {e}")))?;
    let io = |e: std::io::Error| EngineError::Backtest(format!("{}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for v in &values {
        // One record, one line: a value's own line breaks would split it.
        writeln!(out, "{}", v.replace(['\n', '\r'], " ")).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(values.len() as u64)
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn kafka_ranges_parse_and_bad_ones_say_why() {
        let r = parse_kafka_range("0:100-200, 3:0-5").unwrap();
        assert_eq!(r.get(&0), Some(&(100, 200)));
        assert_eq!(r.get(&3), Some(&(0, 5)));
        for bad in ["", "0:5-5", "x:1-2", "0:1-2,0:3-4", "0-1"] {
            assert!(parse_kafka_range(bad).is_err(), "{bad}");
        }
    }
}

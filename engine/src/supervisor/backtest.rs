//! A backtest over the API: two submitted versions of a graph run on a recorded file inside
//! the server's read roots, their outputs in a scratch directory of the engine's data dir, and
//! the keyed diff of their outputs (see [`crate::diff`]). Bounded like anything a key can ask
//! for: the input's size, each run's time, one backtest at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::diff::{backtest, Backtest, BacktestLimits, Version};

use super::launch::Role;
use super::*;

/// What a backtest over the API reads.
#[derive(Debug, Clone)]
pub enum BacktestInput {
    /// A recorded file in the read roots.
    File(String),
    /// An offset range (partition -> `[from, to)`) of the old version's Kafka topic.
    Kafka(crate::diff::KafkaRange),
}

impl Supervisor {
    /// Backtests `graph` v`old` against v`new` on `input`: a file in the read roots, or an
    /// offset range of the topic v`old`'s Kafka source reads (recorded first, at most
    /// `backtest_max_input_bytes`).
    pub fn backtest(
        &self,
        graph: &str,
        (old, new): (i64, i64),
        input: &BacktestInput,
        samples: usize,
    ) -> Result<Backtest, CommandError> {
        let refuse = |r: Refusal| CommandError::Refused(r);
        let tomls = {
            let inner = self.lock();
            let toml = |v: i64| {
                inner
                    .state
                    .graph_version(graph, v)
                    .map(|g| g.toml.clone())
                    .ok_or_else(|| {
                        refuse(Refusal::NotFound(format!(
                            "graph `{graph}` has no version {v}"
                        )))
                    })
            };
            (toml(old)?, toml(new)?)
        };
        let most = self.config.backtest_max_input_bytes;
        let file = match input {
            BacktestInput::File(path) => {
                let file = self
                    .policy
                    .readable(path)
                    .map_err(|e| refuse(Refusal::Invalid(format!("input: {e}"))))?;
                let size = std::fs::metadata(&file).map_or(0, |m| m.len());
                if size > most {
                    return Err(refuse(Refusal::Invalid(format!(
                        "input: {size} bytes is more than this server backtests ({most}, \
                         `backtest_max_input_bytes`)"
                    ))));
                }
                Some(file)
            }
            BacktestInput::Kafka(_) => None,
        };
        let Ok(_one) = self.backtest_lock.try_lock() else {
            return Err(refuse(Refusal::Conflict(
                "a backtest is already running; try again when it is done".into(),
            )));
        };
        let scratch = self.config.data_dir.join("backtests");
        std::fs::create_dir_all(&scratch)
            .map_err(|e| CommandError::Internal(format!("{}: {e}", scratch.display())))?;
        let out = tempfile::tempdir_in(&scratch)
            .map_err(|e| CommandError::Internal(format!("{}: {e}", scratch.display())))?;
        let names = (format!("{graph} v{old}"), format!("{graph} v{new}"));
        // A Kafka range is recorded into the scratch directory, which only this backtest's
        // graphs may read.
        let (input, policy) = match (file, input) {
            (Some(file), _) => (file, self.policy.clone()),
            (None, BacktestInput::Kafka(ranges)) => {
                let recorded = out.path().join("recorded.jsonl");
                crate::diff::record_kafka_range((&tomls.0, &names.0), ranges, &recorded, most)
                    .map_err(|e| refuse(Refusal::Invalid(format!("kafka: {e}"))))?;
                let policy = self
                    .policy
                    .with_recorded_input(&recorded)
                    .map_err(|e| CommandError::Internal(e.to_string()))?;
                (recorded, policy)
            }
            (None, BacktestInput::File(_)) => {
                return Err(CommandError::Internal("backtest input lost".into()))
            }
        };
        let limits = BacktestLimits {
            workers: self.config.workers,
            samples,
            timeout: Some(self.config.backtest_timeout),
        };
        backtest(
            (
                Version {
                    toml: &tomls.0,
                    file: &names.0,
                },
                Version {
                    toml: &tomls.1,
                    file: &names.1,
                },
            ),
            &input,
            out.path(),
            &limits,
            &policy,
        )
        .map_err(|e| refuse(Refusal::Invalid(e.to_string())))
    }
}

/// A shadow deployment's keyed diff against the production deployment it runs beside.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowDiff {
    /// The shadow.
    pub shadow: u64,
    /// The production deployment.
    pub current: u64,
    /// Records are compared through this event time (ms): the lesser of the two watermarks,
    /// less the graph's horizon (window size and lateness) for bars, so that only final
    /// records are compared; `null` once both have ended.
    pub through_ms: Option<u64>,
    /// Whether every sink compared so far is the same.
    pub same: bool,
    /// The keyed diff of each sink.
    pub sinks: BTreeMap<String, crate::diff::SinkDiff>,
    /// Sinks whose records carry no window end: compared once both have ended.
    pub pending_sinks: Vec<String>,
}

impl Supervisor {
    /// The keyed diff of shadow deployment `id` against the deployment it shadows, as far as
    /// both have gone (see [`ShadowDiff`]).
    pub fn shadow_diff(&self, id: u64, samples: usize) -> Result<ShadowDiff, Refusal> {
        let inner = self.lock();
        let d = inner
            .state
            .deployments
            .get(&id)
            .ok_or_else(|| Refusal::NotFound(format!("deployment {id} does not exist")))?;
        let current = d.shadow_of.ok_or_else(|| {
            Refusal::Conflict(format!(
                "deployment {id} is not a shadow (deploy with \"strategy\": \"shadow\")"
            ))
        })?;
        let c = inner
            .state
            .deployments
            .get(&current)
            .ok_or_else(|| Refusal::NotFound(format!("deployment {current} does not exist")))?;
        let plan_of = |x: &Deployment| {
            self.placed_plan(
                &inner,
                (&x.graph, x.version),
                (&x.state_dir, Role::new(x.id, x.shadow_of.is_some(), None)),
                &[x.id, current, id],
            )
            .map_err(|e| Refusal::Invalid(format!("deployment {}: {e}", x.id)))
        };
        let (shadow_plan, current_plan) = (plan_of(d)?, plan_of(c)?);
        // How far each has gone: a run's watermark; a deployment that ended, all of its input.
        let reached = |x: &Deployment| -> u64 {
            if x.state == DeploymentState::Finished {
                return u64::MAX;
            }
            inner
                .runs
                .get(&x.id)
                .and_then(|r| r.metrics.watermark_ms())
                .unwrap_or(0)
        };
        let through = reached(d).min(reached(c));
        let horizon = shadow_plan.horizon_ms().max(current_plan.horizon_ms());
        let files = |p: &Plan| -> BTreeMap<String, PathBuf> {
            p.sinks
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.component.output_file()?.to_path_buf())))
                .collect()
        };
        let (ours, theirs) = (files(&shadow_plan), files(&current_plan));
        drop(inner);
        let mut out = ShadowDiff {
            shadow: id,
            current,
            through_ms: (through < u64::MAX).then_some(through),
            same: true,
            sinks: BTreeMap::new(),
            pending_sinks: Vec::new(),
        };
        for (name, shadow_file) in &ours {
            let Some(current_file) = theirs.get(name) else {
                continue;
            };
            let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
            let (a, b) = (read(current_file), read(shadow_file));
            let finals = (
                crate::diff::final_lines(&a, through, horizon),
                crate::diff::final_lines(&b, through, horizon),
            );
            let (Some(a), Some(b)) = finals else {
                out.pending_sinks.push(name.clone());
                continue;
            };
            let diff = crate::diff::diff_lines(a.into_iter(), b.into_iter(), samples);
            out.same &= diff.is_same();
            out.sinks.insert(name.clone(), diff);
        }
        Ok(out)
    }
}

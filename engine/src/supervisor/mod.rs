//! The long-running engine behind `tickflow serve`: owns the event log, folds it into the
//! control state, and keeps one dataflow per active deployment.
//!
//! Every change goes the same way, at startup and live: events are appended (fsync'd), applied
//! to [`ControlState`] with the same [`ControlState::apply`] replay uses, then `reconcile`
//! makes the running dataflows match the state: stopping those no longer active (joined, so
//! their RocksDB is released), starting active ones that have none, pausing and resuming the
//! rest. A dataflow reports back (started, finished, failed) through a channel that a
//! notice thread turns into events, so no dataflow thread ever waits for the supervisor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tickflow_state::events::{Event, EventKind, SYSTEM_ACTOR};
use tickflow_state::{EventLog, OpenReport};

use crate::checkpoint::list_markers;
use crate::control::{decide, Command, ControlState, Deployment, DeploymentState, Refusal};
use crate::live::Live;
use crate::policy::GraphPolicy;
use crate::run::{NodeSummary, RunOptions, Summary};
use crate::{compile_confined, EngineError, Metrics, Plan, RuleError};

mod backtest;
mod follow;
mod launch;
mod log;
mod rollout;

pub use backtest::BacktestInput;
use launch::{join_by, used_dir_ids};
pub use log::read_events;
use log::{read_log, stored_view};
pub use rollout::canary_checks;

/// The event log's file name in the engine's data directory.
pub const EVENT_LOG: &str = "events.log";

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Holds `events.log` and `deployments/<dir>` (state and checkpoints per deployment).
    pub data_dir: PathBuf,
    /// Worker threads per deployment.
    pub workers: usize,
    /// Truncate the event log at a damaged record instead of refusing to start.
    pub repair: bool,
    /// Directories graphs may read files from (sources, reference data); none: no file
    /// inputs at all.
    pub read_roots: Vec<PathBuf>,
    /// The directory under which file sinks write, each deployment in its own
    /// subdirectory; none: no file sinks.
    pub output_root: Option<PathBuf>,
    /// The most nodes a submitted graph may have.
    pub max_graph_nodes: usize,
    /// How long a stopping dataflow may take before its deployment is failed.
    pub stop_timeout: std::time::Duration,
    /// How long `/metrics` keeps the series of a deployment that ended.
    pub metrics_grace: std::time::Duration,
    /// `serve` on several processes (see [`ServeCluster`]); none: this process alone.
    pub cluster: Option<ServeCluster>,
    /// Longest each run of a backtest over the API may take.
    pub backtest_timeout: std::time::Duration,
    /// Largest recorded input a backtest over the API reads.
    pub backtest_max_input_bytes: u64,
}

/// `tickflow serve` on several processes. Process 0 is the **leader**: it serves the API's
/// commands and owns the event log, as one process does. The others **follow** it: they read
/// its events over its API ([`Supervisor::follow`]), fold them with the same
/// [`ControlState::apply`], and run their share of every active deployment, each deployment a
/// Timely cluster of its own (see [`ServeCluster::deployment`]). A follower appends nothing and
/// refuses commands; restarting it replays the leader's events and rejoins.
#[derive(Debug, Clone)]
pub struct ServeCluster {
    /// This process's index (0: the leader).
    pub process: usize,
    /// `host:port` of every process, in process order: deployment `d`'s processes connect on
    /// `port + d`.
    pub addresses: Vec<String>,
    /// How long a deployment's run waits for the other processes at start.
    pub connect_timeout: std::time::Duration,
    /// On a follower, the leader's API (named in refusals of commands).
    pub leader: Option<String>,
}

/// Why a command did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Refused by the control rules; nothing was appended.
    #[error("{}", .0.message())]
    Refused(Refusal),
    /// The event log could not be written.
    #[error("{0}")]
    Internal(String),
}

/// One appended event with its sequence number.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LoggedEvent {
    /// Sequence number in the log.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// A deployment as the API shows it: control state plus what its dataflow reports.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    /// The folded control state.
    #[serde(flatten)]
    pub deployment: Deployment,
    /// Per-node counters of its latest dataflow (in this process).
    pub nodes: Vec<NodeSummary>,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Late ticks.
    pub late: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// The graph's watermark, ms of event time.
    pub watermark_ms: Option<u64>,
    /// The watermark as RFC 3339.
    pub watermark: Option<String>,
    /// The newest commit marker in its data directory.
    pub last_checkpoint: Option<CheckpointRef>,
}

/// A committed checkpoint, by id and time.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRef {
    /// Id: event time in ms (`u64::MAX - ...` ids are final checkpoints).
    pub id: u64,
    /// The checkpoint's event time, readable.
    pub time: String,
    /// When it was committed (wall clock).
    pub created_at: String,
}

/// What a dataflow thread tells the supervisor.
enum Notice {
    Started {
        id: u64,
        generation: u64,
        restored_from: Option<u64>,
    },
    Ended {
        id: u64,
        generation: u64,
        result: Result<Box<Summary>, String>,
        /// The run of a cluster lost a peer (see [`EngineError::PeerLost`]).
        peer_lost: bool,
    },
    /// A stopped dataflow did not end within the stop timeout.
    StopTimedOut { id: u64, generation: u64 },
}

/// A dataflow of one deployment: running, or the last one that ran in this process.
struct RunHandle {
    generation: u64,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    plan: Arc<Plan>,
    thread: Option<JoinHandle<()>>,
}

struct Inner {
    /// The event log; none on a follower (see [`ServeCluster`]).
    log: Option<EventLog>,
    events: Vec<LoggedEvent>,
    state: ControlState,
    runs: BTreeMap<u64, RunHandle>,
    generation: u64,
    /// One lock per deployment data directory, held by the dataflow using it: a deployment
    /// continuing another's directory waits for the old dataflow to let go, on its own
    /// thread, never the supervisor's.
    dir_locks: BTreeMap<String, Arc<Mutex<()>>>,
    /// Runs of each deployment ended by a lost peer in a row (a follower: by any failure),
    /// for the pause before the next and (leader) the limit.
    peer_losses: BTreeMap<u64, u32>,
    /// Canaries whose dataflow is stopping for their next rollout step: not relaunched
    /// until the step is recorded.
    stepping: std::collections::BTreeSet<u64>,
    /// The newest keyed diff of each active shadow (for `/metrics` and its alert).
    shadow_stats: BTreeMap<u64, backtest::ShadowDiff>,
}

/// The engine of `tickflow serve`.
pub struct Supervisor {
    config: SupervisorConfig,
    policy: GraphPolicy,
    inner: Mutex<Inner>,
    notices: crossbeam_channel::Sender<Notice>,
    ready: AtomicBool,
    appends: AtomicU64,
    /// Held by the one backtest running.
    backtest_lock: Mutex<()>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.config)
            .finish()
    }
}

impl Supervisor {
    /// Opens the event log in `config.data_dir`, replays it, and restarts every deployment
    /// that was starting, running or paused, each from its newest checkpoint.
    pub fn start(config: SupervisorConfig) -> Result<(Arc<Supervisor>, OpenReport), EngineError> {
        let ctl = |m: String| EngineError::Control(m);
        std::fs::create_dir_all(config.data_dir.join("deployments"))
            .map_err(|e| ctl(format!("{}: {e}", config.data_dir.display())))?;
        let policy = GraphPolicy::confined(
            &config.read_roots,
            config.output_root.as_deref(),
            &config.data_dir,
        )?
        .with_max_nodes(config.max_graph_nodes);
        let follower = config.cluster.as_ref().is_some_and(|c| c.process > 0);
        let (log, report, events) = if follower {
            (None, OpenReport::default(), Vec::new())
        } else {
            let (log, report, events) = read_log(&config.data_dir, config.repair)?;
            (Some(log), report, events)
        };
        let mut state = ControlState::fold(events.iter().map(|e| (e.seq, &e.event)));
        let used = [
            Some(config.data_dir.join("deployments")),
            config.output_root.clone(),
        ];
        state.id_floor = used
            .iter()
            .flatten()
            .map(|d| used_dir_ids(d))
            .max()
            .unwrap_or(0)
            + 1;
        let (tx, rx) = crossbeam_channel::unbounded();
        let sup = Arc::new(Supervisor {
            config,
            policy,
            inner: Mutex::new(Inner {
                log,
                events,
                state,
                runs: BTreeMap::new(),
                generation: 0,
                dir_locks: BTreeMap::new(),
                peer_losses: BTreeMap::new(),
                stepping: Default::default(),
                shadow_stats: BTreeMap::new(),
            }),
            notices: tx,
            ready: AtomicBool::new(false),
            appends: AtomicU64::new(0),
            backtest_lock: Mutex::new(()),
        });
        let weak = Arc::downgrade(&sup);
        std::thread::Builder::new()
            .name("supervisor-notices".into())
            .spawn(move || {
                for notice in rx {
                    let Some(sup) = weak.upgrade() else { break };
                    sup.handle(notice);
                }
            })
            .map_err(EngineError::Thread)?;
        {
            let mut inner = sup.lock();
            let resumed: Vec<u64> = inner
                .state
                .deployments
                .values()
                .filter(|d| d.state.is_active())
                .map(|d| d.id)
                .collect();
            if !resumed.is_empty() {
                tracing::info!("replay: resuming deployment(s) {resumed:?}");
            }
            sup.reconcile(&mut inner);
        }
        if !follower {
            sup.start_rollouts()?;
        }
        sup.ready.store(true, Ordering::SeqCst);
        Ok((sup, report))
    }

    /// Where submitted graphs may read and write files.
    pub fn policy(&self) -> &GraphPolicy {
        &self.policy
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (events are applied only
        // after they are durable), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `command` against the current state; appends its events (fsync'd) and applies
    /// them, or refuses it with nothing appended.
    pub fn execute(
        &self,
        command: &Command,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Vec<LoggedEvent>, CommandError> {
        if let Some(reason) = &reason {
            free_text("reason", reason).map_err(CommandError::Refused)?;
        }
        if let Some(leader) = self.leader() {
            return Err(CommandError::Refused(Refusal::Conflict(format!(
                "this is process {} of a cluster, which follows process 0 ({leader}): send \
                 commands to process 0",
                self.config.cluster.as_ref().map_or(0, |c| c.process)
            ))));
        }
        let mut inner = self.lock();
        let kinds = decide(&inner.state, command).map_err(CommandError::Refused)?;
        self.check_placement(&inner, &kinds)
            .map_err(CommandError::Refused)?;
        let mut appended = Vec::new();
        for kind in kinds {
            let event = Event::new(Utc::now(), actor, reason.clone(), kind);
            appended.push(self.append(&mut inner, event)?);
        }
        if !appended.is_empty() {
            self.reconcile(&mut inner);
        }
        Ok(appended)
    }

    /// What `command` would append now (a deploy's events carry its state plan), or why it
    /// would be refused; nothing is appended.
    pub fn dry_run(&self, command: &Command) -> Result<Vec<EventKind>, CommandError> {
        if self.leader().is_some() {
            return Err(CommandError::Refused(Refusal::Conflict(
                "this process follows process 0: send commands to process 0".into(),
            )));
        }
        let inner = self.lock();
        let kinds = decide(&inner.state, command).map_err(CommandError::Refused)?;
        self.check_placement(&inner, &kinds)
            .map_err(CommandError::Refused)?;
        Ok(kinds)
    }

    fn append(&self, inner: &mut Inner, event: Event) -> Result<LoggedEvent, CommandError> {
        let Some(log) = inner.log.as_mut() else {
            return Err(CommandError::Internal(
                "a follower appends no events".to_string(),
            ));
        };
        let seq = log
            .append(&event.encode())
            .map_err(|e| CommandError::Internal(format!("event log: {e}")))?;
        self.appends.fetch_add(1, Ordering::Relaxed);
        inner.state.apply(seq, &event);
        let logged = LoggedEvent { seq, event };
        inner.events.push(logged.clone());
        Ok(logged)
    }

    /// An event the engine appends on its own; a failure to append is logged (the state it
    /// would record is rebuilt at the next start anyway).
    fn append_system(&self, inner: &mut Inner, reason: Option<String>, kind: EventKind) {
        let event = Event::new(Utc::now(), SYSTEM_ACTOR, reason, kind);
        if let Err(e) = self.append(inner, event) {
            tracing::error!("could not record an engine event: {e}");
        }
    }

    /// Makes the dataflows match the control state.
    fn reconcile(&self, inner: &mut Inner) {
        let stopping: Vec<u64> = inner
            .runs
            .iter()
            .filter(|(id, r)| {
                r.thread.is_some()
                    && !inner
                        .state
                        .deployments
                        .get(id)
                        .is_some_and(|d| d.state.is_active())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stopping {
            if let Some(run) = inner.runs.get_mut(&id) {
                run.live.stop();
                if let Some(t) = run.thread.take() {
                    self.reap(id, run.generation, t);
                }
            }
        }
        let active: Vec<Deployment> = inner
            .state
            .deployments
            .values()
            .filter(|d| d.state.is_active())
            .cloned()
            .collect();
        for d in active {
            if inner.stepping.contains(&d.id) {
                continue;
            }
            let paused = d.state == DeploymentState::Paused;
            match inner.runs.get(&d.id) {
                Some(run) if run.thread.is_some() && paused => run.live.pause(),
                Some(run) if run.thread.is_some() => run.live.resume(),
                _ => {
                    if let Err(error) = self.launch(inner, &d, paused) {
                        tracing::error!("deployment {}: {error}", d.id);
                        let error = error.to_string();
                        self.append_system(
                            inner,
                            None,
                            EventKind::DeploymentFailed { id: d.id, error },
                        );
                    }
                }
            }
        }
    }

    fn handle(&self, notice: Notice) {
        let mut inner = self.lock();
        let (id, generation) = match &notice {
            Notice::Started { id, generation, .. }
            | Notice::Ended { id, generation, .. }
            | Notice::StopTimedOut { id, generation } => (*id, *generation),
        };
        if inner
            .runs
            .get(&id)
            .is_none_or(|r| r.generation != generation)
        {
            return;
        }
        let active = inner
            .state
            .deployments
            .get(&id)
            .is_some_and(|d| d.state.is_active());
        match notice {
            Notice::Started { .. } | Notice::StopTimedOut { .. } if self.leader().is_some() => {}
            Notice::Started { restored_from, .. } if active => {
                let reason = restored_from.map(|c| {
                    format!(
                        "resumed from checkpoint {c} ({})",
                        crate::checkpoint::final_label(c)
                    )
                });
                self.append_system(
                    &mut inner,
                    reason,
                    EventKind::DeploymentStarted { id, restored_from },
                );
            }
            Notice::Started { .. } => {}
            Notice::StopTimedOut { .. } => {
                let error = format!(
                    "its dataflow did not stop within {} s",
                    self.config.stop_timeout.as_secs()
                );
                tracing::error!("deployment {id}: {error}");
                self.append_system(&mut inner, None, EventKind::DeploymentFailed { id, error });
            }
            Notice::Ended {
                result, peer_lost, ..
            } => {
                if let Some(run) = inner.runs.get_mut(&id) {
                    if let Some(t) = run.thread.take() {
                        let _ = t.join();
                    }
                }
                if self.leader().is_some() {
                    // A follower records nothing. It starts its share again at its next poll
                    // while the deployment is active (after a pause that grows with failures
                    // in a row): if the leader is finishing, that waits for a peer until the
                    // leader's `deployment_finished` stops it; if the leader restarted the
                    // deployment, that rejoins it.
                    match &result {
                        Err(error) => {
                            tracing::warn!("deployment {id}: this process's share ended: {error}");
                            *inner.peer_losses.entry(id).or_default() += 1;
                        }
                        Ok(_) => {
                            inner.peer_losses.remove(&id);
                        }
                    }
                    return;
                }
                if peer_lost && active {
                    self.peer_lost(&mut inner, id, result.err().unwrap_or_default());
                    return;
                }
                inner.peer_losses.remove(&id);
                // Stopped on purpose while still active (a canary moving to its next step): an
                // error on the way out is not a failure of the deployment.
                let stopping = inner.runs.get(&id).is_some_and(|r| r.live.is_stopping());
                match result {
                    Err(error) if active && stopping => {
                        tracing::info!("deployment {id}: stopped for a restart ({error})");
                    }
                    Ok(summary)
                        if active && !summary.stopped && self.rollout_finished(&mut inner, id) => {}
                    Ok(summary) if active && !summary.stopped => {
                        tracing::info!("deployment {id}: finished");
                        self.append_system(&mut inner, None, EventKind::DeploymentFinished { id });
                    }
                    Err(error) if active && self.rollout_failed(&mut inner, id, &error) => {
                        tracing::error!("deployment {id}: canary failed: {error}");
                    }
                    Err(error) if active => {
                        tracing::error!("deployment {id}: failed: {error}");
                        self.append_system(
                            &mut inner,
                            None,
                            EventKind::DeploymentFailed { id, error },
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    fn deployment_dir(&self, d: &Deployment) -> PathBuf {
        self.config.data_dir.join("deployments").join(&d.state_dir)
    }

    /// The newest readable commit marker in `d`'s data directory (this process's share).
    fn newest_checkpoint(&self, d: &Deployment) -> Option<crate::checkpoint::Manifest> {
        let dir = self.own_dir(self.deployment_dir(d));
        list_markers(&dir)
            .ok()
            .and_then(|m| m.into_iter().find_map(|m| m.manifest.ok()))
    }

    /// Whether replay is done and every deployment that should run has started.
    pub fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::SeqCst) {
            return false;
        }
        let inner = self.lock();
        !inner
            .state
            .deployments
            .values()
            .any(|d| d.state == DeploymentState::Starting)
    }

    /// The control state now.
    pub fn state(&self) -> ControlState {
        self.lock().state.clone()
    }

    /// The control state as it was at `at`: the log folded up to that time.
    pub fn state_at(&self, at: DateTime<Utc>) -> ControlState {
        let inner = self.lock();
        ControlState::fold(
            inner
                .events
                .iter()
                .take_while(|e| e.event.time <= at)
                .map(|e| (e.seq, &e.event)),
        )
    }

    /// Events after sequence number `after`, at most `limit`.
    pub fn events(&self, after: u64, limit: usize) -> Vec<LoggedEvent> {
        let inner = self.lock();
        inner
            .events
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Events appended by this process.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// One deployment with its counters, watermark and newest checkpoint.
    pub fn deployment(&self, id: u64) -> Option<DeploymentStatus> {
        let (deployment, run) = {
            let inner = self.lock();
            let d = inner.state.deployments.get(&id)?.clone();
            let run = inner
                .runs
                .get(&id)
                .map(|r| (Arc::clone(&r.plan), Arc::clone(&r.metrics)));
            (d, run)
        };
        let last_checkpoint = self.newest_checkpoint(&deployment).map(|m| CheckpointRef {
            id: m.id,
            time: m.time_label(),
            created_at: m.created_at.clone(),
        });
        let summary = run.map(|(plan, metrics)| {
            let watermark = metrics.watermark_ms();
            (
                Summary::of(&plan, self.config.workers, &metrics, 0.0),
                watermark,
            )
        });
        let (nodes, dead_letters, late, duplicates, watermark_ms) = match summary {
            Some((s, w)) => (s.nodes, s.dead_letters, s.late, s.duplicates, w),
            None => Default::default(),
        };
        Some(DeploymentStatus {
            deployment,
            nodes,
            dead_letters,
            late,
            duplicates,
            watermark: watermark_ms
                .filter(|w| *w < u64::MAX)
                .and_then(|w| DateTime::<Utc>::from_timestamp_millis(w as i64))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            watermark_ms: watermark_ms.filter(|w| *w < u64::MAX),
            last_checkpoint,
        })
    }

    /// The latest dataflow counters in this process of every deployment that is active or
    /// ended less than the metrics grace period ago, for `/metrics` (series of deployments
    /// that ended before disappear).
    pub fn metrics(&self) -> Vec<(Deployment, Arc<Metrics>)> {
        let inner = self.lock();
        let grace =
            chrono::Duration::from_std(self.config.metrics_grace).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        inner
            .runs
            .iter()
            .filter_map(|(id, r)| {
                let d = inner.state.deployments.get(id)?;
                let shown = d.state.is_active() || now - d.updated_at < grace;
                shown.then(|| (d.clone(), Arc::clone(&r.metrics)))
            })
            .collect()
    }

    /// The latest record of `key` in projection sink `sink` of deployment `id`: from the
    /// running dataflow's view, or else from its newest checkpoint. `Ok(None)`: no such key;
    /// `Err`: no such deployment or sink.
    pub fn view(&self, id: u64, sink: &str, key: &str) -> Result<Option<String>, Refusal> {
        let (deployment, live, plan_sinks) =
            {
                let inner = self.lock();
                let d =
                    inner.state.deployments.get(&id).cloned().ok_or_else(|| {
                        Refusal::NotFound(format!("deployment {id} does not exist"))
                    })?;
                let version = inner.state.graph_version(&d.graph, d.version);
                let sinks: Vec<String> = version
                    .and_then(|v| v.plan.get("sinks").and_then(|s| s.as_array()).cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter(|s| s.get("type").and_then(|t| t.as_str()) == Some("projection"))
                    .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(String::from))
                    .collect();
                let live = inner.runs.get(&id).map(|r| Arc::clone(&r.live));
                (d, live, sinks)
            };
        if !plan_sinks.iter().any(|s| s == sink) {
            return Err(Refusal::NotFound(format!(
                "deployment {id} has no projection sink `{sink}` (projection sinks: {})",
                if plan_sinks.is_empty() {
                    "none".to_string()
                } else {
                    plan_sinks.join(", ")
                }
            )));
        }
        if let Some(view) = live.and_then(|l| l.view(sink)) {
            return Ok(view.get(key));
        }
        stored_view(&self.own_dir(self.deployment_dir(&deployment)), sink, key)
            .map_err(|e| Refusal::Invalid(format!("deployment {id}: {e}")))
    }

    /// Keys of a projection view (count and the first `limit`), from the running dataflow.
    pub fn view_keys(&self, id: u64, sink: &str, limit: usize) -> Option<(usize, Vec<String>)> {
        let inner = self.lock();
        let live = inner.runs.get(&id)?;
        live.live.view(sink).map(|v| v.keys(limit))
    }

    /// Stops every dataflow (each keeps its newest checkpoint; nothing is appended, so a
    /// restart resumes them).
    pub fn shutdown(&self) {
        let threads: Vec<(u64, JoinHandle<()>)> = {
            let mut inner = self.lock();
            inner
                .runs
                .iter_mut()
                .filter_map(|(id, run)| {
                    run.live.stop();
                    run.thread.take().map(|t| (*id, t))
                })
                .collect()
        };
        let deadline = std::time::Instant::now() + self.config.stop_timeout;
        for (id, t) in threads {
            if !join_by(t, deadline) {
                tracing::error!(
                    "deployment {id}: its dataflow did not stop within {} s; exiting anyway",
                    self.config.stop_timeout.as_secs()
                );
            }
        }
    }
}

/// Longest reason or other free text recorded on an event.
pub const MAX_TEXT_LEN: usize = 2_000;

/// Checks free text that goes into the audit trail (a reason): any printable text up to
/// [`MAX_TEXT_LEN`] characters, no control characters (no newline to forge a line with, no
/// terminal escape).
pub fn free_text(what: &str, text: &str) -> Result<(), Refusal> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(Refusal::Invalid(format!(
            "{what} must not contain control characters (found {:?})",
            c
        )));
    }
    if text.chars().count() > MAX_TEXT_LEN {
        return Err(Refusal::Invalid(format!(
            "{what} is longer than {MAX_TEXT_LEN} characters"
        )));
    }
    Ok(())
}

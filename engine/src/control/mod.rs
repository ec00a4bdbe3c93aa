//! The control plane's state: a pure fold over the event log, and the rules that turn a
//! command into events or a refusal.
//!
//! [`ControlState::apply`] is the only way state changes, at replay and live alike: the
//! supervisor appends the events [`decide`] returns, then applies them. `decide` never touches
//! the disk or the clock; what it needs (time, actor, the compiled graph) comes in the command.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tickflow_state::events::{Event, EventKind};

use crate::render::route::{ShareStep, ALL_KEYS};

mod rollout;

pub use rollout::{
    rollout_promote, rollout_rollback, CanaryChecks, CanaryConfig, CanaryRequest, CanarySettings,
    CheckResult, Rollout, RolloutState, ShadowConfig, ShadowWatch,
};
use rollout::{shadow, start_canary};

/// A deployment's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Asked for; its dataflow is being built or restored.
    Starting,
    /// Processing.
    Running,
    /// Sources hold; nothing is read.
    Paused,
    /// The dataflow failed.
    Failed,
    /// Stopped by a command (or replaced by a newer deployment).
    Stopped,
    /// Stopped by a rollback, replaced by a deployment of the previous version.
    RolledBack,
    /// Bounded input fully processed.
    Finished,
}

impl DeploymentState {
    /// Whether a dataflow should exist for it.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DeploymentState::Starting | DeploymentState::Running | DeploymentState::Paused
        )
    }

    /// The name used in the API and in refusals.
    pub fn name(self) -> &'static str {
        match self {
            DeploymentState::Starting => "starting",
            DeploymentState::Running => "running",
            DeploymentState::Paused => "paused",
            DeploymentState::Failed => "failed",
            DeploymentState::Stopped => "stopped",
            DeploymentState::RolledBack => "rolled_back",
            DeploymentState::Finished => "finished",
        }
    }
}

/// One submitted graph version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphVersion {
    /// Graph name.
    pub name: String,
    /// Version.
    pub version: i64,
    /// SHA-256 of the TOML, hex.
    pub sha256: String,
    /// What its state depends on (see [`crate::Plan::state_fingerprint`]).
    pub state_fingerprint: String,
    /// The TOML text.
    pub toml: String,
    /// The compiled plan's nodes.
    pub plan: serde_json::Value,
    /// Who submitted it.
    pub submitted_by: String,
    /// When.
    pub submitted_at: DateTime<Utc>,
}

/// One deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Id, from 1.
    pub id: u64,
    /// Graph name.
    pub graph: String,
    /// Graph version.
    pub version: i64,
    /// Lifecycle state.
    pub state: DeploymentState,
    /// Data directory name under `deployments/`.
    pub state_dir: String,
    /// The deployment whose checkpoints it continued from.
    pub continues: Option<u64>,
    /// The deployment it replaced by a rollback.
    pub rollback_of: Option<u64>,
    /// The production deployment it shadows (see [`Strategy::Shadow`]).
    #[serde(default)]
    pub shadow_of: Option<u64>,
    /// Its canary rollout (see [`Strategy::Canary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// A shadow's alert settings and whether it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<ShadowWatch>,
    /// Whether its dataflow was built at least once.
    pub started: bool,
    /// The checkpoint its latest start resumed from.
    pub restored_from: Option<u64>,
    /// The failure, once failed.
    pub error: Option<String>,
    /// Who asked for it.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Time of the latest event about it.
    pub updated_at: DateTime<Utc>,
}

/// Everything the event log says, folded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// Graph versions by name, then version.
    pub graphs: BTreeMap<String, BTreeMap<i64, GraphVersion>>,
    /// Deployments by id.
    pub deployments: BTreeMap<u64, Deployment>,
    /// Sequence number of the last event applied.
    pub last_seq: u64,
    /// The least id a new deployment may take, whatever the log says: set by the engine
    /// from the deployment directories on disk, so that ids and directories are never
    /// reused, even after a repair cut events from the log. Not part of the fold.
    #[serde(skip)]
    pub id_floor: u64,
}

impl ControlState {
    /// Folds `events` (in log order, with their sequence numbers) into a state.
    pub fn fold<'a>(events: impl IntoIterator<Item = (u64, &'a Event)>) -> ControlState {
        let mut state = ControlState::default();
        for (seq, event) in events {
            state.apply(seq, event);
        }
        state
    }

    /// Applies one event. Events that do not fit (a deployment that does not exist) change
    /// nothing: [`decide`] never produces them, and replay must not fail on an old log.
    pub fn apply(&mut self, seq: u64, event: &Event) {
        self.last_seq = seq;
        let now = event.time;
        if let EventKind::GraphSubmitted {
            name,
            version,
            sha256,
            toml,
            state_fingerprint,
            plan,
        } = &event.kind
        {
            self.graphs.entry(name.clone()).or_default().insert(
                *version,
                GraphVersion {
                    name: name.clone(),
                    version: *version,
                    sha256: sha256.clone(),
                    state_fingerprint: state_fingerprint.clone(),
                    toml: toml.clone(),
                    plan: plan.clone(),
                    submitted_by: event.actor.clone(),
                    submitted_at: now,
                },
            );
            return;
        }
        if let EventKind::DeploymentRequested {
            id,
            graph,
            version,
            state_dir,
            continues,
            rollback_of,
            shadow_of,
            canary,
            watch,
            ..
        } = &event.kind
        {
            let watch = watch
                .as_ref()
                .and_then(|w| serde_json::from_value::<ShadowConfig>(w.clone()).ok())
                .map(|config| ShadowWatch {
                    config,
                    crossed: None,
                });
            let rollout = canary
                .as_ref()
                .and_then(|c| serde_json::from_value::<CanaryRequest>(c.clone()).ok())
                .map(|c| Rollout::new(c, now));
            self.deployments.insert(
                *id,
                Deployment {
                    id: *id,
                    graph: graph.clone(),
                    version: *version,
                    state: DeploymentState::Starting,
                    state_dir: state_dir.clone(),
                    continues: *continues,
                    rollback_of: *rollback_of,
                    shadow_of: *shadow_of,
                    rollout,
                    watch,
                    started: false,
                    restored_from: None,
                    error: None,
                    requested_by: event.actor.clone(),
                    requested_at: now,
                    updated_at: now,
                },
            );
            return;
        }
        let Some(d) = event
            .deployment()
            .and_then(|id| self.deployments.get_mut(&id))
        else {
            return;
        };
        d.updated_at = now;
        match &event.kind {
            EventKind::DeploymentStarted { restored_from, .. } => {
                d.started = true;
                d.restored_from = *restored_from;
                if d.state == DeploymentState::Starting {
                    d.state = DeploymentState::Running;
                }
            }
            EventKind::DeploymentPaused { .. } => d.state = DeploymentState::Paused,
            EventKind::DeploymentResumed { .. } => {
                d.state = if d.started {
                    DeploymentState::Running
                } else {
                    DeploymentState::Starting
                }
            }
            EventKind::DeploymentStopped { .. } => d.state = DeploymentState::Stopped,
            EventKind::DeploymentRolledBack { .. } => d.state = DeploymentState::RolledBack,
            EventKind::DeploymentFailed { error, .. } => {
                d.state = DeploymentState::Failed;
                d.error = Some(error.clone());
            }
            EventKind::DeploymentFinished { .. } => d.state = DeploymentState::Finished,
            EventKind::GraphSubmitted { .. } | EventKind::DeploymentRequested { .. } => {}
            EventKind::RolloutStepStarted {
                step,
                share_pct,
                from_ms,
                checks,
                ..
            } => {
                if let Some(r) = d.rollout.as_mut() {
                    r.step = *step;
                    r.share_pct = *share_pct;
                    r.schedule.push(ShareStep {
                        from_ms: *from_ms,
                        share: share_pct * (ALL_KEYS / 100),
                    });
                    r.step_started_at = now;
                    r.checks = serde_json::from_value(checks.clone()).unwrap_or_default();
                }
            }
            EventKind::ShadowThresholdCrossed {
                sink, divergence, ..
            } => {
                if let Some(w) = d.watch.as_mut() {
                    w.crossed = Some((sink.clone(), *divergence));
                }
            }
            EventKind::RolloutPaused { .. } => {
                if let Some(r) = d.rollout.as_mut() {
                    r.state = RolloutState::Paused;
                }
            }
            EventKind::RolloutResumed { .. } => {
                if let Some(r) = d.rollout.as_mut() {
                    r.state = RolloutState::Running;
                    // The step's time starts again.
                    r.step_started_at = now;
                }
            }
            EventKind::RolloutPromoted { to, checks, .. } => {
                d.state = DeploymentState::Stopped;
                if let Some(r) = d.rollout.as_mut() {
                    r.state = RolloutState::Promoted;
                    r.replaced_by = Some(*to);
                    r.checks = serde_json::from_value(checks.clone()).unwrap_or_default();
                }
            }
            EventKind::RolloutRolledBack { to, checks, .. } => {
                d.state = DeploymentState::RolledBack;
                if let Some(r) = d.rollout.as_mut() {
                    r.state = RolloutState::RolledBack;
                    r.replaced_by = Some(*to);
                    r.checks = serde_json::from_value(checks.clone()).unwrap_or_default();
                }
            }
        }
    }

    /// A graph version.
    pub fn graph_version(&self, name: &str, version: i64) -> Option<&GraphVersion> {
        self.graphs.get(name).and_then(|v| v.get(&version))
    }

    /// The id the next deployment gets.
    pub fn next_deployment_id(&self) -> u64 {
        self.deployments
            .keys()
            .next_back()
            .map_or(1, |id| id + 1)
            .max(self.id_floor)
    }
}

/// What a client asks the control plane to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Record a compiled graph version.
    Submit {
        /// Name.
        name: String,
        /// Version.
        version: i64,
        /// SHA-256 of `toml`.
        sha256: String,
        /// The TOML text.
        toml: String,
        /// The compiled plan's state fingerprint.
        state_fingerprint: String,
        /// The compiled plan's nodes.
        plan: serde_json::Value,
    },
    /// Deploy a version, replacing the graph's active deployment.
    Deploy {
        /// Graph name.
        graph: String,
        /// Version.
        version: i64,
        /// Deploy even if the state plan drops state (see [`crate::state_plan`]).
        allow_state_loss: bool,
        /// How the version goes live.
        strategy: Strategy,
        /// The canary's settings (with [`Strategy::Canary`]); unset ones from the version's
        /// `[rollout]` table, then the defaults.
        canary: Option<CanarySettings>,
        /// A shadow's alert (with [`Strategy::Shadow`]).
        shadow: Option<ShadowConfig>,
    },
    /// Hold the sources.
    Pause(u64),
    /// Read again.
    Resume(u64),
    /// Stop for good.
    Stop(u64),
    /// Stop and go back to the previous deployed version (a canary: to the version it rolls
    /// out over).
    Rollback(u64),
    /// Hold a canary rollout at its step.
    PauseRollout(u64),
    /// Let a held canary rollout go on.
    ResumeRollout(u64),
}

/// How a deployed version goes live.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Replace the graph's active deployment at once (continuing its state per the plan).
    #[default]
    Replace,
    /// Run beside the active deployment on the same input, outputs redirected to the
    /// shadow's own files, for a keyed diff of the two; promote it by deploying its version
    /// with `replace`, discard it by stopping it.
    Shadow,
    /// Run both versions in one dataflow on the same input and move keys to the new version
    /// step by step (see [`CanaryConfig`]), checking each step; promoted after the last step,
    /// rolled back at the first failed check.
    Canary,
    /// A canary with one step: the new version runs beside production (owning no key) for a
    /// step length, its checks are the smoke test, then it takes every key at once; after
    /// another step length with passing checks it is promoted, and until then a rollback
    /// switches back.
    BlueGreen,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The deployment or graph named does not exist (404).
    NotFound(String),
    /// The command conflicts with the current state (409).
    Conflict(String),
    /// The command names something invalid (422).
    Invalid(String),
}

impl Refusal {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Refusal::NotFound(m) | Refusal::Conflict(m) | Refusal::Invalid(m) => m,
        }
    }
}

/// The events `command` leads to in `state` (empty: nothing to do, as for a resubmitted
/// identical graph version), or why it is refused.
pub fn decide(state: &ControlState, command: &Command) -> Result<Vec<EventKind>, Refusal> {
    let deployment = |id: u64| {
        state
            .deployments
            .get(&id)
            .ok_or_else(|| Refusal::NotFound(format!("deployment {id} does not exist")))
    };
    let conflict = |d: &Deployment, what: &str, allowed: &str| {
        Refusal::Conflict(format!(
            "cannot {what} deployment {} in state {}: only a {allowed} deployment can be {what}d",
            d.id,
            d.state.name(),
        ))
    };
    match command {
        Command::Submit {
            name,
            version,
            sha256,
            toml,
            state_fingerprint,
            plan,
        } => match state.graph_version(name, *version) {
            Some(existing) if existing.sha256 == *sha256 => Ok(Vec::new()),
            Some(existing) => Err(Refusal::Conflict(format!(
                "graph `{name}` version {version} already exists with another definition \
                 (sha256 {}); submit it as a new version",
                &existing.sha256[..existing.sha256.len().min(12)]
            ))),
            None => Ok(vec![EventKind::GraphSubmitted {
                name: name.clone(),
                version: *version,
                sha256: sha256.clone(),
                toml: toml.clone(),
                state_fingerprint: state_fingerprint.clone(),
                plan: plan.clone(),
            }]),
        },
        Command::Deploy {
            graph,
            version,
            allow_state_loss,
            strategy,
            canary,
            shadow: watch,
        } => {
            let Some(target) = state.graph_version(graph, *version) else {
                return Err(Refusal::Invalid(match state.graphs.get(graph) {
                    None => format!("graph `{graph}` was never submitted"),
                    Some(v) => format!(
                        "graph `{graph}` has no version {version} (submitted: {})",
                        v.keys()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }));
            };
            let id = state.next_deployment_id();
            // A shadow runs beside production, of any version (the same one included).
            if *strategy == Strategy::Shadow {
                return shadow(state, id, target, watch.as_ref());
            } else if watch.is_some() {
                return Err(Refusal::Invalid(
                    "`shadow` settings go with \"strategy\": \"shadow\"".into(),
                ));
            }
            if matches!(strategy, Strategy::Canary | Strategy::BlueGreen) {
                let graph_settings = CanarySettings::of_graph(&target.toml)
                    .map_err(|e| Refusal::Invalid(format!("graph `{graph}` v{version}: {e}")))?;
                let mut config = canary.clone().unwrap_or_default().over(&graph_settings);
                if *strategy == Strategy::BlueGreen {
                    config.steps = vec![100];
                }
                let how = (*strategy, *allow_state_loss);
                return start_canary(state, id, target, config, how);
            } else if canary.is_some() {
                return Err(Refusal::Invalid(
                    "`canary` settings go with \"strategy\": \"canary\" or \"blue_green\"".into(),
                ));
            }
            if let Some(d) =
                active_of(state, graph).find(|d| d.version == *version && d.shadow_of.is_none())
            {
                return Err(Refusal::Conflict(format!(
                    "graph `{graph}` version {version} is already deployed as deployment {} \
                     ({})",
                    d.id,
                    d.state.name()
                )));
            }
            let mut events: Vec<EventKind> = active_of(state, graph)
                .map(|d| EventKind::DeploymentStopped { id: d.id })
                .collect();
            // Continue from the newest deployment of this graph that ran, with what the state
            // plan keeps; a deploy that drops state must say it accepts that.
            let previous = state
                .deployments
                .values()
                .rev()
                .find(|d| d.graph == *graph && d.started && d.shadow_of.is_none());
            if let Some((from, plan)) =
                previous.and_then(|p| Some((p, state_plan(state, p, target)?)))
            {
                if plan.drops_state && !allow_state_loss {
                    return Err(Refusal::Conflict(format!(
                        "deploying `{graph}` v{version} over deployment {} (v{}) drops state: \
                         {}; deploy with \"allow_state_loss\": true to accept that, or see \
                         it first with ?dry_run=true",
                        from.id,
                        from.version,
                        plan.lines().join("; ")
                    )));
                }
            }
            events.push(requested(state, id, target, previous, None));
            Ok(events)
        }
        Command::Pause(id) => {
            let d = deployment(*id)?;
            match d.state {
                DeploymentState::Starting | DeploymentState::Running => {
                    Ok(vec![EventKind::DeploymentPaused { id: *id }])
                }
                _ => Err(conflict(d, "pause", "starting or running")),
            }
        }
        Command::Resume(id) => {
            let d = deployment(*id)?;
            match d.state {
                DeploymentState::Paused => Ok(vec![EventKind::DeploymentResumed { id: *id }]),
                _ => Err(conflict(d, "resume", "paused")),
            }
        }
        Command::Stop(id) => {
            let d = deployment(*id)?;
            if d.state.is_active() {
                Ok(vec![EventKind::DeploymentStopped { id: *id }])
            } else {
                Err(conflict(d, "stop", "starting, running or paused"))
            }
        }
        Command::PauseRollout(id) | Command::ResumeRollout(id) => {
            let d = deployment(*id)?;
            let pause = matches!(command, Command::PauseRollout(_));
            let (want, what) = if pause {
                (RolloutState::Running, "pause")
            } else {
                (RolloutState::Paused, "resume")
            };
            match d.rollout.as_ref() {
                Some(r) if r.state == want && d.state.is_active() => Ok(vec![if pause {
                    EventKind::RolloutPaused { id: *id }
                } else {
                    EventKind::RolloutResumed { id: *id }
                }]),
                Some(r) => Err(Refusal::Conflict(format!(
                    "cannot {what} the rollout of deployment {id}: it is {}",
                    serde_json::to_value(r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ))),
                None => Err(Refusal::Conflict(format!(
                    "deployment {id} is not a canary rollout"
                ))),
            }
        }
        Command::Rollback(id) => {
            let d = deployment(*id)?;
            if d.rollout.as_ref().is_some_and(|r| r.is_open()) && d.state.is_active() {
                return Ok(rollout_rollback(state, d, Vec::new()));
            }
            if !d.state.is_active() {
                return Err(Refusal::Conflict(format!(
                    "cannot roll back deployment {id} in state {}: only a starting, running or \
                     paused deployment can be rolled back",
                    d.state.name()
                )));
            }
            // The newest earlier deployment of the same graph with another version that ran
            // and was not itself rolled back (a rolled-back version is known bad).
            let Some(previous) = state
                .deployments
                .range(..*id)
                .rev()
                .map(|(_, p)| p)
                .find(|p| {
                    p.graph == d.graph
                        && p.version != d.version
                        && p.started
                        && p.state != DeploymentState::RolledBack
                })
            else {
                return Err(Refusal::Conflict(format!(
                    "cannot roll back deployment {id}: graph `{}` has no earlier deployed version",
                    d.graph
                )));
            };
            let Some(target) = state.graph_version(&previous.graph, previous.version) else {
                return Err(Refusal::Invalid(format!(
                    "graph `{}` version {} is not in the log",
                    previous.graph, previous.version
                )));
            };
            let to = state.next_deployment_id();
            // State-compatible: continue from the current deployment; otherwise from the
            // previous version's own newest checkpoint.
            let current_fits = state
                .graph_version(&d.graph, d.version)
                .is_some_and(|v| v.state_fingerprint == target.state_fingerprint);
            let from = if current_fits { d } else { previous };
            Ok(vec![
                EventKind::DeploymentRolledBack { id: *id, to },
                requested(state, to, target, Some(from), Some(*id)),
            ])
        }
    }
}

/// The active deployments of `graph`.
fn active_of<'a>(state: &'a ControlState, graph: &'a str) -> impl Iterator<Item = &'a Deployment> {
    state
        .deployments
        .values()
        .filter(move |d| d.graph == graph && d.state.is_active())
}

/// What deploying `target` over `from` does with `from`'s state, part by part, when both
/// versions' compiled plans list their stateful parts (logs from before they did: `None`).
pub fn state_plan(
    state: &ControlState,
    from: &Deployment,
    target: &GraphVersion,
) -> Option<crate::state_plan::StatePlan> {
    type Parts = std::collections::BTreeMap<String, crate::state_plan::StatePart>;
    let parts = |v: &GraphVersion| -> Option<Parts> {
        serde_json::from_value(v.plan.get("state_parts")?.clone()).ok()
    };
    let old = parts(state.graph_version(&from.graph, from.version)?)?;
    let new = parts(target)?;
    (!old.is_empty() && !new.is_empty()).then(|| crate::state_plan::StatePlan::between(&old, &new))
}

/// A deployment request for `target`: on `from`'s data directory when its version's state fits
/// `target` (the same state fingerprint, or a state plan that keeps every source), else on a
/// new one.
fn requested(
    state: &ControlState,
    id: u64,
    target: &GraphVersion,
    from: Option<&Deployment>,
    rollback_of: Option<u64>,
) -> EventKind {
    let plan = from.and_then(|f| state_plan(state, f, target));
    let same_state = from.is_some_and(|f| {
        state
            .graph_version(&f.graph, f.version)
            .is_some_and(|v| v.state_fingerprint == target.state_fingerprint)
    });
    let fits = from.filter(|_| same_state || plan.as_ref().is_some_and(|p| p.continues));
    // Recorded unless every part is kept (the audit trail says what a deploy did to state).
    let state_plan = plan
        .filter(|p| {
            !p.continues
                || p.parts
                    .iter()
                    .any(|x| x.fate != crate::state_plan::Fate::Kept)
        })
        .and_then(|p| serde_json::to_value(p).ok());
    EventKind::DeploymentRequested {
        id,
        graph: target.name.clone(),
        version: target.version,
        state_dir: fits.map_or_else(|| format!("d{id}"), |f| f.state_dir.clone()),
        continues: fits.map(|f| f.id),
        rollback_of,
        state_plan,
        shadow_of: None,
        canary: None,
        watch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(name: &str, version: i64, fp: &str) -> Command {
        Command::Submit {
            name: name.into(),
            version,
            sha256: format!("{name}{version}{fp}"),
            toml: String::new(),
            state_fingerprint: fp.into(),
            plan: serde_json::Value::Null,
        }
    }

    fn deploy(version: i64) -> Command {
        Command::Deploy {
            graph: "g".into(),
            version,
            allow_state_loss: false,
            strategy: Strategy::Replace,
            canary: None,
            shadow: None,
        }
    }

    fn run(state: &mut ControlState, command: Command) -> Result<Vec<EventKind>, Refusal> {
        let kinds = decide(state, &command)?;
        for kind in &kinds {
            let e = Event::new(Utc::now(), "t", None, kind.clone());
            state.apply(state.last_seq + 1, &e);
        }
        Ok(kinds)
    }

    fn start(state: &mut ControlState, id: u64) {
        let e = Event::new(
            Utc::now(),
            "system",
            None,
            EventKind::DeploymentStarted {
                id,
                restored_from: None,
            },
        );
        state.apply(state.last_seq + 1, &e);
    }

    #[test]
    fn rollback_continues_from_the_current_state_only_when_it_fits() {
        let mut s = ControlState::default();
        run(&mut s, submit("g", 1, "A")).unwrap();
        run(&mut s, submit("g", 2, "A")).unwrap();
        run(&mut s, submit("g", 3, "B")).unwrap();
        run(&mut s, deploy(1)).unwrap();
        start(&mut s, 1);
        // v2 fits v1's state: continues on d1's directory; d1 is stopped.
        run(&mut s, deploy(2)).unwrap();
        start(&mut s, 2);
        assert_eq!(s.deployments[&1].state, DeploymentState::Stopped);
        assert_eq!(s.deployments[&2].state_dir, "d1");
        assert_eq!(s.deployments[&2].continues, Some(1));
        // v3 does not fit: a directory of its own.
        run(&mut s, deploy(3)).unwrap();
        start(&mut s, 3);
        assert_eq!(s.deployments[&3].state_dir, "d3");
        // Rolling v3 back to v2: incompatible, so v2's own directory.
        let ev = run(&mut s, Command::Rollback(3)).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(s.deployments[&3].state, DeploymentState::RolledBack);
        let d4 = &s.deployments[&4];
        assert_eq!(
            (d4.version, d4.state_dir.as_str(), d4.rollback_of),
            (2, "d1", Some(3))
        );
        start(&mut s, 4);
        // Rolling v2 (d4) back to v1: compatible, continues from d4's own directory.
        run(&mut s, Command::Rollback(4)).unwrap();
        let d5 = &s.deployments[&5];
        assert_eq!((d5.version, d5.continues), (1, Some(4)));
    }

    #[test]
    fn illegal_commands_are_refused() {
        let mut s = ControlState::default();
        run(&mut s, submit("g", 1, "A")).unwrap();
        assert!(matches!(decide(&s, &deploy(9)), Err(Refusal::Invalid(_))));
        assert!(matches!(
            decide(&s, &Command::Pause(1)),
            Err(Refusal::NotFound(_))
        ));
        run(&mut s, deploy(1)).unwrap();
        start(&mut s, 1);
        assert!(matches!(
            decide(&s, &Command::Resume(1)),
            Err(Refusal::Conflict(_))
        ));
        assert!(matches!(
            decide(&s, &Command::Rollback(1)),
            Err(Refusal::Conflict(_))
        ));
        assert!(matches!(decide(&s, &deploy(1)), Err(Refusal::Conflict(_))));
        assert_eq!(decide(&s, &submit("g", 1, "A")), Ok(Vec::new()));
        assert!(matches!(
            decide(&s, &submit("g", 1, "Z")),
            Err(Refusal::Conflict(_))
        ));
    }
}

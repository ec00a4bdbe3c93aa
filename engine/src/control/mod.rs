//! The control plane's state: a pure fold over the event log (here), and the rules that turn a
//! command into events or a refusal (`decide.rs`; rollouts other than a replace in
//! `rollout.rs`).
//!
//! [`ControlState::apply`] is the only way state changes, at replay and live alike: the
//! supervisor appends the events [`decide`] returns, then applies them. `decide` never touches
//! the disk or the clock; what it needs (time, actor, the compiled graph) comes in the command.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tickflow_state::events::{Event, EventKind};

use crate::render::route::{ShareStep, ALL_KEYS};

mod decide;
mod rollout;

use decide::active_of;
pub use decide::{decide, state_plan, Command, Refusal};

pub use rollout::{
    rollout_promote, rollout_rollback, CanaryChecks, CanaryConfig, CanaryRequest, CanarySettings,
    CheckResult, Rollout, RolloutState, ShadowConfig, ShadowWatch,
};

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

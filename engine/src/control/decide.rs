//! The rules that turn a command into events or a refusal ([`decide`]): pure, never
//! touching the disk or the clock; what it needs (time, actor, the compiled graph) comes in
//! the command.

use tickflow_state::events::EventKind;

use super::rollout::{shadow, start_canary};
use super::*;

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
pub(super) fn active_of<'a>(
    state: &'a ControlState,
    graph: &'a str,
) -> impl Iterator<Item = &'a Deployment> {
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

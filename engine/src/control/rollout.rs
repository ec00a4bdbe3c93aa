//! Rollouts that are not a plain replace: a shadow beside production (with its alert), and a
//! canary or blue-green over it (settings, the rollout folded from its events, its checks, and
//! the events that start, promote and roll it back).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tickflow_state::events::EventKind;

use super::{
    active_of, state_plan, ControlState, Deployment, DeploymentState, GraphVersion, Refusal,
    Strategy,
};
use crate::render::route::ShareStep;
use crate::RuleError;

/// A canary rollout's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Percent of the keys (instruments, by a stable hash) the new version owns at each step,
    /// ascending, the last 100; default 10, 25, 50, 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// How long (wall clock) the new version runs before its first step, and each step before
    /// the next: "30s", "5m"; default "60s".
    #[serde(default = "default_step_length")]
    pub step_length: String,
    /// The checks run before every step and after the last.
    #[serde(default)]
    pub checks: CanaryChecks,
}

/// Thresholds on the new version's domain metrics, measured over everything it processed
/// (it processes the whole input from the start; only its share of the production output
/// grows). Unset: the current version's own rate plus 0.01.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryChecks {
    /// Most dead letters per record read.
    pub max_dead_letter_rate: Option<f64>,
    /// Most late ticks per record read.
    pub max_late_rate: Option<f64>,
    /// Most bars (of those both versions made, or one made once both are past the window)
    /// that differ from the current version's, per bar compared. Unset: reported, never
    /// failing (a new version may mean to change bars).
    pub max_divergence: Option<f64>,
    /// Most seconds of event time the new version's watermark may trail production's (it
    /// reads the input from its beginning; checked from the first step on). Unset: reported,
    /// never failing.
    pub max_lag_secs: Option<f64>,
}

/// Canary settings as given: a request's `canary`, or a graph's `[rollout]` table (the new
/// version's). Each unset field comes from the graph's `[rollout]`, then the defaults (see
/// [`CanarySettings::over`]); the `deployment_requested` event records the settings used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanarySettings {
    /// Percent of the keys (instruments, by a stable hash) the new version owns at each step,
    /// ascending, the last 100; default 10, 25, 50, 100.
    pub steps: Option<Vec<u32>>,
    /// How long (wall clock) the new version runs before its first step, and each step before
    /// the next: "30s", "5m"; default "60s".
    pub step_length: Option<String>,
    /// The checks run before every step and after the last (each unset threshold from the
    /// graph's `[rollout.checks]`, then the default).
    #[serde(default)]
    pub checks: CanaryChecks,
}

impl CanarySettings {
    /// These settings, each unset one taken from `base` (a graph's `[rollout]`), then the
    /// defaults.
    pub fn over(&self, base: &CanarySettings) -> CanaryConfig {
        let default = CanaryConfig::default();
        let (c, b) = (&self.checks, &base.checks);
        CanaryConfig {
            steps: (self.steps.clone())
                .or_else(|| base.steps.clone())
                .unwrap_or(default.steps),
            step_length: (self.step_length.clone())
                .or_else(|| base.step_length.clone())
                .unwrap_or(default.step_length),
            checks: CanaryChecks {
                max_dead_letter_rate: c.max_dead_letter_rate.or(b.max_dead_letter_rate),
                max_late_rate: c.max_late_rate.or(b.max_late_rate),
                max_divergence: c.max_divergence.or(b.max_divergence),
                max_lag_secs: c.max_lag_secs.or(b.max_lag_secs),
            },
        }
    }

    /// The `[rollout]` table of graph TOML `text` (none: every field unset).
    pub fn of_graph(text: &str) -> Result<CanarySettings, RuleError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| RuleError(format!("invalid TOML: {e}")))?;
        match doc.get("rollout") {
            None => Ok(CanarySettings::default()),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| RuleError(format!("rollout: {e}"))),
        }
    }
}

fn canary_strategy() -> Strategy {
    Strategy::Canary
}

fn default_steps() -> Vec<u32> {
    vec![10, 25, 50, 100]
}

fn default_step_length() -> String {
    "60s".into()
}

impl Default for CanaryConfig {
    /// What a canary request without settings gets (the serde defaults).
    fn default() -> Self {
        CanaryConfig {
            steps: default_steps(),
            step_length: default_step_length(),
            checks: CanaryChecks::default(),
        }
    }
}

impl CanaryConfig {
    /// The step length in ms, or why the settings are invalid.
    pub fn validate(&self) -> Result<u64, Refusal> {
        self.check()
            .map_err(|e| Refusal::Invalid(format!("canary.{}: {}", e.key, e.why)))
    }

    /// The step length in ms, or which setting is invalid and why (a request names it under
    /// `canary.`, a graph under `rollout.`).
    pub fn check(&self) -> Result<u64, SettingError> {
        let bad = |key: &str, why: String| {
            Err(SettingError {
                key: key.to_string(),
                why,
            })
        };
        if self.steps.is_empty() || self.steps.len() > 20 {
            return bad("steps", "give 1 to 20 steps".into());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1])
            || self.steps.first().is_some_and(|s| *s == 0)
            || self.steps.last() != Some(&100)
        {
            return bad(
                "steps",
                format!(
                    "{:?} must rise from above 0 to 100 (percent of keys)",
                    self.steps
                ),
            );
        }
        for (name, v) in [
            (
                "checks.max_dead_letter_rate",
                self.checks.max_dead_letter_rate,
            ),
            ("checks.max_late_rate", self.checks.max_late_rate),
            ("checks.max_divergence", self.checks.max_divergence),
        ] {
            if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                return bad(name, "a rate from 0 to 1".into());
            }
        }
        if self
            .checks
            .max_lag_secs
            .is_some_and(|v| v.is_nan() || v < 0.0)
        {
            return bad("checks.max_lag_secs", "zero or more seconds".into());
        }
        match tickflow_operators::duration_ms(&self.step_length) {
            Ok(ms) if (100..=86_400_000).contains(&ms) => Ok(ms),
            Ok(_) => bad("step_length", "from 100ms to 24h".into()),
            Err(e) => bad("step_length", e.to_string()),
        }
    }
}

/// An invalid canary setting: its key (`steps`, `checks.max_late_rate`, ...) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The key, relative to the settings.
    pub key: String,
    /// Why it is invalid.
    pub why: String,
}

/// A shadow's alert: an event (`shadow_threshold_crossed`) once a sink's keyed diff against
/// production crosses `max_divergence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Most keys differing or only in one version, per key compared (0 to 1).
    pub max_divergence: f64,
}

/// A shadow's alert settings and, once it fired, the sink and its divergence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowWatch {
    /// The settings.
    pub config: ShadowConfig,
    /// The sink whose diff crossed the threshold, and its divergence then.
    pub crossed: Option<(String, f64)>,
}

/// What a canary's `deployment_requested` event records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryRequest {
    /// `canary` or `blue_green`.
    #[serde(default = "canary_strategy")]
    pub strategy: Strategy,
    /// The settings.
    pub config: CanaryConfig,
    /// The production deployment it rolls out over.
    pub current: u64,
    /// That deployment's version.
    pub current_version: i64,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Steps advance as their checks pass.
    Running,
    /// Held at its step by an operator.
    Paused,
    /// The new version took over.
    Promoted,
    /// The current version took back every key.
    RolledBack,
}

/// One check of a rollout step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `dead_letter_rate`, `late_rate` or `failure`.
    pub metric: String,
    /// The new version's value.
    pub value: f64,
    /// The most it may be.
    pub threshold: f64,
    /// The current version's value, for comparison.
    pub current: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// A canary rollout, folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// `canary` or `blue_green`.
    pub strategy: Strategy,
    /// The settings.
    pub config: CanaryConfig,
    /// The production deployment it rolls out over.
    pub current: u64,
    /// Its version.
    pub current_version: i64,
    /// Where it stands.
    pub state: RolloutState,
    /// The step passed most recently (0: none yet; the new version owns no key).
    pub step: usize,
    /// Percent of keys the new version owns.
    pub share_pct: u32,
    /// When the step began (wall clock).
    pub step_started_at: DateTime<Utc>,
    /// Which version owns which keys, from when (event time).
    pub schedule: Vec<ShareStep>,
    /// The latest checks.
    pub checks: Vec<CheckResult>,
    /// The deployment that took over at the end.
    pub replaced_by: Option<u64>,
}

impl Rollout {
    pub(super) fn new(request: CanaryRequest, now: DateTime<Utc>) -> Self {
        Rollout {
            strategy: request.strategy,
            config: request.config,
            current: request.current,
            current_version: request.current_version,
            state: RolloutState::Running,
            step: 0,
            share_pct: 0,
            step_started_at: now,
            schedule: Vec::new(),
            checks: Vec::new(),
            replaced_by: None,
        }
    }

    /// Whether it is still deciding (running or paused).
    pub fn is_open(&self) -> bool {
        matches!(self.state, RolloutState::Running | RolloutState::Paused)
    }
}

/// A shadow of `target` beside the graph's active production deployment.
pub(super) fn shadow(
    state: &ControlState,
    id: u64,
    target: &GraphVersion,
    watch: Option<&ShadowConfig>,
) -> Result<Vec<EventKind>, Refusal> {
    if watch.is_some_and(|w| !(0.0..=1.0).contains(&w.max_divergence)) {
        return Err(Refusal::Invalid(
            "shadow.max_divergence: a share from 0 to 1".into(),
        ));
    }
    let graph = &target.name;
    let Some(current) = active_of(state, graph).find(|d| d.shadow_of.is_none()) else {
        return Err(Refusal::Conflict(format!(
            "graph `{graph}` has no active deployment for a shadow to run beside"
        )));
    };
    if let Some(other) = active_of(state, graph).find(|d| d.shadow_of.is_some()) {
        return Err(Refusal::Conflict(format!(
            "graph `{graph}` already has a shadow, deployment {} (v{}): stop it first",
            other.id, other.version
        )));
    }
    Ok(vec![EventKind::DeploymentRequested {
        id,
        graph: graph.clone(),
        version: target.version,
        state_dir: format!("d{id}"),
        continues: None,
        rollback_of: None,
        state_plan: None,
        shadow_of: Some(current.id),
        canary: None,
        watch: watch.and_then(|w| serde_json::to_value(w).ok()),
    }])
}

/// A canary of `target` over the graph's production deployment: one deployment running both
/// versions (see [`crate::canary`]), continuing production's checkpoint.
pub(super) fn start_canary(
    state: &ControlState,
    id: u64,
    target: &GraphVersion,
    config: CanaryConfig,
    (strategy, allow_state_loss): (Strategy, bool),
) -> Result<Vec<EventKind>, Refusal> {
    config.validate()?;
    let graph = &target.name;
    let Some(current) = active_of(state, graph).find(|d| d.shadow_of.is_none()) else {
        return Err(Refusal::Conflict(format!(
            "graph `{graph}` has no active deployment to roll out over"
        )));
    };
    if current.rollout.as_ref().is_some_and(|r| r.is_open()) {
        return Err(Refusal::Conflict(format!(
            "graph `{graph}` is already rolling out v{} (deployment {}): promote, roll back or \
             wait for it first",
            current.version, current.id
        )));
    }
    if current.version == target.version {
        return Err(Refusal::Conflict(format!(
            "graph `{graph}` v{} is the version in production (deployment {})",
            target.version, current.id
        )));
    }
    if current.state != DeploymentState::Running {
        return Err(Refusal::Conflict(format!(
            "a canary rolls out over a running deployment; deployment {} is {}",
            current.id,
            current.state.name()
        )));
    }
    if let Some(plan) = state_plan(state, current, target) {
        if plan.drops_state && !allow_state_loss {
            return Err(Refusal::Conflict(format!(
                "promoting `{graph}` v{} over deployment {} would drop state: {}; deploy with \
                 \"allow_state_loss\": true to accept that",
                target.version,
                current.id,
                plan.lines().join("; ")
            )));
        }
    }
    let request = CanaryRequest {
        strategy,
        config,
        current: current.id,
        current_version: current.version,
    };
    let mut events: Vec<EventKind> = active_of(state, graph)
        .map(|d| EventKind::DeploymentStopped { id: d.id })
        .collect();
    events.push(EventKind::DeploymentRequested {
        id,
        graph: graph.clone(),
        version: target.version,
        state_dir: current.state_dir.clone(),
        continues: Some(current.id),
        rollback_of: None,
        state_plan: None,
        shadow_of: None,
        canary: serde_json::to_value(&request).ok(),
        watch: None,
    });
    Ok(events)
}

/// The events that end canary `d`'s rollout with the current version alone, continuing the
/// canary's checkpoint (its new version's parts dropped).
pub fn rollout_rollback(
    state: &ControlState,
    d: &Deployment,
    checks: Vec<CheckResult>,
) -> Vec<EventKind> {
    let to = state.next_deployment_id();
    let version = d.rollout.as_ref().map_or(d.version, |r| r.current_version);
    let checks = serde_json::to_value(checks).unwrap_or_default();
    vec![
        EventKind::RolloutRolledBack {
            id: d.id,
            to,
            checks,
        },
        taking_over(d, to, version, Some(d.id)),
    ]
}

/// The events that end canary `d`'s rollout with the new version alone, continuing the
/// canary's checkpoint (see [`crate::canary::take_canary_lane`]).
pub fn rollout_promote(
    state: &ControlState,
    d: &Deployment,
    checks: Vec<CheckResult>,
) -> Vec<EventKind> {
    let to = state.next_deployment_id();
    let checks = serde_json::to_value(checks).unwrap_or_default();
    vec![
        EventKind::RolloutPromoted {
            id: d.id,
            to,
            checks,
        },
        taking_over(d, to, d.version, None),
    ]
}

/// Deployment `to` of `version`, continuing canary `d`'s checkpoint on its data directory.
fn taking_over(d: &Deployment, to: u64, version: i64, rollback_of: Option<u64>) -> EventKind {
    EventKind::DeploymentRequested {
        id: to,
        graph: d.graph.clone(),
        version,
        state_dir: d.state_dir.clone(),
        continues: Some(d.id),
        rollback_of,
        state_plan: None,
        shadow_of: None,
        canary: None,
        watch: None,
    }
}

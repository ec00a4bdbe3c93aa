//! Canary rollouts: a ticker on the leader checks every open rollout, and when its step has
//! run its length, judges the new version's domain metrics (see [`evaluate`]): a failed check
//! rolls back, a passed last step promotes, any other moves keys to the next share.
//!
//! Moving keys restarts the canary's dataflow on its newest checkpoint with a longer
//! schedule. The new share applies from an event time past everything the stopped run could
//! have emitted (its highest watermark, and its newest checkpoint), so a window's revisions all
//! come from one version; what the stopped run wrote after its newest checkpoint is rewritten
//! by the restarted one, as after a crash.

use std::sync::atomic::Ordering;

use crate::canary::CANARY_PREFIX;
use crate::control::{rollout_promote, rollout_rollback, CheckResult, Rollout, RolloutState};

use super::*;

/// How often the ticker looks at the rollouts.
const TICK: std::time::Duration = std::time::Duration::from_millis(200);

/// Shadows are diffed every this many ticks.
const SHADOW_EVERY: u64 = 10;

/// One version's side of a canary dataflow.
#[derive(Debug, Default, Clone, Copy)]
struct LaneCounts {
    read: u64,
    dead_letters: u64,
    late: u64,
    /// The least source watermark (`None` before every source has one).
    watermark: Option<u64>,
}

impl LaneCounts {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.read.max(1) as f64
    }
}

fn lanes(metrics: &Metrics) -> (LaneCounts, LaneCounts) {
    let (mut current, mut canary) = (LaneCounts::default(), LaneCounts::default());
    let mut watermarks: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for n in &metrics.nodes {
        let is_canary = n.name.starts_with(CANARY_PREFIX);
        let lane = if is_canary { &mut canary } else { &mut current };
        let out = |name: &str| {
            n.outputs
                .iter()
                .filter(|(o, _)| o == name)
                .map(|(_, c)| c.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        match n.role {
            "source" => {
                lane.read += out("out");
                watermarks[usize::from(is_canary)].push(n.watermark_ms.load(Ordering::Relaxed));
            }
            "operator" => {
                lane.dead_letters += out("dead_letter");
                lane.late += out("late");
            }
            _ => {}
        }
    }
    let least = |w: &[u64]| w.iter().copied().min().filter(|w| *w > 0);
    current.watermark = least(&watermarks[0]);
    canary.watermark = least(&watermarks[1]);
    (current, canary)
}

/// The checks of `rollout` on a canary dataflow's counters, and whether the new version has
/// caught up with the current one (it reads the input from its beginning).
pub(super) fn evaluate(rollout: &Rollout, metrics: &Metrics) -> (Vec<CheckResult>, bool) {
    let (current, canary) = lanes(metrics);
    let caught_up = match (canary.watermark, current.watermark) {
        (Some(c), Some(p)) => c >= p,
        _ => false,
    };
    let check = |metric: &str, set: Option<f64>, new: u64, old: u64| {
        let (value, base) = (canary.rate(new), current.rate(old));
        let threshold = set.unwrap_or(base + 0.01);
        CheckResult {
            metric: metric.to_string(),
            value,
            threshold,
            current: base,
            passed: value <= threshold,
        }
    };
    let c = &rollout.config.checks;
    let mut checks = vec![
        check(
            "dead_letter_rate",
            c.max_dead_letter_rate,
            canary.dead_letters,
            current.dead_letters,
        ),
        check("late_rate", c.max_late_rate, canary.late, current.late),
    ];
    let [matched, differing, alone] = metrics
        .divergence
        .each_ref()
        .map(|c| c.load(Ordering::Relaxed));
    let value = (differing + alone) as f64 / (matched + differing + alone).max(1) as f64;
    let threshold = c.max_divergence.unwrap_or(1.0);
    // How far the new version trails (before the first step it is still catching up: a
    // step waits for it instead).
    let lag = match (canary.watermark, current.watermark) {
        (Some(c), Some(p)) => p.saturating_sub(c) as f64 / 1000.0,
        _ => 0.0,
    };
    let limit = c.max_lag_secs.unwrap_or(f64::INFINITY);
    checks.push(CheckResult {
        metric: "lag_secs".into(),
        value: lag,
        threshold: if limit.is_finite() { limit } else { f64::MAX },
        current: 0.0,
        passed: rollout.step == 0 || lag <= limit,
    });
    checks.push(CheckResult {
        metric: "divergence".into(),
        value,
        threshold,
        current: 0.0,
        passed: value <= threshold,
    });
    (checks, caught_up)
}

/// The checks of a canary rollout on its dataflow's counters now (for `/metrics`).
pub fn canary_checks(rollout: &Rollout, metrics: &Metrics) -> Vec<CheckResult> {
    evaluate(rollout, metrics).0
}

/// The checks as one line for an event's reason.
fn summary(checks: &[CheckResult]) -> String {
    checks
        .iter()
        .map(|c| {
            format!(
                "{} {:.4} {} {:.4} (current version {:.4})",
                c.metric,
                c.value,
                if c.passed { "<=" } else { ">" },
                c.threshold,
                c.current
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the ticker does with one rollout now.
enum Due {
    Wait,
    Roll(Vec<CheckResult>),
    Promote(Vec<CheckResult>),
    Step(Vec<CheckResult>, usize, u32),
}

impl Supervisor {
    /// Starts the ticker (on the leader, or a process alone).
    pub(super) fn start_rollouts(self: &Arc<Self>) -> Result<(), EngineError> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("rollouts".into())
            .spawn(move || {
                for tick in 0u64.. {
                    std::thread::sleep(TICK);
                    let Some(sup) = weak.upgrade() else { break };
                    sup.tick_rollouts();
                    if tick % SHADOW_EVERY == 0 {
                        sup.tick_shadows();
                    }
                }
            })
            .map(|_| ())
            .map_err(EngineError::Thread)
    }

    fn tick_rollouts(&self) {
        let open: Vec<u64> = {
            let inner = self.lock();
            inner
                .state
                .deployments
                .values()
                .filter(|d| d.state == DeploymentState::Running)
                .filter(|d| {
                    d.rollout
                        .as_ref()
                        .is_some_and(|r| r.state == RolloutState::Running)
                })
                .filter(|d| !inner.stepping.contains(&d.id))
                .map(|d| d.id)
                .collect()
        };
        for id in open {
            self.tick_rollout(id);
        }
    }

    fn tick_rollout(&self, id: u64) {
        let mut inner = self.lock();
        let Some(d) = inner.state.deployments.get(&id).cloned() else {
            return;
        };
        let Some(rollout) = d.rollout.clone() else {
            return;
        };
        let Some(run) = inner.runs.get(&id).filter(|r| r.thread.is_some()) else {
            return;
        };
        let length = rollout.config.validate().unwrap_or(60_000);
        let ran = (Utc::now() - rollout.step_started_at).num_milliseconds();
        if ran < length as i64 {
            return;
        }
        let (checks, caught_up) = evaluate(&rollout, &run.metrics);
        let due = if checks.iter().any(|c| !c.passed) {
            Due::Roll(checks)
        } else if !caught_up && rollout.step == 0 {
            Due::Wait
        } else if rollout.step >= rollout.config.steps.len() {
            Due::Promote(checks)
        } else {
            let share = rollout.config.steps[rollout.step];
            Due::Step(checks, rollout.step + 1, share)
        };
        match due {
            Due::Wait => {}
            Due::Roll(checks) => {
                let reason = format!("check failed: {}", summary(&checks));
                tracing::warn!("deployment {id}: rolling back: {reason}");
                let kinds = rollout_rollback(&inner.state, &d, checks);
                self.append_all(&mut inner, Some(reason), kinds);
            }
            Due::Promote(checks) => {
                let reason = format!("every step passed: {}", summary(&checks));
                tracing::info!("deployment {id}: promoted: {reason}");
                let kinds = rollout_promote(&inner.state, &d, checks);
                self.append_all(&mut inner, Some(reason), kinds);
            }
            Due::Step(checks, step, share_pct) => {
                // Stop the run and wait for it outside the lock; nothing relaunches it
                // meanwhile.
                inner.stepping.insert(id);
                let Some(run) = inner.runs.get_mut(&id) else {
                    return;
                };
                run.live.stop();
                let thread = run.thread.take();
                let metrics = Arc::clone(&run.metrics);
                // A Kafka sink cannot be truncated: what the restarted run writes again must be
                // what was written, so the share starts past every event time read too.
                let kafka_sinks = run.plan.sinks.iter().any(|s| s.kind.name == "kafka");
                drop(inner);
                let stopped = thread.is_none_or(|t| {
                    join_by(t, std::time::Instant::now() + self.config.stop_timeout)
                });
                let newest = self
                    .newest_checkpoint(&d)
                    .filter(|m| !m.complete)
                    .map(|m| m.id);
                let reached = metrics
                    .nodes
                    .iter()
                    .filter(|n| n.role == "source")
                    .map(|n| n.watermark_ms.load(Ordering::Relaxed))
                    .filter(|w| *w < u64::MAX)
                    .max()
                    .unwrap_or(0)
                    .max(newest.unwrap_or(0));
                let read = metrics
                    .nodes
                    .iter()
                    .filter(|n| kafka_sinks && n.role == "source")
                    .map(|n| n.max_event_ms.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                let reached = reached.max(read);
                // The next whole second past it.
                let from_ms = (reached / 1000 + 1) * 1000;
                let mut inner = self.lock();
                inner.stepping.remove(&id);
                if !stopped {
                    let error = format!(
                        "its dataflow did not stop within {} s for rollout step {step}",
                        self.config.stop_timeout.as_secs()
                    );
                    self.append_system(&mut inner, None, EventKind::DeploymentFailed { id, error });
                    self.reconcile(&mut inner);
                    return;
                }
                let still = inner.state.deployments.get(&id).is_some_and(|d| {
                    d.state.is_active() && d.rollout.as_ref().is_some_and(|r| r.step + 1 == step)
                });
                if still {
                    let reason = format!(
                        "step {step}: {share_pct} % of keys from {}; {}",
                        crate::checkpoint::final_label(from_ms),
                        summary(&checks)
                    );
                    tracing::info!("deployment {id}: {reason}");
                    let kind = EventKind::RolloutStepStarted {
                        id,
                        step,
                        share_pct,
                        from_ms,
                        checks: serde_json::to_value(&checks).unwrap_or_default(),
                    };
                    self.append_all(&mut inner, Some(reason), vec![kind]);
                } else {
                    self.reconcile(&mut inner);
                }
            }
        }
    }

    /// Diffs every active shadow against production (for `/metrics`), and records the
    /// crossing of its threshold once.
    fn tick_shadows(&self) {
        let shadows: Vec<u64> = {
            let mut inner = self.lock();
            // A shadow that read all its input is still compared while production runs.
            let deployments = &inner.state.deployments;
            let active: Vec<u64> = deployments
                .values()
                .filter(|d| d.state.is_active() || d.state == DeploymentState::Finished)
                .filter(|d| {
                    d.shadow_of
                        .and_then(|p| deployments.get(&p))
                        .is_some_and(|p| p.state.is_active())
                })
                .map(|d| d.id)
                .collect();
            inner.shadow_stats.retain(|id, _| active.contains(id));
            active
        };
        for id in shadows {
            let Ok(diff) = self.shadow_diff(id, 3) else {
                continue;
            };
            let mut inner = self.lock();
            let watch = inner
                .state
                .deployments
                .get(&id)
                .and_then(|d| d.watch.clone())
                .filter(|w| w.crossed.is_none());
            let crossed = watch.and_then(|w| {
                diff.sinks.iter().find_map(|(sink, d)| {
                    let divergence = d.divergence();
                    (divergence > w.config.max_divergence)
                        .then(|| (sink.clone(), divergence, w.config.max_divergence, d))
                })
            });
            if let Some((sink, divergence, threshold, d)) = crossed {
                let reason = format!(
                    "sink {sink}: divergence {divergence:.4} > {threshold:.4} ({} matched, {} \
                     differing, {} only in production, {} only in the shadow)",
                    d.matched, d.differing, d.only_old, d.only_new
                );
                tracing::warn!("deployment {id}: {reason}");
                let counts = serde_json::json!({
                    "matched": d.matched, "differing": d.differing,
                    "only_old": d.only_old, "only_new": d.only_new,
                });
                let kind = EventKind::ShadowThresholdCrossed {
                    id,
                    sink,
                    divergence,
                    threshold,
                    counts,
                };
                self.append_system(&mut inner, Some(reason), kind);
            }
            inner.shadow_stats.insert(id, diff);
        }
    }

    /// The newest keyed diff of each active shadow.
    pub fn shadow_stats(&self) -> Vec<(u64, backtest::ShadowDiff)> {
        let inner = self.lock();
        inner
            .shadow_stats
            .iter()
            .map(|(id, d)| (*id, d.clone()))
            .collect()
    }

    /// Appends engine events with one reason, then makes the dataflows match.
    fn append_all(&self, inner: &mut Inner, reason: Option<String>, kinds: Vec<EventKind>) {
        for kind in kinds {
            self.append_system(inner, reason.clone(), kind);
        }
        self.reconcile(inner);
    }

    /// A canary whose input ended before its last step: the checks decide at once, on
    /// everything both versions processed (a promotion continues the final checkpoint, so its
    /// deployment finishes at once too).
    pub(super) fn rollout_finished(&self, inner: &mut Inner, id: u64) -> bool {
        let Some(d) = inner.state.deployments.get(&id).cloned() else {
            return false;
        };
        let (Some(rollout), Some(run)) = (
            d.rollout.as_ref().filter(|r| r.is_open()),
            inner.runs.get(&id),
        ) else {
            return false;
        };
        let (checks, _) = evaluate(rollout, &run.metrics);
        let passed = checks.iter().all(|c| c.passed);
        let reason = format!(
            "the input ended at step {} of {}: {}",
            rollout.step,
            rollout.config.steps.len(),
            summary(&checks)
        );
        let kinds = if passed {
            rollout_promote(&inner.state, &d, checks)
        } else {
            rollout_rollback(&inner.state, &d, checks)
        };
        self.append_all(inner, Some(reason), kinds);
        true
    }

    /// A canary whose dataflow failed is rolled back (the failure is the check).
    pub(super) fn rollout_failed(&self, inner: &mut Inner, id: u64, error: &str) -> bool {
        let Some(d) = inner.state.deployments.get(&id).cloned() else {
            return false;
        };
        if !d.rollout.as_ref().is_some_and(|r| r.is_open()) {
            return false;
        }
        let checks = vec![CheckResult {
            metric: "failure".into(),
            value: 1.0,
            threshold: 0.0,
            current: 0.0,
            passed: false,
        }];
        let kinds = rollout_rollback(&inner.state, &d, checks);
        self.append_all(
            inner,
            Some(format!("the canary's dataflow failed: {error}")),
            kinds,
        );
        true
    }
}

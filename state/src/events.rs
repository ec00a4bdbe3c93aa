//! The control plane's events: what an [`crate::EventLog`] record's payload holds.
//!
//! A payload is one JSON object: `{"v": 1, "time": RFC 3339, "actor": ..., "reason": ...,
//! "type": "deployment_paused", ...fields of the kind}`. `v` is the format version; a build
//! refuses payloads of a version it does not know instead of guessing. JSON keeps the log
//! readable as an audit trail (`tickflow events DIR`) and lets later versions add fields with
//! defaults.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::StateError;

/// The event format this build writes and reads.
pub const EVENT_FORMAT: u32 = 1;

/// The actor of events the engine appends on its own (restarts, failures, completion).
pub const SYSTEM_ACTOR: &str = "system";

/// One deployment decision or fact, with who made it, when and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Format version ([`EVENT_FORMAT`]).
    pub v: u32,
    /// When it was decided (wall clock of the engine that appended it).
    pub time: DateTime<Utc>,
    /// The API key name that asked for it, or [`SYSTEM_ACTOR`].
    pub actor: String,
    /// Why, as given by the actor (or the engine's explanation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A graph version was accepted (it compiled).
    GraphSubmitted {
        /// `[graph].name`.
        name: String,
        /// `[graph].version`.
        version: i64,
        /// SHA-256 of the TOML text, hex.
        sha256: String,
        /// The TOML text as submitted.
        toml: String,
        /// Fingerprint of what the version's state depends on: two versions with the same one
        /// can continue from each other's checkpoints.
        state_fingerprint: String,
        /// The compiled plan's nodes, as the API shows them.
        plan: serde_json::Value,
    },
    /// A deployment of a graph version was asked for.
    DeploymentRequested {
        /// New deployment id (1, 2, ... in log order).
        id: u64,
        /// Graph name.
        graph: String,
        /// Graph version.
        version: i64,
        /// The data directory (under the engine's `deployments/`) it runs on.
        state_dir: String,
        /// The deployment whose checkpoints it continues from, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        continues: Option<u64>,
        /// Set when this deployment is the target of a rollback of that deployment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback_of: Option<u64>,
        /// What it does with the state of the deployment it continues, part by part (kept,
        /// empty, replaced, dropped), when that is not everything kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_plan: Option<serde_json::Value>,
        /// Set when it runs as a shadow of that deployment: beside it, on the same input,
        /// its outputs redirected, never production's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shadow_of: Option<u64>,
        /// Set when it is a canary rollout over the production deployment: the rollout's
        /// settings, the deployment it rolls out over and that one's version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<serde_json::Value>,
        /// A shadow's alert settings (`max_divergence`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        watch: Option<serde_json::Value>,
    },
    /// The deployment's dataflow was built and is processing (also after a restart).
    DeploymentStarted {
        /// Deployment id.
        id: u64,
        /// The checkpoint it resumed from (event time, ms), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restored_from: Option<u64>,
    },
    /// Sources stopped reading; state and outputs stay as they are.
    DeploymentPaused {
        /// Deployment id.
        id: u64,
    },
    /// Sources read again.
    DeploymentResumed {
        /// Deployment id.
        id: u64,
    },
    /// Stopped for good; its newest checkpoint stays for a later version to continue from.
    DeploymentStopped {
        /// Deployment id.
        id: u64,
    },
    /// Stopped and replaced by deployment `to` of the previous version.
    DeploymentRolledBack {
        /// Deployment id.
        id: u64,
        /// The deployment that replaces it.
        to: u64,
    },
    /// The dataflow failed; the error says why.
    DeploymentFailed {
        /// Deployment id.
        id: u64,
        /// What went wrong.
        error: String,
    },
    /// Bounded input was read to the end and every output flushed.
    DeploymentFinished {
        /// Deployment id.
        id: u64,
    },
    /// A shadow's keyed diff against production crossed its configured threshold (once per
    /// shadow).
    ShadowThresholdCrossed {
        /// The shadow deployment.
        id: u64,
        /// The sink whose diff crossed it.
        sink: String,
        /// Keys differing or only in one version, per key compared.
        divergence: f64,
        /// The threshold.
        threshold: f64,
        /// The counts: matched, differing, only_old, only_new.
        counts: serde_json::Value,
    },
    /// A canary rollout passed its checks and moved to its next step: from event time
    /// `from_ms` on, the new version owns `share_pct` % of the keys.
    RolloutStepStarted {
        /// The canary deployment.
        id: u64,
        /// Step number, from 1.
        step: usize,
        /// Percent of keys the new version owns from now on.
        share_pct: u32,
        /// Event time (ms) the share applies from.
        from_ms: u64,
        /// The checks that passed, with their values and thresholds.
        checks: serde_json::Value,
    },
    /// The rollout holds at its step (the deployment keeps running).
    RolloutPaused {
        /// The canary deployment.
        id: u64,
    },
    /// The rollout goes on.
    RolloutResumed {
        /// The canary deployment.
        id: u64,
    },
    /// The last step passed its checks: deployment `to` runs the new version alone,
    /// continuing the canary's checkpoint.
    RolloutPromoted {
        /// The canary deployment.
        id: u64,
        /// The deployment of the new version that takes over.
        to: u64,
        /// The checks that passed.
        checks: serde_json::Value,
    },
    /// The rollout was rolled back, by a failed check or by an operator: deployment `to` runs
    /// the current version alone, continuing the canary's checkpoint.
    RolloutRolledBack {
        /// The canary deployment.
        id: u64,
        /// The deployment of the current version that takes over.
        to: u64,
        /// The checks, the failed ones with `passed: false` (empty when an operator aborted).
        checks: serde_json::Value,
    },
}

impl Event {
    /// An event of the current format.
    pub fn new(time: DateTime<Utc>, actor: &str, reason: Option<String>, kind: EventKind) -> Self {
        Event {
            v: EVENT_FORMAT,
            time,
            actor: actor.to_string(),
            reason,
            kind,
        }
    }

    /// The log payload.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a log payload, refusing formats this build does not know.
    pub fn decode(payload: &[u8]) -> Result<Event, StateError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version = serde_json::from_slice(payload)
            .map_err(|e| StateError::Corrupt(format!("event payload: {e}")))?;
        if version.v != EVENT_FORMAT {
            return Err(StateError::Corrupt(format!(
                "event format v{} is not supported by this build (it reads v{EVENT_FORMAT})",
                version.v
            )));
        }
        serde_json::from_slice(payload)
            .map_err(|e| StateError::Corrupt(format!("event payload: {e}")))
    }

    /// The deployment the event is about, if any.
    pub fn deployment(&self) -> Option<u64> {
        match &self.kind {
            EventKind::GraphSubmitted { .. } => None,
            EventKind::DeploymentRequested { id, .. }
            | EventKind::DeploymentStarted { id, .. }
            | EventKind::DeploymentPaused { id }
            | EventKind::DeploymentResumed { id }
            | EventKind::DeploymentStopped { id }
            | EventKind::DeploymentRolledBack { id, .. }
            | EventKind::DeploymentFailed { id, .. }
            | EventKind::DeploymentFinished { id }
            | EventKind::RolloutStepStarted { id, .. }
            | EventKind::RolloutPaused { id }
            | EventKind::RolloutResumed { id }
            | EventKind::RolloutPromoted { id, .. }
            | EventKind::RolloutRolledBack { id, .. }
            | EventKind::ShadowThresholdCrossed { id, .. } => Some(*id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_versions() {
        let e = Event::new(
            Utc::now(),
            "alice",
            Some("spread fix".into()),
            EventKind::DeploymentRolledBack { id: 3, to: 4 },
        );
        let bytes = e.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("\"type\":\"deployment_rolled_back\""),
            "{text}"
        );
        assert_eq!(Event::decode(&bytes).unwrap(), e);
        let newer = text.replace("\"v\":1", "\"v\":2");
        let err = Event::decode(newer.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("v2 is not supported"), "{err}");
        assert!(Event::decode(b"{\"v\":1,\"type\":\"bogus\"}").is_err());
    }
}

//! A canary rollout's dataflow: the current version and the new one in **one** dataflow on the
//! same input, each version's production sinks fed by both, each record passing from the one
//! version that owns its key at its event time ([`crate::render::route`]).
//!
//! One dataflow makes the switch exact: both versions' records cross the same checkpoints and
//! are written by the same sink writers, so a step that moves keys from one version to the
//! other (a restart on the newest checkpoint with a longer schedule) neither repeats nor skips
//! a key's output. The current version's nodes keep their names, so a canary continues the
//! production deployment's checkpoint; the new version's nodes are prefixed
//! [`CANARY_PREFIX`] and start empty, reading their input from its beginning, as a shadow
//! does. A rollback continues the same checkpoint with the current version alone (the canary's
//! parts dropped); a promotion continues it with the new version alone, taking the canary's
//! parts under their own names ([`take_canary_lane`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::checkpoint::{GraphIdentity, Manifest};
use crate::plan::{OutputRef, Plan};
use crate::render::route::{Route, ShareStep};
use crate::render::RestoredTable;
use crate::state_plan::StatePart;
use crate::EngineError;

/// The prefix of the new version's nodes in a canary dataflow.
pub const CANARY_PREFIX: &str = "canary__";

/// The dataflow of a canary of `canary` over `current` (both placed in the same deployment
/// directory) under `schedule`. A sink of both versions with the same name and target is a
/// production sink fed by both; a sink only the current version has keeps its input; a sink
/// only the new version has (or whose target changed) starts at the promotion.
pub fn combine(current: &Plan, canary: &Plan, schedule: &[ShareStep]) -> Result<Plan, EngineError> {
    let renamed = |i: &OutputRef| OutputRef {
        node: format!("{CANARY_PREFIX}{}", i.node),
        ..i.clone()
    };
    let mut plan = current.clone();
    plan.version = canary.version;
    plan.fingerprint = {
        use sha2::{Digest, Sha256};
        let text = format!("canary\n{}\n{}\n", current.fingerprint, canary.fingerprint);
        format!("{:x}", Sha256::digest(text.as_bytes()))
    };
    for s in &canary.sources {
        let mut s = s.clone();
        s.name = format!("{CANARY_PREFIX}{}", s.name);
        plan.sources.push(s);
    }
    for o in &canary.operators {
        let mut o = o.clone();
        o.name = format!("{CANARY_PREFIX}{}", o.name);
        o.inputs = o.inputs.iter().map(renamed).collect();
        plan.operators.push(o);
    }
    let schedule = Arc::new(schedule.to_vec());
    let horizon_ms = current.horizon_ms().max(canary.horizon_ms());
    for sink in &mut plan.sinks {
        let Some(new) = canary.sinks.iter().find(|n| {
            n.name == sink.name && n.component.state_identity() == sink.component.state_identity()
        }) else {
            continue;
        };
        sink.route = Some(Route {
            canary_from: sink.inputs.len(),
            schedule: Arc::clone(&schedule),
            horizon_ms,
        });
        sink.inputs.extend(new.inputs.iter().map(renamed));
    }
    plan.files_read.extend(
        canary
            .files_read
            .iter()
            .map(|(k, p)| (format!("{CANARY_PREFIX}{k}"), p.clone())),
    );
    Ok(plan)
}

/// Whether `manifest` was written by a canary dataflow.
fn is_canary(manifest: &Manifest) -> bool {
    is_canary_identity(&manifest.graph)
}

fn is_canary_identity(graph: &GraphIdentity) -> bool {
    graph.parts.keys().any(|p| {
        p.split_once('/')
            .is_some_and(|(_, n)| n.starts_with(CANARY_PREFIX))
    })
}

/// The new version's parts of a canary's identity under their own names, with the production
/// sinks (which keep their names).
fn lane_parts(graph: &GraphIdentity) -> std::collections::BTreeMap<String, StatePart> {
    let mut parts = std::collections::BTreeMap::new();
    for (key, part) in &graph.parts {
        let Some((kind, name)) = key.split_once('/') else {
            continue;
        };
        match name.strip_prefix(CANARY_PREFIX) {
            Some(own) => {
                let mut part = part.clone();
                part.tables = part
                    .tables
                    .iter()
                    .map(|t| t.strip_prefix(CANARY_PREFIX).unwrap_or(t).to_string())
                    .collect();
                parts.insert(format!("{kind}/{own}"), part);
            }
            None if kind == "sink" => {
                parts.entry(key.clone()).or_insert_with(|| part.clone());
            }
            None => {}
        }
    }
    parts
}

/// When `found` is a canary's identity and `identity` its new version alone: the identity of
/// the new version's lane, which that version continues (see [`take_canary_lane`]).
pub fn lane_of(identity: &GraphIdentity, found: &GraphIdentity) -> Option<GraphIdentity> {
    if !is_canary_identity(found)
        || is_canary_identity(identity)
        || identity.version != found.version
    {
        return None;
    }
    Some(GraphIdentity {
        parts: lane_parts(found),
        state: String::new(),
        ..found.clone()
    })
}

/// Restoring a canary dataflow's checkpoint with the new version alone (a promotion: the
/// graph is the canary's version, `identity.version == manifest.graph.version`): the new
/// version's parts are taken under their own names, the current version's dropped. Changes
/// `manifest` and `restored` in place and returns the operators and sinks whose stored tables
/// hold the current version's state (cleared and written afresh by their first checkpoint);
/// `None` when `manifest` is not a canary's or the graph is not its new version.
pub fn take_canary_lane(
    identity: &GraphIdentity,
    manifest: &mut Manifest,
    restored: &mut HashMap<String, RestoredTable>,
) -> Option<BTreeSet<String>> {
    if !is_canary(manifest)
        || is_canary_identity(identity)
        || identity.version != manifest.graph.version
    {
        return None;
    }
    let mut wipe = BTreeSet::new();
    let parts = lane_parts(&manifest.graph);
    let old_parts = std::mem::take(&mut manifest.graph.parts);
    // Tables: the canary's entries under the plain names, the current's gone.
    let names: Vec<String> = restored.keys().cloned().collect();
    for cf in names {
        if cf.starts_with(CANARY_PREFIX) {
            continue;
        }
        if old_parts
            .iter()
            .any(|(k, p)| !k.starts_with("sink/") && p.tables.contains(&cf))
        {
            restored.remove(&cf);
        }
    }
    let canary_tables: Vec<String> = restored
        .keys()
        .filter(|cf| cf.starts_with(CANARY_PREFIX))
        .cloned()
        .collect();
    for cf in canary_tables {
        if let Some(entries) = restored.remove(&cf) {
            let own = cf[CANARY_PREFIX.len()..].to_string();
            if let Some((node, _)) = own.split_once('/') {
                wipe.insert(node.to_string());
            }
            restored.insert(own, entries);
        }
    }
    for (key, _) in old_parts.iter().filter(|(k, _)| k.starts_with("operator/")) {
        if let Some(name) = key.strip_prefix("operator/") {
            if !name.starts_with(CANARY_PREFIX) {
                wipe.insert(name.to_string());
            }
        }
    }
    // Source positions: the canary's.
    let sources: Vec<String> = manifest.sources.keys().cloned().collect();
    let mut positions = std::collections::BTreeMap::new();
    for name in sources {
        if let Some(own) = name.strip_prefix(CANARY_PREFIX) {
            if let Some(p) = manifest.sources.get(&name) {
                positions.insert(own.to_string(), p.clone());
            }
        }
    }
    manifest.sources = positions.into_iter().collect();
    // The state plan from here on compares the new version with its own parts.
    manifest.graph.parts = parts;
    manifest.graph.state = String::new();
    Some(wipe)
}

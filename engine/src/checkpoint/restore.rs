//! Opening a run's data directory: which directory is this process's, which checkpoint it
//! resumes from, and the stored state read back for the workers (see [`super::layout`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use tickflow_state::Store;

use super::layout::{self, Reshape};
use super::{list_markers, state_tables, DataDir, GraphIdentity, Manifest};
use crate::cluster::{Cluster, Peers};
use crate::render::RestoredTable;
use crate::{EngineError, Plan};

/// This process's data directory, opened for a run.
pub struct Opened {
    /// Its own directory.
    pub dir: Arc<DataDir>,
    /// The checkpoint resumed from (merged from every process's marker in a cluster).
    pub manifest: Option<Manifest>,
    /// Stored entries by `operator/table` as of `manifest`.
    pub restored: HashMap<String, RestoredTable>,
    /// The checkpoint came from another shape: its state is not in `dir` yet.
    pub reshape: Option<Reshape>,
    /// Nodes whose stored tables hold another version's state, which they do not continue:
    /// cleared by their first checkpoint (see [`continued_only`]).
    pub wipe: BTreeSet<String>,
    /// Sinks (and a canary's sources) that start afresh where another version's checkpoint
    /// is continued.
    pub fresh: BTreeSet<String>,
    /// Every restored part writes its whole state at its first checkpoint (it was stored
    /// under another name, see [`crate::canary::take_canary_lane`]).
    pub rewrite: bool,
}

/// Opens the data directory `root` for `plan` on `workers` workers (of every process, in
/// `cluster`), pins the plan's reference copies to it, and reads back the checkpoint to resume
/// from. In a cluster, process 0 settles the layout first and tells the others.
pub fn open(
    plan: &mut Arc<Plan>,
    root: &Path,
    (fresh, adopt): (bool, bool),
    cluster: Option<(&Cluster, &mut Peers)>,
    workers: usize,
) -> Result<Opened, EngineError> {
    let identity = GraphIdentity::of(plan);
    let (process, processes) = cluster
        .as_ref()
        .map_or((0, 1), |c| (c.0.process, c.0.processes()));
    let decided = if process == 0 {
        layout::resolve(root, &identity, (processes, workers), fresh)
    } else {
        Ok(None)
    };
    let (reshape, cluster) = match cluster {
        None => (decided?, None),
        Some((c, peers)) => {
            let told: Result<Option<Reshape>, String> = decided
                .as_ref()
                .map(Clone::clone)
                .map_err(|e| e.to_string());
            let all = peers.exchange(&encode("layout decision", &told)?)?;
            // Process 0 fails with its own error; the others with what it said.
            let reshape = decided?;
            let from_0: Result<Option<Reshape>, String> = all
                .first()
                .map(|b| serde_json::from_slice(b))
                .transpose()
                .map_err(|e| EngineError::Checkpoint(format!("process 0's layout decision: {e}")))?
                .unwrap_or(Ok(None));
            let reshape = match process {
                0 => reshape,
                _ => from_0.map_err(|why| {
                    EngineError::Checkpoint(format!("process 0 could not open the data dir: {why}"))
                })?,
            };
            (reshape, Some((c, peers)))
        }
    };
    let own = match &cluster {
        Some((c, _)) => layout::process_dir(root, c.process),
        None => root.to_path_buf(),
    };
    let dir = Arc::new(DataDir::open(
        &own,
        plan,
        fresh || reshape.is_some(),
        adopt,
    )?);
    let tables: Vec<String> = checkpointed_tables(plan).into_iter().map(|t| t.1).collect();
    let (manifest, restored) = match &reshape {
        Some(r) => {
            let (manifest, restored, old) = read_generation(r, plan, &tables, adopt)?;
            tracing::info!(
                "restoring checkpoint {} of {} process(es) x {} worker(s) on {processes} x \
                 {workers} from {}",
                r.id,
                r.processes,
                r.workers,
                r.from.display()
            );
            // The reference copies the old shape joined with, then stored in the new directory.
            *plan = Arc::new(pin_to_data_dir(plan, &old)?);
            (Some(manifest), restored)
        }
        None => {
            let manifest = match cluster {
                Some((c, peers)) => agree_restore(&dir, c, peers, workers)?,
                None => dir.prepare_restore()?,
            };
            let mut restored = HashMap::new();
            if let Some(m) = &manifest {
                // A promoted canary's new version also reads the canary's own tables.
                let lane: Vec<String> = crate::canary::lane_of(&identity, &m.graph)
                    .map(|_| {
                        tables
                            .iter()
                            .map(|t| format!("{}{t}", crate::canary::CANARY_PREFIX))
                            .collect()
                    })
                    .unwrap_or_default();
                for cf in tables.iter().chain(&lane).cloned() {
                    let mut entries = Vec::new();
                    load(&dir.store, &cf, m.id, |k, v| {
                        entries.push((k.to_vec(), v.to_vec()));
                        Ok(())
                    })?;
                    restored.insert(cf, entries);
                }
            }
            (manifest, restored)
        }
    };
    *plan = Arc::new(pin_to_data_dir(plan, &dir)?);
    let (mut manifest, mut restored) = (manifest, restored);
    // A promoted canary: the new version takes its lane of the canary's checkpoint.
    let lane = manifest
        .as_mut()
        .and_then(|m| crate::canary::take_canary_lane(&identity, m, &mut restored));
    let (mut wipe, fresh) = match manifest.as_mut() {
        Some(m) => continued_only(&identity, m, &mut restored),
        None => Default::default(),
    };
    let rewrite = lane.is_some();
    wipe.extend(lane.into_iter().flatten());
    Ok(Opened {
        dir,
        manifest,
        restored,
        reshape,
        wipe,
        fresh,
        rewrite,
    })
}

/// Restoring another version's checkpoint: drops from the restore what this version does not
/// continue ([`crate::state_plan`]): the tables and sink positions of parts it replaced or no
/// longer has. Returns the replaced nodes (same names, so their tables hold the old state
/// until their first checkpoint clears them) and the sinks that start afresh.
fn continued_only(
    identity: &GraphIdentity,
    manifest: &mut Manifest,
    restored: &mut HashMap<String, RestoredTable>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    use crate::state_plan::Fate;
    let (mut wipe, mut fresh) = (BTreeSet::new(), BTreeSet::new());
    if identity.same_graph(&manifest.graph) {
        return (wipe, fresh);
    }
    let Some(plan) = identity.state_plan(&manifest.graph) else {
        return (wipe, fresh);
    };
    if plan.parts.iter().all(|p| p.fate == Fate::Kept) {
        return (wipe, fresh);
    }
    eprintln!(
        "continuing checkpoint {} of graph `{}` v{}; its state, part by part:",
        manifest.id, manifest.graph.name, manifest.graph.version
    );
    for line in plan.lines() {
        eprintln!("  {line}");
    }
    for p in plan.parts.iter().filter(|p| p.fate != Fate::Kept) {
        for table in &p.tables {
            restored.remove(table);
        }
        let Some((kind, name)) = p.part.split_once('/') else {
            continue;
        };
        if kind == "sink" {
            manifest.sinks.remove(name);
            fresh.insert(name.to_string());
        }
        // Only a canary's own sources can start afresh where state continues.
        if kind == "source" {
            manifest.sources.remove(name);
            fresh.insert(name.to_string());
        }
        if p.fate == Fate::Replaced && !p.tables.is_empty() {
            wipe.insert(name.to_string());
        }
    }
    (wipe, fresh)
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec(value).map_err(|source| EngineError::Encode {
        what: what.to_string(),
        source,
    })
}

fn load(
    store: &Store,
    cf: &str,
    as_of: u64,
    f: impl FnMut(&[u8], &[u8]) -> Result<(), tickflow_state::StateError>,
) -> Result<(), EngineError> {
    store
        .load(cf, as_of, f)
        .map_err(|source| EngineError::State {
            part: format!("restoring {cf}"),
            source,
        })
}

/// Reads checkpoint `r.id` of the old shape: every process's marker merged, every table's
/// entries of every process (each key is written by the one worker that owns it, so the
/// processes' tables never overlap), and process 0's directory (for the reference copies).
fn read_generation(
    r: &Reshape,
    plan: &Plan,
    tables: &[String],
    adopt: bool,
) -> Result<(Manifest, HashMap<String, RestoredTable>, DataDir), EngineError> {
    let identity = GraphIdentity::of(plan);
    let mut merged: Option<Manifest> = None;
    let mut union: BTreeMap<&str, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    let mut first = None;
    for (j, dir) in r.dirs() {
        let marker = list_markers(&dir)?
            .into_iter()
            .filter_map(|m| m.manifest.ok())
            .find(|m| m.id == r.id)
            .ok_or_else(|| {
                EngineError::Checkpoint(format!(
                    "{}: no marker for checkpoint {} (restoring on another shape reads every \
                     process's directory: they must all be under one shared --data-dir)",
                    dir.display(),
                    r.id
                ))
            })?;
        // As for one directory (see `DataDir::open`): another version only when adopting.
        let takes =
            identity.same_graph(&marker.graph) || (adopt && identity.can_restore(&marker.graph));
        if !takes {
            return Err(EngineError::Checkpoint(format!(
                "{}: checkpoint {} was made by graph `{}` v{}, not by this graph (a version \
                 whose state has the same shape is taken only when adopting it)",
                dir.display(),
                r.id,
                marker.graph.name,
                marker.graph.version
            )));
        }
        match merged.as_mut() {
            Some(m) => m.merge(&marker),
            None => merged = Some(marker),
        }
        let state = dir.join("state");
        let store = Store::open_read_only(&state).map_err(|source| EngineError::State {
            part: state.display().to_string(),
            source,
        })?;
        for cf in tables {
            let into = union.entry(cf.as_str()).or_default();
            load(&store, cf, r.id, |k, v| {
                match into.insert(k.to_vec(), v.to_vec()) {
                    Some(other) if other != v => Err(tickflow_state::StateError::Corrupt(format!(
                        "process {j} stored a key another process also stored, with another value"
                    ))),
                    _ => Ok(()),
                }
            })?;
        }
        if j == 0 {
            first = Some(DataDir {
                path: dir.clone(),
                store: Arc::new(store),
                identity: identity.clone(),
                config: plan.checkpoint,
            });
        }
    }
    let (Some(manifest), Some(first)) = (merged, first) else {
        return Err(EngineError::Checkpoint(format!(
            "{}: the old shape has no process",
            r.from.display()
        )));
    };
    let restored = union
        .into_iter()
        .map(|(cf, entries)| (cf.to_string(), entries.into_iter().collect()))
        .collect();
    Ok((manifest, restored, first))
}

/// The tables saved at every checkpoint (not those a component writes once per data
/// directory, such as enrich's reference copy), projection sinks' included.
pub fn checkpointed_tables(plan: &Plan) -> Vec<(String, String, &'static str)> {
    let once: BTreeSet<&str> = plan
        .operators
        .iter()
        .filter(|o| !o.component.checkpointed())
        .map(|o| o.name.as_str())
        .collect();
    state_tables(plan)
        .into_iter()
        .filter(|t| !once.contains(t.0.as_str()))
        .collect()
}

/// Lets every operator pin what it read at validation to what the data directory stored.
fn pin_to_data_dir(plan: &Plan, dir: &DataDir) -> Result<Plan, EngineError> {
    let mut plan = plan.clone();
    for op in &mut plan.operators {
        if let Some(pinned) = op.component.pin(&op.name, dir)? {
            op.component = pinned;
        }
    }
    Ok(plan)
}

/// In a cluster: agrees with the other processes on the newest checkpoint every one of them
/// has a marker for, prepares this process's directory to restore it, and returns the marker
/// merged from every process's (what one coordinator would have written).
fn agree_restore(
    dir: &DataDir,
    cluster: &Cluster,
    peers: &mut Peers,
    workers: usize,
) -> Result<Option<Manifest>, EngineError> {
    let mine = dir.usable_markers()?;
    let lists: Vec<Vec<(u64, usize, usize)>> = peers
        .exchange(&encode("marker list", &mine)?)?
        .iter()
        .map(|b| serde_json::from_slice(b))
        .collect::<Result<_, _>>()
        .map_err(|e| EngineError::Checkpoint(format!("a peer's marker list: {e}")))?;
    // Checked on every process before any drops anything: a checkpoint of another shape that
    // process 0 could not move (it does not see every process's directory).
    if let Some((id, processes, of)) = lists
        .iter()
        .flatten()
        .find(|(_, p, w)| (*p, *w) != (cluster.processes(), workers))
    {
        return Err(EngineError::Checkpoint(format!(
            "checkpoint {id} in this data dir was taken by {processes} process(es) of {of} \
             worker(s); restoring it on {} of {workers} moves state between processes, which \
             needs every process's directory under one shared --data-dir (process 0 does not \
             see them all): run that shape, share the directory, or start over with --fresh",
            cluster.processes()
        )));
    }
    let ids: Vec<Vec<u64>> = lists
        .iter()
        .map(|l| l.iter().map(|m| m.0).collect())
        .collect();
    let agreed = ids
        .get(cluster.process)
        .into_iter()
        .flatten()
        .copied()
        .filter(|id| ids.iter().all(|l| l.contains(id)))
        .max();
    if agreed.is_none() && ids.iter().any(|l| !l.is_empty()) {
        tracing::warn!(
            "no checkpoint is complete on every process (markers per process: {ids:?}); \
             starting from the beginning"
        );
    }
    let Some(own) = dir.prepare_restore_at(agreed)? else {
        return Ok(None);
    };
    let mut merged = own.clone();
    for (j, bytes) in peers.exchange(&encode("marker", &own)?)?.iter().enumerate() {
        if j != cluster.process {
            let theirs: Manifest = serde_json::from_slice(bytes)
                .map_err(|e| EngineError::Checkpoint(format!("process {j}'s marker: {e}")))?;
            merged.merge(&theirs);
        }
    }
    Ok(Some(merged))
}

//! Where a data directory keeps each process's state, and how a checkpoint moves to another
//! cluster shape.
//!
//! One process keeps its state in the directory itself (`graph.json`, `state/`,
//! `checkpoints/`); process `I` of a cluster in `process-I/`. The processes of one shape are a
//! **generation**. A checkpoint is restored by the same shape from each process's own
//! directory (they may be on separate volumes). A restore on another shape (another number of
//! processes or of workers per process) needs every process's directory under one shared
//! directory (a shared volume), because state moves between processes:
//!
//! 1. process 0 moves the generation that took the checkpoint into `reshape-<id>/process-J/`
//!    (a one-process directory becomes `process-0`), through `.reshape-moving/`, which names
//!    the checkpoint first, so a crash in the middle is finished by the next start;
//! 2. every process of the new shape starts an empty directory, reads the entries of every
//!    old process's tables as of the checkpoint, takes the share its workers own, and writes
//!    that whole share in its first checkpoint;
//! 3. once the new generation has a checkpoint complete on every process, process 0 deletes
//!    `reshape-<id>` (renamed to `.reshape-retired` first, so a crash leaves nothing that
//!    looks like a pending reshape). Until then every start takes the checkpoint from
//!    `reshape-<id>` again, on whatever shape it runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{io, list_markers, sync_dir, write_atomic};
use super::{GraphIdentity, Manifest};
use crate::EngineError;

/// What a one-process data directory holds in its own folder.
const FLAT_ITEMS: [&str; 3] = ["graph.json", "state", "checkpoints"];
const PROCESS_PREFIX: &str = "process-";
const RESHAPE_PREFIX: &str = "reshape-";
const MOVING: &str = ".reshape-moving";
const RETIRED: &str = ".reshape-retired";
const MOVING_NOTE: &str = "checkpoint.json";

/// Process `index`'s own directory in a cluster's data directory.
pub fn process_dir(root: &Path, index: usize) -> PathBuf {
    root.join(format!("{PROCESS_PREFIX}{index}"))
}

/// The cluster process directories under `root` (`process-<index>`), by index.
pub fn process_dirs(root: &Path) -> Result<Vec<(usize, PathBuf)>, EngineError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(root, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io(root, e))?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PROCESS_PREFIX))
            .and_then(|i| i.parse::<usize>().ok());
        if let (Some(i), true) = (index, path.is_dir()) {
            out.push((i, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `root` holds a one-process run's state.
pub fn is_flat(root: &Path) -> bool {
    FLAT_ITEMS.iter().any(|item| root.join(item).exists())
}

/// Every readable marker of the process directories `dirs`, by checkpoint id: per id, the
/// marker of each process that wrote one.
pub fn markers_by_id(
    dirs: &[(usize, PathBuf)],
) -> Result<BTreeMap<u64, BTreeMap<usize, Manifest>>, EngineError> {
    let mut by_id: BTreeMap<u64, BTreeMap<usize, Manifest>> = BTreeMap::new();
    for (i, path) in dirs {
        for m in list_markers(path)? {
            if let Ok(man) = m.manifest {
                by_id.entry(man.id).or_default().insert(*i, man);
            }
        }
    }
    Ok(by_id)
}

/// Whether every process of the shape that took a checkpoint has a marker for it, all of that
/// one shape.
pub fn is_complete(markers: &BTreeMap<usize, Manifest>) -> bool {
    markers.values().next().is_some_and(|first| {
        let shape = (first.processes, first.workers);
        markers.len() == first.processes
            && (0..first.processes).all(|i| {
                markers
                    .get(&i)
                    .is_some_and(|m| (m.processes, m.workers) == shape)
            })
    })
}

/// A checkpoint to restore on another shape than the one that took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reshape {
    /// The old generation: `process-J` for each of its processes.
    pub from: PathBuf,
    /// The checkpoint.
    pub id: u64,
    /// The shape that took it: processes, and workers per process.
    pub processes: usize,
    pub workers: usize,
}

impl Reshape {
    /// The old generation's process directories.
    pub fn dirs(&self) -> Vec<(usize, PathBuf)> {
        (0..self.processes)
            .map(|j| (j, process_dir(&self.from, j)))
            .collect()
    }
}

/// The generation on disk under `root`: the folder itself for a one-process directory, the
/// process directories of a cluster's (empty if there is none).
fn generation(root: &Path) -> Result<Vec<(usize, PathBuf)>, EngineError> {
    let processes = process_dirs(root)?;
    match (is_flat(root), processes.is_empty()) {
        (false, _) => Ok(processes),
        (true, true) => Ok(vec![(0, root.to_path_buf())]),
        (true, false) => Err(EngineError::Checkpoint(format!(
            "data dir {} holds both a one-process run's state and a cluster's (process-0, ...); \
             move one of them elsewhere",
            root.display()
        ))),
    }
}

/// The newest checkpoint complete on every process of the generation `dirs` (if every one of
/// them is here to tell), whichever graph took it.
fn newest_complete(dirs: &[(usize, PathBuf)]) -> Result<Option<Manifest>, EngineError> {
    Ok(markers_by_id(dirs)?
        .into_values()
        .rev()
        .find(is_complete)
        .and_then(|markers| markers.into_values().next()))
}

/// The pending reshape under `root` (`reshape-<id>`), if any.
pub fn pending(root: &Path) -> Result<Option<Reshape>, EngineError> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(root, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io(root, e))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(RESHAPE_PREFIX))
        {
            found.push(path);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => read_note(&one.join(MOVING_NOTE)).map(|r| {
            Some(Reshape {
                from: one.clone(),
                ..r
            })
        }),
        more => Err(EngineError::Checkpoint(format!(
            "data dir {} holds {} pending reshapes ({}); keep the newest, delete the others",
            root.display(),
            more.len(),
            more.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn read_note(path: &Path) -> Result<Reshape, EngineError> {
    let bytes = fs::read(path).map_err(|e| io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::Checkpoint(format!("{}: unreadable: {e}", path.display())))
}

fn remove(path: &Path) -> Result<(), EngineError> {
    let gone = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match gone {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

/// Deletes the generation on disk under `root` (both layouts).
fn clear_generation(root: &Path) -> Result<(), EngineError> {
    for (_, dir) in process_dirs(root)? {
        remove(&dir)?;
    }
    for item in FLAT_ITEMS {
        remove(&root.join(item))?;
    }
    Ok(())
}

/// Moves the generation under `root` into `.reshape-moving/` (after the note naming the
/// checkpoint), then renames that to `reshape-<id>`. Also finishes a move a crash interrupted.
fn move_generation(root: &Path, note: Option<&Reshape>) -> Result<Reshape, EngineError> {
    let moving = root.join(MOVING);
    let note_path = moving.join(MOVING_NOTE);
    let note = match note {
        Some(n) => {
            fs::create_dir_all(&moving).map_err(|e| io(&moving, e))?;
            let bytes = serde_json::to_vec_pretty(n).map_err(|source| EngineError::Encode {
                what: note_path.display().to_string(),
                source,
            })?;
            write_atomic(&note_path, &bytes)?;
            n.clone()
        }
        None => read_note(&note_path)?,
    };
    if is_flat(root) {
        let target = process_dir(&moving, 0);
        fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
        for item in FLAT_ITEMS {
            let from = root.join(item);
            if from.exists() {
                fs::rename(&from, target.join(item)).map_err(|e| io(&from, e))?;
            }
        }
    }
    for (j, dir) in process_dirs(root)? {
        fs::rename(&dir, process_dir(&moving, j)).map_err(|e| io(&dir, e))?;
    }
    let to = root.join(format!("{RESHAPE_PREFIX}{}", note.id));
    fs::rename(&moving, &to).map_err(|e| io(&moving, e))?;
    sync_dir(root)?;
    Ok(Reshape { from: to, ..note })
}

/// Deletes a pending reshape's old generation once the new one no longer needs it.
pub fn retire(from: &Path) -> Result<(), EngineError> {
    let Some(root) = from.parent() else {
        return Ok(());
    };
    let retired = root.join(RETIRED);
    remove(&retired)?;
    fs::rename(from, &retired).map_err(|e| io(from, e))?;
    sync_dir(root)?;
    remove(&retired)
}

/// Run by the only process, or by process 0 of a cluster before the others open their
/// directories: settles the data directory `root` for a run of `processes` x `workers` of the
/// graph `identity`, and says whether the run restores a checkpoint of another shape. Without
/// one, each process restores from its own directory (in a cluster, on the checkpoint the
/// processes agree on). With `fresh`, everything is deleted.
pub fn resolve(
    root: &Path,
    identity: &GraphIdentity,
    (processes, workers): (usize, usize),
    fresh: bool,
) -> Result<Option<Reshape>, EngineError> {
    fs::create_dir_all(root).map_err(|e| io(root, e))?;
    remove(&root.join(RETIRED))?;
    if fresh {
        remove(&root.join(MOVING))?;
        if let Some(p) = pending(root)? {
            remove(&p.from)?;
        }
        clear_generation(root)?;
        return Ok(None);
    }
    if root.join(MOVING).exists() {
        if root.join(MOVING).join(MOVING_NOTE).exists() {
            move_generation(root, None)?;
        } else {
            // Nothing was moved before the note.
            remove(&root.join(MOVING))?;
        }
    }
    let current = generation(root)?;
    let newest = newest_complete(&current)?;
    if let Some(p) = pending(root)? {
        if newest.as_ref().is_some_and(|m| m.id > p.id) {
            tracing::info!(
                "{}: the new shape has committed past checkpoint {}; deleting the old shape's state",
                root.display(),
                p.id
            );
            retire(&p.from)?;
        } else {
            // What the new shape wrote never completed: it takes the checkpoint again.
            clear_generation(root)?;
            return Ok(Some(p));
        }
    }
    let one = processes == 1;
    let flat = current.first().is_some_and(|(_, d)| d == root);
    match newest {
        // The same shape restores from each process's own directory; so does one process of
        // another worker count (its one store holds every worker's state).
        Some(m) if (m.processes, m.workers) == (processes, workers) || (one && flat) => Ok(None),
        // Neither moved nor deleted (the same shape is refused by `DataDir::open`).
        Some(m) if !identity.can_restore(&m.graph) => Err(EngineError::Checkpoint(format!(
            "data dir {} holds the state of graph `{}` v{}, not of this graph `{}` v{}; use \
             another --data-dir, or --fresh to discard that state",
            root.display(),
            m.graph.name,
            m.graph.version,
            identity.name,
            identity.version
        ))),
        Some(m) => {
            let note = Reshape {
                from: PathBuf::new(),
                id: m.id,
                processes: m.processes,
                workers: m.workers,
            };
            eprintln!(
                "checkpoint {} was taken by {} process(es) x {} worker(s); restoring it on {} \
                 x {workers}: moving its state to {}",
                m.id,
                m.processes,
                m.workers,
                processes,
                root.join(format!("{RESHAPE_PREFIX}{}", m.id)).display()
            );
            move_generation(root, Some(&note)).map(Some)
        }
        None if current.is_empty() => Ok(None),
        // A layout that is not this run's, with no checkpoint complete on every process of
        // it: nothing to restore from (on separate volumes, the cluster's own agreement
        // decides; see `agree_restore`).
        None if (one && !flat) || (!one && flat) => {
            eprintln!(
                "warning: data dir {} holds no checkpoint complete on every process of the \
                 run that wrote it; starting from the beginning",
                root.display()
            );
            clear_generation(root)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{encode_manifest, manifest_name};
    use super::super::MANIFEST_FORMAT;
    use super::*;

    fn identity() -> GraphIdentity {
        GraphIdentity {
            name: "g".into(),
            version: 1,
            fingerprint: "f".into(),
            state: "s".into(),
            parts: BTreeMap::new(),
        }
    }

    /// A commit marker for checkpoint `id` of a `processes` x `workers` run in `dir`.
    fn marker(dir: &Path, id: u64, (processes, workers): (usize, usize)) {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            id,
            complete: false,
            graph: identity(),
            created_at: String::new(),
            workers,
            processes,
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            operators: BTreeMap::new(),
            align_ms: 0.0,
            write_ms: 0.0,
        };
        fs::create_dir_all(dir.join("checkpoints")).unwrap();
        fs::write(
            dir.join("checkpoints").join(manifest_name(id)),
            encode_manifest(&m).unwrap(),
        )
        .unwrap();
    }

    /// A two-process generation with checkpoint 10 on both and 20 on process 0 only.
    fn two_processes(root: &Path) {
        for j in 0..2 {
            marker(&process_dir(root, j), 10, (2, 1));
        }
        marker(&process_dir(root, 0), 20, (2, 1));
    }

    #[test]
    fn the_same_shape_restores_from_its_own_directories_another_moves_the_newest_complete() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        two_processes(root);
        assert_eq!(resolve(root, &identity(), (2, 1), false).unwrap(), None);
        let r = resolve(root, &identity(), (3, 1), false).unwrap().unwrap();
        assert_eq!((r.id, r.processes, r.workers), (10, 2, 1));
        assert_eq!(r.from, root.join("reshape-10"));
        assert!(process_dirs(root).unwrap().is_empty());
        assert!(process_dir(&r.from, 1).join("checkpoints").is_dir());
        // Started again before the new shape committed (on any shape): the same checkpoint,
        // and whatever the interrupted new shape wrote is discarded.
        marker(&process_dir(root, 0), 30, (3, 1));
        assert_eq!(
            resolve(root, &identity(), (1, 2), false).unwrap(),
            Some(r.clone())
        );
        assert!(process_dirs(root).unwrap().is_empty());
        // Once the new shape has a checkpoint on all its processes, the old one is deleted.
        for j in 0..3 {
            marker(&process_dir(root, j), 30, (3, 1));
        }
        assert_eq!(resolve(root, &identity(), (3, 1), false).unwrap(), None);
        assert!(!r.from.exists() && pending(root).unwrap().is_none());
    }

    #[test]
    fn a_move_interrupted_by_a_crash_is_finished_at_the_next_start() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        two_processes(root);
        // The crash came after the note and the first process's move.
        let moving = root.join(MOVING);
        fs::create_dir_all(&moving).unwrap();
        let note = Reshape {
            from: PathBuf::new(),
            id: 10,
            processes: 2,
            workers: 1,
        };
        fs::write(moving.join(MOVING_NOTE), serde_json::to_vec(&note).unwrap()).unwrap();
        fs::rename(process_dir(root, 0), process_dir(&moving, 0)).unwrap();
        let r = resolve(root, &identity(), (1, 1), false).unwrap().unwrap();
        assert_eq!(r.id, 10);
        assert!(process_dir(&r.from, 0).is_dir() && process_dir(&r.from, 1).is_dir());
        assert!(!moving.exists());
        // Before the note, nothing had moved: the move starts over.
        let root2 = tempfile::tempdir().unwrap();
        two_processes(root2.path());
        fs::create_dir_all(root2.path().join(MOVING)).unwrap();
        let r = resolve(root2.path(), &identity(), (3, 1), false)
            .unwrap()
            .unwrap();
        assert_eq!(r.id, 10);
    }

    #[test]
    fn a_one_process_directory_moves_as_process_0_and_fresh_deletes_every_shape() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        marker(root, 10, (1, 2));
        fs::write(root.join("graph.json"), "{}").unwrap();
        // Another worker count on one process keeps its one store.
        assert_eq!(resolve(root, &identity(), (1, 4), false).unwrap(), None);
        let r = resolve(root, &identity(), (2, 1), false).unwrap().unwrap();
        assert_eq!((r.id, r.processes, r.workers), (10, 1, 2));
        assert!(!is_flat(root));
        assert!(process_dir(&r.from, 0).join("graph.json").exists());
        assert_eq!(resolve(root, &identity(), (2, 1), true).unwrap(), None);
        assert!(pending(root).unwrap().is_none());
        // Another graph's checkpoints are neither taken nor deleted.
        two_processes(root);
        let other = GraphIdentity {
            state: "t".into(),
            fingerprint: "h".into(),
            ..identity()
        };
        let err = resolve(root, &other, (1, 1), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds the state of graph `g` v1"), "{err}");
        assert!(process_dir(root, 1).is_dir());
    }
}

//! The data directory: which graph made it, its state store, its commit markers.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tickflow_state::Store;

use super::manifest::{
    encode_manifest, identity_bytes, io, list_markers, manifest_name, write_atomic, MarkerFile,
};
use super::{
    state_tables, CheckpointConfig, GraphIdentity, Manifest, ManifestError, FOLD_EVERY,
    MANIFEST_FORMAT,
};
use crate::plan::Plan;
use crate::EngineError;

/// An open data directory.
#[derive(Debug)]
pub struct DataDir {
    /// The folder.
    pub path: PathBuf,
    /// Operator state.
    pub store: Arc<Store>,
    /// The graph it belongs to.
    pub identity: GraphIdentity,
    /// The graph's checkpoint settings.
    pub config: CheckpointConfig,
}

impl DataDir {
    fn state_error(&self, source: tickflow_state::StateError) -> EngineError {
        EngineError::State {
            part: format!("{}/state", self.path.display()),
            source,
        }
    }

    /// Opens (or creates) `path` for `plan`. With `fresh`, earlier state and checkpoints are
    /// deleted first; otherwise a directory made by another graph is refused, unless `adopt`
    /// is set and it was made by a version of the graph whose state has the same shape (the
    /// control plane continuing a deployment with another version).
    pub fn open(
        path: &Path,
        plan: &Plan,
        fresh: bool,
        adopt: bool,
    ) -> Result<DataDir, EngineError> {
        let identity = GraphIdentity::of(plan);
        let id_file = path.join("graph.json");
        if fresh {
            for sub in ["state", "checkpoints"] {
                let p = path.join(sub);
                if p.exists() {
                    fs::remove_dir_all(&p).map_err(|e| io(&p, e))?;
                }
            }
            if id_file.exists() {
                fs::remove_file(&id_file).map_err(|e| io(&id_file, e))?;
            }
        }
        fs::create_dir_all(path.join("checkpoints")).map_err(|e| io(path, e))?;
        match fs::read(&id_file) {
            Ok(bytes) => {
                let found: GraphIdentity = serde_json::from_slice(&bytes).map_err(|e| {
                    EngineError::Checkpoint(format!("{}: unreadable: {e}", id_file.display()))
                })?;
                if !found.same_graph(&identity) && adopt && identity.can_restore(&found) {
                    tracing::info!(
                        "{}: continuing from the checkpoints of graph `{}` v{}",
                        path.display(),
                        found.name,
                        found.version
                    );
                    write_atomic(&id_file, &identity_bytes(&identity)?)?;
                } else if !found.same_graph(&identity) {
                    return Err(EngineError::Checkpoint(format!(
                        "data dir {} holds the state of graph `{}` v{} (fingerprint {}), not of \
                         this graph `{}` v{} (fingerprint {}); use another --data-dir, or \
                         --fresh to discard that state",
                        path.display(),
                        found.name,
                        found.version,
                        short(&found.fingerprint),
                        identity.name,
                        identity.version,
                        short(&identity.fingerprint),
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&id_file, &identity_bytes(&identity)?)?;
            }
            Err(e) => return Err(io(&id_file, e)),
        }
        let mut tables: Vec<String> = state_tables(plan).into_iter().map(|t| t.1).collect();
        // A promotion reads the tables a canary kept for the new version (see
        // `crate::canary::take_canary_lane`).
        let canary = crate::canary::CANARY_PREFIX;
        let lanes: Vec<String> = tables
            .iter()
            .filter(|t| !t.starts_with(canary))
            .map(|t| format!("{canary}{t}"))
            .filter(|t| !tables.contains(t))
            .collect();
        tables.extend(lanes);
        let store =
            Store::open(&path.join("state"), &tables).map_err(|source| EngineError::State {
                part: format!("{}/state", path.display()),
                source,
            })?;
        Ok(DataDir {
            path: path.to_path_buf(),
            store: Arc::new(store),
            identity,
            config: plan.checkpoint,
        })
    }

    /// Picks the newest usable checkpoint, drops whatever was saved after it, and returns it.
    /// Markers that are corrupt, truncated or newer than the state allows are skipped with a
    /// warning naming them (and renamed to `*.skipped`).
    pub fn prepare_restore(&self) -> Result<Option<Manifest>, EngineError> {
        let base = self.store.base_version().map_err(|e| self.state_error(e))?;
        let mut chosen = None;
        for marker in list_markers(&self.path)? {
            let problem = match &marker.manifest {
                // Written by another build: refused as a whole, nothing renamed.
                Err(ManifestError::Format(found)) => {
                    return Err(EngineError::Checkpoint(format!(
                        "data dir {} was checkpointed by a build that writes manifest format \
                         {found} ({}); this build reads format {MANIFEST_FORMAT} and does not \
                         migrate: use --fresh to start over, or the earlier build",
                        self.path.display(),
                        marker.path.display()
                    )));
                }
                Err(why) => why.to_string(),
                Ok(m) if !self.identity.can_restore(&m.graph) => {
                    "made by another graph".to_string()
                }
                Ok(m) if m.id < base => {
                    format!("older than the state kept (base checkpoint {base})")
                }
                Ok(m) => {
                    chosen = Some(m.clone());
                    break;
                }
            };
            tracing::warn!("skipping checkpoint {}: {problem}", marker.path.display());
            eprintln!(
                "warning: skipping checkpoint {}: {problem}",
                marker.path.display()
            );
            let skipped = marker.path.with_extension("skipped");
            fs::rename(&marker.path, &skipped).map_err(|e| io(&marker.path, e))?;
        }
        if chosen.is_none() && base > 0 {
            return Err(EngineError::Checkpoint(format!(
                "data dir {} holds state as of checkpoint {base} but no usable commit marker \
                 for it; use --fresh to start over",
                self.path.display()
            )));
        }
        let after = chosen.as_ref().map_or(0, |m| m.id);
        let dropped = self
            .store
            .discard_after(after)
            .map_err(|e| self.state_error(e))?;
        if !dropped.is_empty() {
            let labels: Vec<String> = dropped.iter().map(|l| l.to_string()).collect();
            eprintln!(
                "warning: discarding incomplete checkpoint(s) {} (no commit marker)",
                labels.join(", ")
            );
        }
        Ok(chosen)
    }

    /// The usable commit markers here, newest first, as `(id, processes, workers)`: what a
    /// cluster's processes tell each other at start, to agree on the newest checkpoint every
    /// one of them has, taken by the same shape.
    pub fn usable_markers(&self) -> Result<Vec<(u64, usize, usize)>, EngineError> {
        let base = self.store.base_version().map_err(|e| self.state_error(e))?;
        Ok(list_markers(&self.path)?
            .into_iter()
            .filter_map(|m| m.manifest.ok())
            .filter(|m| self.identity.can_restore(&m.graph) && m.id >= base)
            .map(|m| (m.id, m.processes, m.workers))
            .collect())
    }

    /// In a cluster: restores checkpoint `agreed`, the newest one every process has a marker
    /// for (`None`: there is none), dropping this process's markers and state after it (they
    /// were never complete on every process).
    pub fn prepare_restore_at(&self, agreed: Option<u64>) -> Result<Option<Manifest>, EngineError> {
        let base = self.store.base_version().map_err(|e| self.state_error(e))?;
        let keep = agreed.unwrap_or(0);
        if base > keep {
            return Err(EngineError::Checkpoint(format!(
                "data dir {} holds state folded through checkpoint {base}, past the newest \
                 checkpoint complete on every process ({}); use --fresh on every process to \
                 start over",
                self.path.display(),
                agreed.map_or("none".to_string(), |a| a.to_string())
            )));
        }
        let mut chosen = None;
        for marker in list_markers(&self.path)? {
            match &marker.manifest {
                Ok(m) if m.id > keep || agreed.is_none() => {
                    tracing::warn!(
                        "dropping checkpoint {}: not complete on every process",
                        marker.path.display()
                    );
                    fs::remove_file(&marker.path).map_err(|e| io(&marker.path, e))?;
                }
                Ok(m) if m.id == keep => chosen = Some(m.clone()),
                _ => {}
            }
        }
        if agreed.is_some() && chosen.is_none() {
            return Err(EngineError::Checkpoint(format!(
                "data dir {} has no usable marker for checkpoint {keep}",
                self.path.display()
            )));
        }
        self.store
            .discard_after(keep)
            .map_err(|e| self.state_error(e))?;
        Ok(chosen)
    }

    /// Writes the commit marker for `m` once the state log and the sink files are synced,
    /// then applies retention: keeps the newest `retain` markers and deletes older ones; once it
    /// is [`FOLD_EVERY`] intervals behind, state older than the oldest kept marker is folded into the base.
    /// Markers at or after `protect` are kept whatever their number (in a cluster, the newest
    /// checkpoint complete on every process), and nothing is folded past it.
    pub fn commit(
        &self,
        m: &Manifest,
        sink_files: &[PathBuf],
        protect: u64,
    ) -> Result<(), EngineError> {
        self.store.sync().map_err(|e| self.state_error(e))?;
        for path in sink_files {
            File::open(path)
                .and_then(|f| f.sync_data())
                .map_err(|e| io(path, e))?;
        }
        crate::fault::point("before-marker");
        let path = self.path.join("checkpoints").join(manifest_name(m.id));
        write_atomic(&path, &encode_manifest(m)?)?;
        crate::fault::point("after-marker");
        let markers = list_markers(&self.path)?;
        let valid: Vec<&MarkerFile> = markers.iter().filter(|f| f.manifest.is_ok()).collect();
        let keep = self.config.retain.max(1);
        if let Some(oldest_kept) = valid.get(keep - 1).and_then(|f| f.manifest.as_ref().ok()) {
            // Old markers go first, right after the new one is durable (a crash between the
            // two leaves one marker more than `retain`, never fewer), then the slow fold.
            let oldest_kept_id = oldest_kept.id.min(protect);
            for old in markers.iter().filter(|f| {
                f.manifest
                    .as_ref()
                    .map_or(true, |om| om.id < oldest_kept_id)
            }) {
                fs::remove_file(&old.path).map_err(|e| io(&old.path, e))?;
            }
            let base = self.store.base_version().map_err(|e| self.state_error(e))?;
            // Deltas of deleted markers stay readable (a restore reads base + every delta up to
            // its checkpoint), so folding can wait and batch many checkpoints into one pass.
            let batch = FOLD_EVERY.saturating_mul(self.config.interval_ms);
            if oldest_kept_id > base && oldest_kept_id - base >= batch {
                self.store
                    .fold_through(oldest_kept_id)
                    .map_err(|e| self.state_error(e))?;
            }
        }
        Ok(())
    }
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

//! `tickflow checkpoints list|inspect`: what a data directory holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tickflow_engine::checkpoint::{layout, list_markers, Manifest};
use tickflow_state::{Store, TableStats};

/// The per-process directories of a cluster's data directory (`process-<index>`), by index;
/// empty for a one-process data directory.
fn process_dirs(dir: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    if layout::is_flat(dir) {
        return Ok(Vec::new());
    }
    Ok(layout::process_dirs(dir)?)
}

/// A cluster's checkpoints: per id, the marker of every process that wrote one, newest first.
fn cluster_checkpoints(
    processes: &[(usize, PathBuf)],
) -> anyhow::Result<Vec<(u64, BTreeMap<usize, Manifest>)>> {
    Ok(layout::markers_by_id(processes)?
        .into_iter()
        .rev()
        .collect())
}

/// Says so when `dir` holds another shape's checkpoint not yet taken over by the current one.
fn note_pending(dir: &Path, json: bool) -> anyhow::Result<()> {
    if let (Some(r), false) = (layout::pending(dir)?, json) {
        println!(
            "pending: checkpoint {} of {} process(es) x {} worker(s) in {}, restored on another \
             shape; kept until the new shape commits one on every process",
            r.id,
            r.processes,
            r.workers,
            r.from.display()
        );
    }
    Ok(())
}

/// `list` for a cluster's data directory.
fn list_cluster(dir: &Path, processes: &[(usize, PathBuf)], json: bool) -> anyhow::Result<()> {
    let checkpoints = cluster_checkpoints(processes)?;
    if json {
        let rows: Vec<serde_json::Value> = checkpoints
            .iter()
            .map(|(id, markers)| {
                serde_json::json!({
                    "id": id,
                    "complete": layout::is_complete(markers),
                    "processes": markers.keys().collect::<Vec<_>>(),
                    "shape": markers.values().next().map(|m| (m.processes, m.workers)),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "cluster data dir {} ({} process directories)",
        dir.display(),
        processes.len()
    );
    println!(
        "{:<20} {:<26} {:<12} {:<16} complete",
        "id", "event time", "shape", "markers on"
    );
    for (id, markers) in &checkpoints {
        let Some(any) = markers.values().next() else {
            continue;
        };
        let on: Vec<String> = markers.keys().map(usize::to_string).collect();
        println!(
            "{:<20} {:<26} {:<12} {:<16} {}",
            id,
            any.time_label(),
            format!("{} x {}", any.processes, any.workers),
            on.join(","),
            if layout::is_complete(markers) {
                "yes"
            } else {
                "no"
            }
        );
    }
    Ok(())
}

/// Prints every commit marker of `dir`, newest first, usable or not; for a cluster's data
/// directory, every checkpoint with the processes that wrote a marker for it.
pub fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    note_pending(dir, json)?;
    let processes = process_dirs(dir)?;
    if !processes.is_empty() {
        return list_cluster(dir, &processes, json);
    }
    let markers = list_markers(dir)?;
    if json {
        let rows: Vec<serde_json::Value> = markers
            .iter()
            .map(|m| match &m.manifest {
                Ok(man) => serde_json::json!({"file": m.path, "ok": true, "manifest": man}),
                Err(why) => {
                    serde_json::json!({"file": m.path, "ok": false, "error": why.to_string()})
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if markers.is_empty() {
        println!("no checkpoints in {}", dir.display());
        return Ok(());
    }
    println!(
        "{:<20} {:<26} {:<26} {:>7} {:>12} {:>9}",
        "id", "event time", "written at", "workers", "state", "align ms"
    );
    for m in &markers {
        match &m.manifest {
            Ok(man) => {
                let entries: u64 = man.operators.values().map(|o| o.entries).sum();
                println!(
                    "{:<20} {:<26} {:<26} {:>7} {:>12} {:>9.1}",
                    man.id,
                    man.time_label(),
                    man.created_at,
                    man.workers,
                    entries,
                    man.align_ms
                );
            }
            Err(why) => println!("{:<20} unusable: {why}", m.path.display()),
        }
    }
    Ok(())
}

/// Prints one checkpoint: positions, sink lengths and per-table state sizes; of a cluster,
/// a checkpoint complete on every process, its markers merged and its tables summed.
pub fn inspect(dir: &Path, id: &str, json: bool) -> anyhow::Result<()> {
    let wanted = (id != "latest")
        .then(|| id.parse::<u64>())
        .transpose()
        .with_context(|| format!("checkpoint id {id:?} is not a number or `latest`"))?;
    let processes = process_dirs(dir)?;
    let (manifest, stores): (Manifest, Vec<PathBuf>) = if processes.is_empty() {
        let markers = list_markers(dir)?;
        match markers
            .iter()
            .filter_map(|m| m.manifest.as_ref().ok())
            .find(|m| wanted.is_none_or(|w| m.id == w))
        {
            Some(m) => (m.clone(), vec![dir.to_path_buf()]),
            None => bail!("no usable checkpoint {id} in {}", dir.display()),
        }
    } else {
        let Some((_, markers)) = cluster_checkpoints(&processes)?
            .into_iter()
            .find(|(i, markers)| layout::is_complete(markers) && wanted.is_none_or(|w| *i == w))
        else {
            bail!(
                "no checkpoint {id} complete on every process in {}",
                dir.display()
            );
        };
        let mut all = markers.into_iter();
        let Some((first_process, mut merged)) = all.next() else {
            bail!("no checkpoint {id} in {}", dir.display());
        };
        let mut dirs = vec![(first_process, merged.clone())];
        for (i, m) in all {
            merged.merge(&m);
            dirs.push((i, m));
        }
        let stores = dirs
            .iter()
            .filter_map(|(i, _)| processes.iter().find(|(p, _)| p == i))
            .map(|(_, path)| path.clone())
            .collect();
        (merged, stores)
    };
    let mut tables: Vec<(String, TableStats)> = Vec::new();
    for path in &stores {
        let store = Store::open_read_only(&path.join("state"))?;
        for table in store.tables() {
            let stats = store.stats(table, manifest.id)?;
            match tables.iter_mut().find(|(t, _)| t == table) {
                Some((_, sum)) => {
                    sum.entries += stats.entries;
                    sum.bytes += stats.bytes;
                }
                None => tables.push((table.clone(), stats)),
            }
        }
    }
    if json {
        let t: serde_json::Map<String, serde_json::Value> = tables
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    serde_json::json!({"entries": s.entries, "bytes": s.bytes}),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"manifest": manifest, "tables": t}))?
        );
        return Ok(());
    }
    let m = &manifest;
    println!("checkpoint {} ({})", m.id, m.time_label());
    println!(
        "  graph {} v{} (fingerprint {})",
        m.graph.name, m.graph.version, m.graph.fingerprint
    );
    if m.processes > 1 {
        println!(
            "  written at {} by {} process(es) of {} worker(s)",
            m.created_at, m.processes, m.workers
        );
    } else {
        println!("  written at {} by {} worker(s)", m.created_at, m.workers);
    }
    println!(
        "  align {:.1} ms (first save to commit), longest save {:.1} ms",
        m.align_ms, m.write_ms
    );
    println!("  sources:");
    for (name, p) in &m.sources {
        let wm = if p.watermark_ms == u64::MAX {
            "end of input".to_string()
        } else {
            tickflow_operators::record::format_ts_ms(p.watermark_ms)
        };
        let readers: Vec<String> = p
            .readers
            .iter()
            .map(|r| format!("{} {}", r.format, r.state))
            .collect();
        println!(
            "    {name:<20} watermark {wm}, position {}",
            readers.join(", ")
        );
    }
    println!("  sinks:");
    for (name, p) in &m.sinks {
        println!(
            "    {name:<20} {} lines, position {} {}",
            p.lines, p.writer.format, p.writer.state
        );
    }
    println!("  operator state (in memory at the checkpoint, then as stored):");
    for (name, o) in &m.operators {
        println!("    {name:<20} {} entries", o.entries);
    }
    for (table, s) in &tables {
        println!("    {table:<20} {} entries, {} bytes", s.entries, s.bytes);
    }
    Ok(())
}

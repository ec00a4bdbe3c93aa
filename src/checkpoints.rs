//! `tickflow checkpoints list|inspect`: what a data directory holds.

use std::path::Path;

use anyhow::{bail, Context};
use tickflow_engine::checkpoint::{list_markers, Manifest};
use tickflow_state::{Store, TableStats};

/// Prints every commit marker of `dir`, newest first, usable or not.
pub fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
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

/// Prints one checkpoint: positions, sink lengths and per-table state sizes.
pub fn inspect(dir: &Path, id: &str, json: bool) -> anyhow::Result<()> {
    let markers = list_markers(dir)?;
    let wanted = (id != "latest")
        .then(|| id.parse::<u64>())
        .transpose()
        .with_context(|| format!("checkpoint id {id:?} is not a number or `latest`"))?;
    let manifest: Manifest = match markers
        .iter()
        .filter_map(|m| m.manifest.as_ref().ok())
        .find(|m| wanted.is_none_or(|w| m.id == w))
    {
        Some(m) => m.clone(),
        None => bail!("no usable checkpoint {id} in {}", dir.display()),
    };
    let store = Store::open_read_only(&dir.join("state"))?;
    let mut tables: Vec<(String, TableStats)> = Vec::new();
    for table in store.tables() {
        tables.push((table.clone(), store.stats(table, manifest.id)?));
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
    println!("  written at {} by {} worker(s)", m.created_at, m.workers);
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

//! `tickflow diff OLD.toml NEW.toml --input FILE`: a backtest. Both versions run on the same
//! recorded input, their outputs redirected to files of their own, and a keyed diff of each
//! sink's records is printed (see `tickflow_engine::diff`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tickflow_engine::diff::{backtest_graph, diff_lines, Sample, SinkDiff};
use tickflow_engine::{compile_str, Metrics, RunOptions};

/// Flags of `tickflow diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The current version's graph TOML.
    old: PathBuf,
    /// The new version's graph TOML.
    new: PathBuf,
    /// The recorded input both read instead of their source (a file of raw ticks).
    #[arg(long)]
    input: PathBuf,
    /// Keep both versions' outputs here (`old/`, `new/`); by default a temporary directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads of each run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=512))]
    workers: u16,
    /// Differences shown per kind and sink.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Print the diff as JSON.
    #[arg(long)]
    json: bool,
}

/// One version run on the recording: its sinks' files by name, and what it read.
fn run_version(
    graph: &Path,
    input: &Path,
    out: &Path,
    workers: u16,
) -> anyhow::Result<(BTreeMap<String, PathBuf>, u64)> {
    let text =
        std::fs::read_to_string(graph).with_context(|| format!("reading {}", graph.display()))?;
    let file = graph.display().to_string();
    let (text, files) = backtest_graph(&text, &file, input, out)?;
    let plan = Arc::new(compile_str(&text, &file)?);
    let metrics = Arc::new(Metrics::for_plan(&plan));
    let options = RunOptions {
        workers: usize::from(workers),
        ..RunOptions::default()
    };
    let summary = tickflow_engine::run(plan, &options, metrics)
        .with_context(|| format!("running {} on {}", graph.display(), input.display()))?;
    Ok((files, summary.input_records))
}

fn lines(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Runs `tickflow diff`: exit 0 when the outputs are the same, 1 when they differ.
pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let input = std::path::absolute(&args.input)?;
    if !input.is_file() {
        anyhow::bail!("--input {}: no such file", input.display());
    }
    let temp = tempfile::tempdir()?;
    let root = match &args.out {
        Some(dir) => std::path::absolute(dir)?,
        None => temp.path().to_path_buf(),
    };
    let (old_files, read) = run_version(&args.old, &input, &root.join("old"), args.workers)?;
    let (new_files, _) = run_version(&args.new, &input, &root.join("new"), args.workers)?;
    let mut sinks: BTreeMap<String, SinkDiff> = BTreeMap::new();
    let mut unpaired = Vec::new();
    for (name, old_path) in &old_files {
        let Some(new_path) = new_files.get(name) else {
            unpaired.push(format!("sink `{name}` is only in the old version"));
            continue;
        };
        let (a, b) = (lines(old_path)?, lines(new_path)?);
        sinks.insert(name.clone(), diff_lines(a.lines(), b.lines(), args.samples));
    }
    unpaired.extend(
        new_files
            .keys()
            .filter(|n| !old_files.contains_key(*n))
            .map(|n| format!("sink `{n}` is only in the new version")),
    );
    let same = unpaired.is_empty() && sinks.values().all(SinkDiff::is_same);
    if args.json {
        let report = serde_json::json!({
            "old": args.old, "new": args.new, "input": input, "input_records": read,
            "same": same, "sinks": sinks, "unpaired_sinks": unpaired,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&args, &input, read, &sinks, &unpaired, same);
    }
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(
    args: &DiffArgs,
    input: &Path,
    read: u64,
    sinks: &BTreeMap<String, SinkDiff>,
    unpaired: &[String],
    same: bool,
) {
    println!(
        "backtest: {} (old) against {} (new) on {} ({read} input records)",
        args.old.display(),
        args.new.display(),
        input.display()
    );
    for (name, d) in sinks {
        if d.is_same() {
            println!("sink {name}: same ({} records)", d.matched);
            continue;
        }
        let fields: Vec<String> = d.fields.iter().map(|(f, n)| format!("{f} {n}")).collect();
        println!(
            "sink {name}: {} matched, {} differing{}, {} only in old, {} only in new",
            d.matched,
            d.differing,
            if fields.is_empty() {
                String::new()
            } else {
                format!(" (fields: {})", fields.join(", "))
            },
            d.only_old,
            d.only_new
        );
        for s in &d.samples {
            match s {
                Sample::Differs { key, fields } => {
                    let changes: Vec<String> = fields
                        .iter()
                        .map(|(f, a, b)| format!("{f} {a} -> {b}"))
                        .collect();
                    println!("  differs   {key}: {}", changes.join("; "));
                }
                Sample::OnlyOld { key, .. } => println!("  only old  {key}"),
                Sample::OnlyNew { key, .. } => println!("  only new  {key}"),
            }
        }
    }
    for u in unpaired {
        println!("{u}");
    }
    println!(
        "{}",
        if same {
            "no differences"
        } else {
            "the versions differ"
        }
    );
}

/// Flags of `tickflow plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The running version's graph TOML.
    old: PathBuf,
    /// The version to deploy.
    new: PathBuf,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `tickflow plan`: what deploying NEW over OLD does with each part's state.
pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    use tickflow_engine::state_plan::{parts_of, StatePlan};
    let compile = |path: &Path| -> anyhow::Result<tickflow_engine::Plan> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(compile_str(&text, &path.display().to_string())?)
    };
    let (old, new) = (compile(&args.old)?, compile(&args.new)?);
    let plan = StatePlan::between(&parts_of(&old), &parts_of(&new));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!(
            "state plan: {} v{} -> {} v{}",
            old.name, old.version, new.name, new.version
        );
        for line in plan.lines() {
            println!("  {line}");
        }
        println!(
            "{}",
            if plan.drops_state {
                "drops state: a deploy needs \"allow_state_loss\": true"
            } else {
                "keeps all state"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `tickflow diff OLD.toml NEW.toml --input FILE`: a backtest. Both versions run on the same
//! recorded input, their outputs redirected to files of their own, and a keyed diff of each
//! sink's records is printed (see `tickflow_engine::diff`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tickflow_engine::compile_str;
use tickflow_engine::diff::{backtest, Backtest, BacktestLimits, Sample, Version};
use tickflow_engine::policy::GraphPolicy;

/// Flags of `tickflow diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The current version's graph TOML.
    old: PathBuf,
    /// The new version's graph TOML.
    new: PathBuf,
    /// The recorded input both read instead of their source (a file of raw ticks).
    #[arg(
        long,
        required_unless_present = "kafka_range",
        conflicts_with = "kafka_range"
    )]
    input: Option<PathBuf>,
    /// Instead of `--input`: an offset range of the topic OLD's Kafka source reads,
    /// `PARTITION:FROM-TO[,...]` (`TO` exclusive), recorded first (in Kafka timestamp order).
    #[arg(long)]
    kafka_range: Option<String>,
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

/// Runs `tickflow diff`: exit 0 when the outputs are the same, 1 when they differ.
pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let temp = tempfile::tempdir()?;
    let root = match &args.out {
        Some(dir) => std::path::absolute(dir)?,
        None => temp.path().to_path_buf(),
    };
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (old_toml, new_toml) = (read(&args.old)?, read(&args.new)?);
    let (old_file, new_file) = (
        args.old.display().to_string(),
        args.new.display().to_string(),
    );
    let input = match (&args.input, &args.kafka_range) {
        (Some(input), _) => std::path::absolute(input)?,
        (None, Some(spec)) => {
            let ranges = tickflow_engine::diff::parse_kafka_range(spec)
                .map_err(|e| anyhow::anyhow!("--kafka-range {e}"))?;
            std::fs::create_dir_all(&root)?;
            let recorded = root.join("recorded.jsonl");
            let n = tickflow_engine::diff::record_kafka_range(
                (&old_toml, &old_file),
                &ranges,
                &recorded,
                u64::MAX,
            )?;
            eprintln!(
                "recorded {n} records of the range into {}",
                recorded.display()
            );
            recorded
        }
        (None, None) => anyhow::bail!("give --input or --kafka-range"),
    };
    if !input.is_file() {
        anyhow::bail!("--input {}: no such file", input.display());
    }
    let limits = BacktestLimits {
        workers: usize::from(args.workers),
        samples: args.samples,
        timeout: None,
    };
    let report = backtest(
        (
            Version {
                toml: &old_toml,
                file: &old_file,
            },
            Version {
                toml: &new_toml,
                file: &new_file,
            },
        ),
        &input,
        &root,
        &limits,
        &GraphPolicy::free(),
    )?;
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["old"] = serde_json::json!(args.old);
        json["new"] = serde_json::json!(args.new);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_text(&args, &report);
    }
    Ok(if report.same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(args: &DiffArgs, report: &Backtest) {
    println!(
        "backtest: {} (old) against {} (new) on {} ({} input records)",
        args.old.display(),
        args.new.display(),
        report.input.display(),
        report.input_records
    );
    for (name, d) in &report.sinks {
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
    for u in &report.unpaired_sinks {
        println!("{u}");
    }
    println!(
        "{}",
        if report.same {
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

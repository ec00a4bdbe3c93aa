//! The `tickflow` command: validate, draw, run, generate data for, and benchmark tick graphs;
//! serve the control API; read the event log.

mod bench;
mod bench_kafka;
mod checkpoints;
mod control;
mod diff_cmd;
mod gen;
mod kafka_cmd;
mod rollout_cmd;

/// mimalloc: the engine allocates and frees many small buffers per batch across worker
/// threads, where glibc malloc spent ~12 % of a run (perf); mimalloc's thread-local free
/// lists take about a third of that. Built without transparent huge pages (`no_thp`): with
/// them peak RSS grew with input length (81 MB on 1M ticks, 112 MB on 10M; 48 and 52 without).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tickflow_engine::{compile_file, EngineError, Metrics, RunOptions};

/// tickflow: a streaming dataflow engine for market-data ticks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// Every commit marker, newest first, with its event time and state size.
    List {
        /// The data directory.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One checkpoint: source positions, sink lengths, per-table state sizes.
    Inspect {
        /// The data directory.
        dir: PathBuf,
        /// Checkpoint id (event time in ms, as `list` shows it) or `latest`.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a graph without running it; lists every error with its TOML path and line.
    Validate {
        /// The graph TOML file.
        graph: PathBuf,
    },
    /// Print the graph reference (every source, operator and sink type with its keys) as
    /// Markdown, generated from the registries; `--readme FILE` rewrites its reference section.
    Reference {
        /// Rewrite the section between the reference markers of this README instead.
        #[arg(long)]
        readme: Option<PathBuf>,
    },
    /// Print a graph as Graphviz dot.
    Graph {
        /// The graph TOML file.
        graph: PathBuf,
    },
    /// Run a graph; with file sources it ends when all input is read and every window flushed.
    Run {
        /// The graph TOML file.
        graph: PathBuf,
        /// Worker threads (default: the number of CPU cores).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
        workers: Option<u16>,
        /// Also write the run summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Keep state and checkpoints here, and resume from the newest complete checkpoint
        /// found here. Without it nothing is checkpointed.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Discard the state and checkpoints in --data-dir and start from the beginning.
        #[arg(long, requires = "data_dir")]
        fresh: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Backtest: run two versions of a graph on the same recorded input (their outputs
    /// redirected, never to production files or topics) and print a keyed diff of their
    /// outputs; exits 0 when they are the same, 1 when they differ.
    Diff(diff_cmd::DiffArgs),
    /// The state plan of deploying NEW.toml over OLD.toml: per source, stateful operator and
    /// sink (and its tables), whether its state is kept, starts empty, is replaced or dropped.
    Plan(diff_cmd::PlanArgs),
    /// List or inspect the checkpoints of a data directory.
    Checkpoints {
        #[command(subcommand)]
        command: CheckpointsCommand,
    },
    /// Write synthetic ticks.jsonl and instruments.csv.
    Gen(gen::GenArgs),
    /// Measure throughput and peak memory of the example pipeline on generated ticks.
    Bench(bench::BenchArgs),
    /// Run the engine and its HTTP control API: replays the event log, resumes what was
    /// running from its checkpoints, then serves /api/v1, /health and /metrics.
    Serve(control::ServeArgs),
    /// Print the event log (the audit trail) of an engine data directory.
    Events {
        /// The engine data directory (holding events.log).
        dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Truncate the log at a damaged record instead of stopping.
        #[arg(long)]
        repair: bool,
    },
    /// Verify the event log and print the control state folded from it.
    Replay {
        /// The engine data directory (holding events.log).
        dir: PathBuf,
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
        /// Truncate the log at a damaged record instead of stopping.
        #[arg(long)]
        repair: bool,
    },
    /// Print the SHA-256 of an API key read from standard input, for `[[api.keys]] sha256`.
    HashKey,
    /// Ask an HTTP health route (a container's HEALTHCHECK): exits 0 if it answers 200, 1
    /// otherwise, saying why.
    Health {
        /// `http://HOST:PORT/PATH`.
        #[arg(default_value = "http://127.0.0.1:8080/health/live")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Deploy a version with a strategy, follow, pause, resume or roll back a rollout of
    /// `tickflow serve` (see `POST /api/v1/deployments`).
    Rollout {
        #[command(subcommand)]
        command: rollout_cmd::RolloutCommand,
    },
    /// Load a JSON-lines file (for example generated ticks) into a Kafka topic.
    Produce(kafka_cmd::ProduceArgs),
    /// Create or read Kafka topics.
    Topics {
        #[command(subcommand)]
        command: kafka_cmd::TopicsCommand,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TICKFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints validation errors the way `validate` and `run` both do; returns the exit code.
fn report_invalid(e: &EngineError) -> Option<ExitCode> {
    if let EngineError::Invalid(errors) = e {
        for err in errors {
            eprintln!("error: {err}");
        }
        eprintln!("{} error(s)", errors.len());
        return Some(ExitCode::from(1));
    }
    None
}

fn compile_or_report(
    graph: &PathBuf,
) -> Result<Result<tickflow_engine::Plan, ExitCode>, anyhow::Error> {
    match compile_file(graph) {
        Ok(plan) => {
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            Ok(Ok(plan))
        }
        Err(e) => match report_invalid(&e) {
            Some(code) => Ok(Err(code)),
            None => Err(e.into()),
        },
    }
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { graph } => {
            let plan = match compile_or_report(&graph)? {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            println!(
                "{}: graph {} v{} is valid: {} source(s), {} operator(s), {} sink(s)",
                graph.display(),
                plan.name,
                plan.version,
                plan.sources.len(),
                plan.operators.len(),
                plan.sinks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { graph } => {
            let plan = match compile_or_report(&graph)? {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            print!("{}", plan.to_dot());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            graph,
            workers,
            summary_json,
            data_dir,
            fresh,
            cluster,
        } => {
            let cluster = cluster.resolve()?;
            let plan = match compile_or_report(&graph)? {
                Ok(p) => Arc::new(p),
                Err(code) => return Ok(code),
            };
            let workers = workers
                .map(usize::from)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let metrics = Arc::new(Metrics::for_plan(&plan));
            let progress = spawn_progress(Arc::clone(&metrics));
            // Ctrl-C or SIGTERM stops the run (needed for Kafka sources, which never end); its
            // newest checkpoint stays, and the next run with the same --data-dir resumes there.
            let live = tickflow_engine::live::Live::new(false, None);
            control::stop_on_signal(Arc::clone(&live))?;
            let options = RunOptions {
                workers,
                data_dir,
                fresh,
                live: Some(live),
                cluster,
                ..RunOptions::default()
            };
            let result = tickflow_engine::run(plan, &options, Arc::clone(&metrics));
            metrics.finished.store(true, Ordering::Relaxed);
            if let Some(p) = progress {
                let _ = p.join();
            }
            let mut summary = result?;
            summary.peak_rss_bytes = bench::peak_rss_bytes();
            eprintln!("{summary}");
            if let Some(path) = summary_json {
                std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reference { readme } => {
            let text = tickflow_engine::reference::graph_reference();
            match readme {
                None => print!("{text}"),
                Some(path) => {
                    let old = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let new =
                        tickflow_engine::reference::splice(&old, &text).with_context(|| {
                            format!("{} has no graph reference markers", path.display())
                        })?;
                    std::fs::write(&path, new)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff(args) => diff_cmd::diff(args),
        Command::Plan(args) => diff_cmd::plan(args),
        Command::Checkpoints { command } => {
            match command {
                CheckpointsCommand::List { dir, json } => checkpoints::list(&dir, json)?,
                CheckpointsCommand::Inspect { dir, id, json } => {
                    checkpoints::inspect(&dir, &id, json)?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen(args) => {
            gen::generate(&args)?;
            println!(
                "wrote {} ticks and {} instruments to {}",
                args.ticks,
                args.instruments,
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            bench::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => control::serve(args),
        Command::Events { dir, json, repair } => control::events(&dir, json, repair),
        Command::Replay { dir, json, repair } => control::replay(&dir, json, repair),
        Command::HashKey => control::hash_key_cmd(),
        Command::Health { url, timeout } => {
            control::health(&url, std::time::Duration::from_secs(timeout))
        }
        Command::Rollout { command } => rollout_cmd::rollout(&command),
        Command::Produce(args) => kafka_cmd::produce(&args).map(|_| ExitCode::SUCCESS),
        Command::Topics { command } => kafka_cmd::topics(&command).map(|_| ExitCode::SUCCESS),
    }
}

/// A progress bar over input bytes on a terminal; nothing when stderr is not a terminal.
fn spawn_progress(metrics: Arc<Metrics>) -> Option<std::thread::JoinHandle<()>> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while !metrics.finished.load(Ordering::Relaxed) {
            bar.set_length(metrics.bytes_total.load(Ordering::Relaxed));
            bar.set_position(metrics.bytes_read.load(Ordering::Relaxed));
            bar.set_message(format!("{} ticks", metrics.source_records()));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    }))
}

/// Running as one process of a cluster (Timely's cluster mode); every process runs the same
/// graph with the same `--workers`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ClusterArgs {
    /// The number of processes in the cluster (1, the default: this process alone).
    #[arg(long, env = "TICKFLOW_PROCESSES",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    processes: Option<u16>,
    /// This process's index, from 0. Without it, a cluster takes it from the trailing number
    /// of `$HOSTNAME` (a Kubernetes StatefulSet pod `tickflow-2` is process 2).
    #[arg(long, env = "TICKFLOW_PROCESS")]
    process: Option<u16>,
    /// A file with one `host:port` per process, in process order (`#` starts a comment).
    #[arg(long, env = "TICKFLOW_HOSTS")]
    hosts: Option<PathBuf>,
    /// Seconds to wait at start for every other process of the cluster (300 by default).
    #[arg(long, env = "TICKFLOW_CONNECT_TIMEOUT")]
    connect_timeout: Option<u64>,
}

impl ClusterArgs {
    /// These flags, each taking `config`'s value where it is not given (`serve`'s
    /// `[cluster]`).
    pub(crate) fn or(self, config: &tickflow_api::config::ClusterConfig) -> ClusterArgs {
        ClusterArgs {
            processes: self.processes.or(config.processes),
            process: self.process.or(config.process),
            hosts: self.hosts.or_else(|| config.hosts.clone()),
            connect_timeout: self.connect_timeout.or(config.connect_timeout_secs),
        }
    }

    /// The cluster this process is part of, or `None` when it runs alone.
    pub(crate) fn resolve(&self) -> anyhow::Result<Option<tickflow_engine::cluster::Cluster>> {
        let processes = usize::from(self.processes.unwrap_or(1));
        let Some(hosts) = &self.hosts else {
            if processes > 1 {
                anyhow::bail!("--processes {processes} needs --hosts (or TICKFLOW_HOSTS)");
            }
            return Ok(None);
        };
        let process = match self.process {
            Some(p) => usize::from(p),
            None => {
                let hostname = std::env::var("HOSTNAME").unwrap_or_default();
                tickflow_engine::cluster::ordinal_of_hostname(&hostname).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--process (or TICKFLOW_PROCESS) is not given and $HOSTNAME \
                         ({hostname:?}) does not end in -<index>"
                    )
                })?
            }
        };
        let mut cluster =
            tickflow_engine::cluster::Cluster::from_hosts_file(hosts, processes, process)?;
        if let Some(secs) = self.connect_timeout {
            cluster.connect_timeout = std::time::Duration::from_secs(secs);
        }
        Ok((processes > 1).then_some(cluster))
    }
}

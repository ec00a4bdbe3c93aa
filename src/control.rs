//! `tickflow serve`, `tickflow events`, `tickflow replay` and `tickflow hash-key`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tickflow_api::auth::{hash_key, Keys};
use tickflow_api::config::ServeConfig;
use tickflow_engine::control::ControlState;
use tickflow_engine::supervisor::{
    read_events, LoggedEvent, ServeCluster, Supervisor, SupervisorConfig,
};
use tickflow_state::events::EventKind;
use tickflow_state::OpenReport;

/// Flags of `tickflow serve` (they override the config file and the environment).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (`data_dir`, `workers`, `[api]` with `listen`,
    /// `max_body_bytes` and `[[api.keys]]`); may be given several times (later files override
    /// earlier ones: settings from a ConfigMap, then keys from a Secret); `TICKFLOW__*`
    /// variables override them.
    #[arg(long)]
    config: Vec<PathBuf>,
    /// Event log and deployment state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Worker threads per deployment.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
    workers: Option<u16>,
    /// Truncate the event log at a damaged record (losing it and everything after it)
    /// instead of refusing to start.
    #[arg(long)]
    repair: bool,
    /// `serve` on several processes: process 0 leads (the API's commands, the event log),
    /// the others follow it; each deployment runs on all of them, on the hosts file's ports
    /// plus the deployment id.
    #[command(flatten)]
    cluster: crate::ClusterArgs,
    /// On a follower (process 1 and up): process 0's API, whose events it follows, with
    /// the key in `TICKFLOW_LEADER_KEY` (a viewer's is enough).
    #[arg(long, env = "TICKFLOW_LEADER")]
    leader: Option<String>,
}

/// A follower's loop: reads the leader's events after the last one seen, every 200 ms, and
/// folds them ([`Supervisor::follow`]); says so, every 10 s at most, while the leader cannot be
/// reached (its deployments' runs then wait for it too).
fn follow_leader(sup: &Supervisor, leader: &str, key: &str) {
    #[derive(serde::Deserialize)]
    struct Page {
        events: Vec<LoggedEvent>,
    }
    // A new connection per poll (loopback or a cluster network): no pooled connection that
    // the leader's idle timeout closed under it.
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(5))
        .max_idle_connections(0)
        .build();
    let mut after = 0;
    let mut complained: Option<std::time::Instant> = None;
    loop {
        let url = format!("{leader}/api/v1/events?after={after}&limit=1000");
        let page = agent
            .get(&url)
            .set("Authorization", &format!("Bearer {key}"))
            .call()
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_json::<Page>().map_err(|e| e.to_string()));
        match page {
            Ok(page) => {
                let full = page.events.len() == 1000;
                after = sup.follow(page.events);
                complained = None;
                if full {
                    continue;
                }
            }
            Err(e) => {
                if complained.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                    eprintln!("warning: cannot read the leader's events at {leader}: {e}");
                    complained = Some(std::time::Instant::now());
                }
                sup.follow(Vec::new());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn report_open(path: &Path, report: &OpenReport) {
    let Some(cut) = &report.truncated else {
        return;
    };
    match &cut.saved_copy {
        None => eprintln!(
            "warning: {}: torn tail of {} byte(s) at offset {} ({}); the complete records \
             before it are kept",
            path.display(),
            cut.bytes,
            cut.offset,
            cut.why
        ),
        Some(copy) => eprintln!(
            "warning: {}: repaired: cut {} byte(s) at offset {} ({}); the original file is \
             kept as {}",
            path.display(),
            cut.bytes,
            cut.offset,
            cut.why,
            copy.display()
        ),
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`), so that what an API
/// client wrote cannot forge lines or drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes a line to stdout; a closed pipe (`| head`) ends the output quietly.
fn out_line(line: &str) -> std::io::Result<bool> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the engine and the API until interrupted.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let files: Vec<&Path> = args.config.iter().map(PathBuf::as_path).collect();
    let mut config = ServeConfig::load(&files)?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    if let Some(w) = args.workers {
        config.workers = usize::from(w);
    }
    if config.api.keys.is_empty() {
        eprintln!(
            "warning: no API keys configured ([[api.keys]]): every route but /health/* answers 401"
        );
    }
    let cluster = args.cluster.or(&config.cluster).resolve()?;
    let follow = match (
        &cluster,
        args.leader.or_else(|| config.cluster.leader.clone()),
    ) {
        (Some(c), Some(url)) if c.process > 0 => {
            let key = std::env::var("TICKFLOW_LEADER_KEY").map_err(|_| {
                anyhow::anyhow!(
                    "a follower needs process 0's API key in TICKFLOW_LEADER_KEY (a viewer's \
                     is enough)"
                )
            })?;
            Some((url.trim_end_matches('/').to_string(), key))
        }
        (Some(c), None) if c.process > 0 => anyhow::bail!(
            "process {} of a serve cluster follows process 0: give its API with --leader \
             (or TICKFLOW_LEADER)",
            c.process
        ),
        _ => None,
    };
    let (sup, report) = Supervisor::start(SupervisorConfig {
        data_dir: config.data_dir.clone(),
        workers: config.workers,
        repair: args.repair,
        read_roots: config.paths.read_roots.clone(),
        output_root: config.paths.output_root.clone(),
        max_graph_nodes: config.max_graph_nodes,
        stop_timeout: std::time::Duration::from_secs(config.stop_timeout_secs),
        metrics_grace: std::time::Duration::from_secs(config.metrics_grace_secs),
        backtest_timeout: std::time::Duration::from_secs(config.backtest_timeout_secs),
        backtest_max_input_bytes: config.backtest_max_input_bytes,
        cluster: cluster.map(|c| ServeCluster {
            process: c.process,
            connect_timeout: c.connect_timeout,
            addresses: c.addresses,
            leader: follow.as_ref().map(|(url, _)| url.clone()),
        }),
    })?;
    if let Some((url, key)) = follow {
        let sup = std::sync::Arc::clone(&sup);
        std::thread::Builder::new()
            .name("follow-leader".into())
            .spawn(move || follow_leader(&sup, &url, &key))?;
    }
    report_open(&config.data_dir.join("events.log"), &report);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let limits = tickflow_api::serve::ServeLimits {
        header_read_timeout: std::time::Duration::from_secs(config.api.header_read_timeout_secs),
        idle_timeout: std::time::Duration::from_secs(config.api.idle_timeout_secs),
        max_connections: config.api.max_connections,
    };
    let router = tickflow_api::router(
        std::sync::Arc::clone(&sup),
        Keys::new(&config.api.keys),
        config.api.max_body_bytes,
    );
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.api.listen)
            .await
            .with_context(|| format!("listening on {}", config.api.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "tickflow serve: listening on http://{addr} (data dir {})",
            config.data_dir.display()
        );
        tokio::select! {
            () = tickflow_api::serve::serve(listener, router, limits) => {},
            signal = shutdown_signal() => signal?,
        }
        anyhow::Ok(())
    })?;
    eprintln!("tickflow serve: stopping deployments (each resumes from its checkpoint)");
    sup.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = ctrl_c => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await
}

/// Stops `live` on Ctrl-C or SIGTERM (a thread waits for the signal).
pub fn stop_on_signal(live: std::sync::Arc<tickflow_engine::live::Live>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if runtime.block_on(shutdown_signal()).is_ok() {
                eprintln!("tickflow run: stopping (the newest checkpoint is kept)");
                live.stop();
            }
        })?;
    Ok(())
}

fn describe(e: &LoggedEvent) -> String {
    let details = match &e.event.kind {
        EventKind::GraphSubmitted {
            name,
            version,
            sha256,
            ..
        } => format!(
            "graph {name} v{version} sha256 {}",
            &sha256[..sha256.len().min(12)]
        ),
        EventKind::DeploymentRequested {
            id,
            graph,
            version,
            state_dir,
            continues,
            rollback_of,
            ..
        } => {
            let mut s = format!("deployment {id}: {graph} v{version} on {state_dir}");
            if let Some(c) = continues {
                s += &format!(", continues deployment {c}");
            }
            if let Some(r) = rollback_of {
                s += &format!(", rollback of deployment {r}");
            }
            s
        }
        EventKind::DeploymentStarted { id, restored_from } => match restored_from {
            Some(c) => format!("deployment {id}: from checkpoint {c}"),
            None => format!("deployment {id}: from the beginning"),
        },
        EventKind::DeploymentRolledBack { id, to } => format!("deployment {id}: replaced by {to}"),
        EventKind::DeploymentFailed { id, error } => format!("deployment {id}: {error}"),
        EventKind::RolloutStepStarted {
            id,
            step,
            share_pct,
            from_ms,
            ..
        } => format!(
            "deployment {id}: step {step}, {share_pct} % of keys from {}",
            tickflow_engine::checkpoint::final_label(*from_ms)
        ),
        EventKind::RolloutPromoted { id, to, .. } => {
            format!("deployment {id}: promoted, taken over by {to}")
        }
        EventKind::RolloutRolledBack { id, to, .. } => {
            format!("deployment {id}: rolled back, taken over by {to}")
        }
        _ => format!(
            "deployment {}",
            e.event.deployment().map_or("?".into(), |d| d.to_string())
        ),
    };
    let kind = serde_json::to_value(&e.event.kind)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(String::from))
        .unwrap_or_default();
    format!(
        "{:>6}  {}  {:<12} {:<22} {}{}",
        e.seq,
        e.event
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        printable(&e.event.actor),
        kind,
        printable(&details),
        e.event
            .reason
            .as_deref()
            .map_or(String::new(), |r| format!("  reason: {}", printable(r)))
    )
}

/// `tickflow events DIR`: the audit trail.
pub fn events(dir: &Path, json: bool, repair: bool) -> anyhow::Result<ExitCode> {
    let (events, report) = read_events(dir, repair)?;
    report_open(&dir.join("events.log"), &report);
    for e in &events {
        let line = if json {
            serde_json::to_string(e)?
        } else {
            describe(e)
        };
        if !out_line(&line)? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tickflow replay DIR`: verifies every record and prints the folded control state.
pub fn replay(dir: &Path, json: bool, repair: bool) -> anyhow::Result<ExitCode> {
    let (events, report) = read_events(dir, repair)?;
    report_open(&dir.join("events.log"), &report);
    let state = ControlState::fold(events.iter().map(|e| (e.seq, &e.event)));
    if json {
        out_line(&serde_json::to_string_pretty(&state)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![
        format!(
            "{} event(s) verified (checksums, sequence, hash chain, format); last seq {}",
            events.len(),
            state.last_seq
        ),
        format!(
            "chain head sha256 {} (note it elsewhere: a rewritten log has another)",
            report.head
        ),
    ];
    for (name, versions) in &state.graphs {
        let v: Vec<String> = versions.keys().map(|v| format!("v{v}")).collect();
        lines.push(format!("graph {}: {}", printable(name), v.join(", ")));
    }
    for d in state.deployments.values() {
        lines.push(format!(
            "deployment {}: {} v{} {} (dir {}{})",
            d.id,
            printable(&d.graph),
            d.version,
            d.state.name(),
            printable(&d.state_dir),
            d.restored_from.map_or(String::new(), |c| format!(
                ", last resumed from checkpoint {c}"
            ))
        ));
    }
    for line in lines {
        if !out_line(&line)? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tickflow hash-key`: the SHA-256 to put in `[[api.keys]] sha256` for a key read from stdin.
pub fn hash_key_cmd() -> anyhow::Result<ExitCode> {
    let mut key = String::new();
    std::io::stdin().read_line(&mut key)?;
    // The server trims the key it is presented with; so does this.
    let key = key.trim();
    anyhow::ensure!(!key.is_empty(), "no key on standard input");
    println!("{}", hash_key(key));
    Ok(ExitCode::SUCCESS)
}

/// `tickflow health URL`: one GET over plain HTTP/1.1 (no client library: the container image
/// holds only the binary); 0 on a 200 answer.
pub fn health(url: &str, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs are asked"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url}: {authority} has no address"))?;
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = Vec::new();
        stream.take(4096).read_to_end(&mut head)?;
        Ok(String::from_utf8_lossy(&head).into_owned())
    })();
    match answer {
        Ok(text) => {
            let status = text.lines().next().unwrap_or_default().to_string();
            if status.split(' ').nth(1) == Some("200") {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{url}: {status}");
                Ok(ExitCode::FAILURE)
            }
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

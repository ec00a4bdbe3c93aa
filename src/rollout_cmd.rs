//! `tickflow rollout`: deploy a version with a strategy, follow a rollout live (`status`), and
//! pause, resume or roll it back, over the control API.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Where the server is and which environment variable holds the API key.
#[derive(Debug, clap::Args)]
pub struct Server {
    /// The server's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The environment variable holding an API key (an operator key to change anything, a
    /// viewer key suffices for `status`).
    #[arg(long, default_value = "TICKFLOW_API_KEY")]
    key_env: String,
}

impl Server {
    /// Calls `path` of the control API; the reply's status and JSON body.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let key = std::env::var(&self.key_env)
            .with_context(|| format!("set {} to an API key of the server", self.key_env))?;
        let url = format!("{}/api/v1{path}", self.server.trim_end_matches('/'));
        let request = ureq::request(method, &url)
            .set("Authorization", &format!("Bearer {key}"))
            .timeout(Duration::from_secs(30));
        let reply = match body {
            Some(b) => request.send_json(b),
            None => request.call(),
        };
        let reply = match reply {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => anyhow::bail!("{url}: {e}"),
        };
        let status = reply.status();
        let body = reply
            .into_json()
            .with_context(|| format!("{url}: not JSON"))?;
        Ok((status, body))
    }

    /// Calls `path`, failing with the server's message unless the status is 2xx.
    fn expect(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, reply) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            anyhow::bail!("{method} {path}: {status}: {reply}");
        }
        Ok(reply)
    }
}

/// `tickflow rollout`.
#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Deploy a submitted version with a strategy (`POST /api/v1/deployments`); prints the new
    /// deployment. Canary settings not given come from the version's `[rollout]` table.
    Start {
        /// The graph's name.
        graph: String,
        /// The version to deploy.
        version: i64,
        /// `replace`, `shadow`, `canary` or `blue_green`.
        #[arg(long, default_value = "canary")]
        strategy: String,
        /// Percent of keys at each step, such as 10,25,50,100.
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<u32>>,
        /// How long each step runs, such as 60s.
        #[arg(long)]
        step_length: Option<String>,
        /// Most dead letters per record read.
        #[arg(long)]
        max_dead_letter_rate: Option<f64>,
        /// Most late ticks per record read.
        #[arg(long)]
        max_late_rate: Option<f64>,
        /// Most bars differing from the current version's, per bar compared (a shadow: its
        /// alert threshold).
        #[arg(long)]
        max_divergence: Option<f64>,
        /// Most seconds the new version's watermark may trail production's.
        #[arg(long)]
        max_lag_secs: Option<f64>,
        /// Why (recorded in the event log).
        #[arg(long)]
        reason: Option<String>,
        /// Allow a deploy whose state plan drops state.
        #[arg(long)]
        allow_state_loss: bool,
        /// Print the events the deploy would append (and its state plan), append nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Follow a canary rollout: its step, the share of keys the new version owns, and each
    /// check with its value and threshold; ends when it is promoted or rolled back.
    Status {
        /// The canary deployment's id.
        id: u64,
        #[command(flatten)]
        server: Server,
        /// Print the status once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Hold a rollout at its step (the deployment keeps running).
    Pause {
        /// The canary deployment's id.
        id: u64,
        /// Why (required; recorded in the event log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: Server,
    },
    /// Let a held rollout go on.
    Resume {
        /// The canary deployment's id.
        id: u64,
        /// Why (required; recorded in the event log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: Server,
    },
    /// Abort a rollout: the current version takes back every key.
    Rollback {
        /// The canary deployment's id.
        id: u64,
        /// Why (required; recorded in the event log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: Server,
    },
}

/// Runs `tickflow rollout ...`.
pub fn rollout(command: &RolloutCommand) -> anyhow::Result<ExitCode> {
    let with_reason = |reason: &String| serde_json::json!({ "reason": reason });
    let (server, path, body) = match command {
        RolloutCommand::Status { id, server, once } => return status(*id, server, *once),
        RolloutCommand::Start {
            graph,
            version,
            strategy,
            steps,
            step_length,
            max_dead_letter_rate,
            max_late_rate,
            max_divergence,
            max_lag_secs,
            reason,
            allow_state_loss,
            dry_run,
            server,
        } => {
            let mut body = serde_json::json!({
                "graph": graph, "version": version, "strategy": strategy,
                "allow_state_loss": allow_state_loss,
            });
            if let Some(reason) = reason {
                body["reason"] = reason.as_str().into();
            }
            if strategy == "shadow" {
                if let Some(d) = max_divergence {
                    body["shadow"] = serde_json::json!({ "max_divergence": d });
                }
            } else if strategy == "canary" || strategy == "blue_green" {
                let mut checks = serde_json::Map::new();
                for (k, v) in [
                    ("max_dead_letter_rate", max_dead_letter_rate),
                    ("max_late_rate", max_late_rate),
                    ("max_divergence", max_divergence),
                    ("max_lag_secs", max_lag_secs),
                ] {
                    if let Some(v) = v {
                        checks.insert(k.into(), (*v).into());
                    }
                }
                let mut canary = serde_json::json!({ "checks": checks });
                if let Some(s) = steps {
                    canary["steps"] = serde_json::json!(s);
                }
                if let Some(l) = step_length {
                    canary["step_length"] = l.as_str().into();
                }
                body["canary"] = canary;
            }
            let path = format!(
                "/deployments{}",
                if *dry_run { "?dry_run=true" } else { "" }
            );
            (server, path, body)
        }
        RolloutCommand::Pause { id, reason, server } => (
            server,
            format!("/deployments/{id}/rollout/pause"),
            with_reason(reason),
        ),
        RolloutCommand::Resume { id, reason, server } => (
            server,
            format!("/deployments/{id}/rollout/resume"),
            with_reason(reason),
        ),
        RolloutCommand::Rollback { id, reason, server } => (
            server,
            format!("/deployments/{id}/rollback"),
            with_reason(reason),
        ),
    };
    let reply = server.expect("POST", &path, Some(&body))?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(ExitCode::SUCCESS)
}

/// `tickflow rollout status`.
fn status(id: u64, server: &Server, once: bool) -> anyhow::Result<ExitCode> {
    let live = !once && std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let body = server.expect("GET", &format!("/deployments/{id}"), None)?;
        let Some(rollout) = body.get("rollout").filter(|r| !r.is_null()) else {
            anyhow::bail!("deployment {id} is not a canary rollout");
        };
        let view = render(&body, rollout);
        if view != last {
            if live {
                // Clear the screen and draw again.
                print!("\x1b[2J\x1b[H");
            }
            print!("{view}");
            last = view;
        }
        let state = rollout["state"].as_str().unwrap_or_default();
        if once || !matches!(state, "running" | "paused") {
            return Ok(if state == "rolled_back" {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The status as text.
fn render(d: &Value, r: &Value) -> String {
    let steps: Vec<String> = r["config"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("{s}%"))
        .collect();
    let mut out = format!(
        "deployment {} ({} v{} over v{}, deployment {}): {} rollout {}\n\
         step {} of {} [{}], new version owns {} % of keys; step length {}, this step since {}\n",
        d["id"],
        d["graph"].as_str().unwrap_or_default(),
        d["version"],
        r["current_version"],
        r["current"],
        r["strategy"].as_str().unwrap_or("canary"),
        r["state"].as_str().unwrap_or_default(),
        r["step"],
        steps.len(),
        steps.join(" -> "),
        r["share_pct"],
        r["config"]["step_length"].as_str().unwrap_or_default(),
        r["step_started_at"].as_str().unwrap_or_default(),
    );
    let checks = r["checks"].as_array().cloned().unwrap_or_default();
    if checks.is_empty() {
        out.push_str("  no checks run yet\n");
    }
    for c in checks {
        let threshold = c["threshold"].as_f64().unwrap_or_default();
        let threshold = if threshold >= 1e300 {
            "    none".to_string()
        } else {
            format!("{threshold:>8.4}")
        };
        out.push_str(&format!(
            "  {:<18} {:>8.4}  threshold {threshold}  current version {:>8.4}  {}\n",
            c["metric"].as_str().unwrap_or_default(),
            c["value"].as_f64().unwrap_or_default(),
            c["current"].as_f64().unwrap_or_default(),
            if c["passed"] == true { "ok" } else { "FAILED" }
        ));
    }
    if let Some(to) = r["replaced_by"].as_u64() {
        out.push_str(&format!("  taken over by deployment {to}\n"));
    }
    out
}

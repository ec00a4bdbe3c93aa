//! `tickflow rollout status ID`: a live view of a canary rollout, read from the control API.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// `tickflow rollout`.
#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Follow a canary rollout: its step, the share of keys the new version owns, and each
    /// check with its value and threshold; ends when it is promoted or rolled back.
    Status {
        /// The canary deployment's id.
        id: u64,
        /// The server's address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The environment variable holding an API key (a viewer key suffices).
        #[arg(long, default_value = "TICKFLOW_API_KEY")]
        key_env: String,
        /// Print the status once and exit.
        #[arg(long)]
        once: bool,
    },
}

/// Runs `tickflow rollout ...`.
pub fn rollout(command: &RolloutCommand) -> anyhow::Result<ExitCode> {
    let RolloutCommand::Status {
        id,
        server,
        key_env,
        once,
    } = command;
    let key = std::env::var(key_env)
        .with_context(|| format!("set {key_env} to an API key of the server"))?;
    let url = format!("{}/api/v1/deployments/{id}", server.trim_end_matches('/'));
    let live = !once && std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let body: Value = ureq::get(&url)
            .set("Authorization", &format!("Bearer {key}"))
            .timeout(Duration::from_secs(10))
            .call()
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?
            .into_json()
            .with_context(|| format!("{url}: not JSON"))?;
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
        if *once || !matches!(state, "running" | "paused") {
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

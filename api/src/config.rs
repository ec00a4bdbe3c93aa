//! `tickflow serve` configuration: defaults, then a TOML file, then `TICKFLOW__*` environment
//! variables (`TICKFLOW__API__LISTEN=127.0.0.1:9000` sets `[api] listen`), then command-line
//! flags.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::auth::Role;

/// Everything `tickflow serve` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Event log and deployment state.
    pub data_dir: PathBuf,
    /// Worker threads per deployment.
    pub workers: usize,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Where submitted graphs may read and write files.
    #[serde(default)]
    pub paths: PathsConfig,
    /// The most sources, operators and sinks a submitted graph may have (422 above it).
    pub max_graph_nodes: usize,
    /// Seconds a stopping deployment's dataflow may take before the deployment is failed.
    pub stop_timeout_secs: u64,
    /// Seconds `/metrics` keeps the series of a deployment after it ended.
    pub metrics_grace_secs: u64,
    /// Seconds each run of a backtest over the API may take.
    pub backtest_timeout_secs: u64,
    /// Largest recorded input (bytes) a backtest over the API reads.
    pub backtest_max_input_bytes: u64,
    /// `serve` on several processes; the `--processes`, `--process`, `--hosts`,
    /// `--connect-timeout` and `--leader` flags (and their `TICKFLOW_*` variables) override it.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[cluster]`: this process's place in a `serve` cluster (process 0 leads, the others follow
/// it; see the README's *Cluster mode*).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The number of processes (1: this process alone).
    pub processes: Option<u16>,
    /// This process's index; without it, the trailing number of `$HOSTNAME`.
    pub process: Option<u16>,
    /// A file with one `host:port` per process: each deployment's processes connect on that
    /// port plus the deployment id.
    pub hosts: Option<PathBuf>,
    /// On a follower: process 0's API (the key is read from `TICKFLOW_LEADER_KEY`).
    pub leader: Option<String>,
    /// Seconds a deployment's run waits for every process at start.
    pub connect_timeout_secs: Option<u64>,
}

/// `[paths]`: the only places a graph submitted over the API may touch. The default grants
/// nothing: file sources, reference files and file sinks are refused until configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Directories file sources and reference files may be read from (symbolic links are
    /// followed and must stay inside). Relative graph paths are looked up in each in turn.
    #[serde(default)]
    pub read_roots: Vec<PathBuf>,
    /// Directory under which file sinks write: each deployment gets its own subdirectory,
    /// and a graph's sink paths must be relative.
    #[serde(default)]
    pub output_root: Option<PathBuf>,
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request's headers; then the connection closes.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay silent; then it closes.
    pub idle_timeout_secs: u64,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// API keys (`[[api.keys]]`).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// One API key: its name (the actor on events), role, and SHA-256 of the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Who holds it; recorded as the actor of every event it causes.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the key, hex (`tickflow hash-key` prints it). The key itself is never
    /// stored.
    pub sha256: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: PathBuf::from("data"),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            api: ApiConfig {
                listen: "127.0.0.1:8080".into(),
                max_body_bytes: 1 << 20,
                header_read_timeout_secs: 10,
                idle_timeout_secs: 60,
                max_connections: 256,
                keys: Vec::new(),
            },
            paths: PathsConfig::default(),
            max_graph_nodes: tickflow_engine::policy::DEFAULT_MAX_NODES,
            stop_timeout_secs: 30,
            metrics_grace_secs: 300,
            backtest_timeout_secs: 300,
            backtest_max_input_bytes: 1 << 30,
            cluster: ClusterConfig::default(),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl ServeConfig {
    /// Defaults, merged with `files` in order (a later file's keys override an earlier
    /// one's: a Kubernetes ConfigMap's settings, then a Secret's `[[api.keys]]`), then the
    /// environment.
    pub fn load(files: &[&Path]) -> Result<ServeConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServeConfig::default()));
        for file in files {
            if !file.is_file() {
                return Err(ConfigError(format!("{} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: ServeConfig = figment
            .merge(Env::prefixed("TICKFLOW__").split("__"))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let mut seen: std::collections::BTreeMap<String, &str> = Default::default();
        for (i, k) in self.api.keys.iter().enumerate() {
            if let Some(other) = seen.insert(k.sha256.to_ascii_lowercase(), k.name.as_str()) {
                return Err(ConfigError(format!(
                    "api.keys[{i}] ({}): the same key hash is configured for `{other}`; one \
                     key, one name and role",
                    k.name
                )));
            }
            if let Err(rule) = tickflow_engine::compile::identifier(&k.name, true) {
                return Err(ConfigError(format!("api.keys[{i}].name: {rule}")));
            }
            let valid = k.sha256.len() == 64 && k.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(ConfigError(format!(
                    "api.keys[{i}] ({}): sha256 must be 64 hex digits (the SHA-256 of the key, \
                     as `tickflow hash-key` prints it)",
                    k.name
                )));
            }
            if k.name.trim().is_empty() {
                return Err(ConfigError(format!("api.keys[{i}]: name is empty")));
            }
        }
        if self.api.header_read_timeout_secs == 0
            || self.api.idle_timeout_secs == 0
            || self.api.max_connections == 0
        {
            return Err(ConfigError(
                "api.header_read_timeout_secs, api.idle_timeout_secs and api.max_connections \
                 must be at least 1"
                    .into(),
            ));
        }
        if self.workers == 0 {
            return Err(ConfigError("workers must be at least 1".into()));
        }
        Ok(())
    }
}

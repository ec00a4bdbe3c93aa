//! What a graph may reach: the trust boundary for graphs that arrive over the API. A graph
//! has at most [`GraphPolicy::max_nodes`] nodes, and its files follow the rules below.
//!
//! A [`GraphPolicy`] is either *free* (`tickflow run`: the user's own shell may name any path)
//! or *confined* (`tickflow serve`): file sources and reference files must resolve, symbolic
//! links followed, to regular files inside one of the configured read roots, and file sinks
//! are relative paths that resolve inside the deployment's own directory under the output
//! root. Neither may touch the engine's data directory. Every refusal names the rule, never
//! anything read from a file.
//!
//! [`check_plan_files`] holds for both: no sink writes a file that the graph reads, another
//! sink writes, or that lies in the run's data directory.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::plan::Plan;
use crate::RuleError;

/// The serve configuration key that grants read access.
pub const READ_ROOTS_KEY: &str = "paths.read_roots";
/// The serve configuration key that grants write access for file sinks.
pub const OUTPUT_ROOT_KEY: &str = "paths.output_root";

/// Default for [`GraphPolicy::max_nodes`].
pub const DEFAULT_MAX_NODES: usize = 1_000;

/// Where graphs may read and write, and how large they may be.
#[derive(Debug, Clone)]
pub struct GraphPolicy {
    confined: Option<Confined>,
    /// The most sources, operators and sinks a graph may have (a larger one is refused before
    /// anything else is checked).
    pub max_nodes: usize,
}

impl Default for GraphPolicy {
    fn default() -> Self {
        GraphPolicy::free()
    }
}

#[derive(Debug, Clone)]
struct Confined {
    /// Canonical read roots, in the configured order (relative paths try each in turn).
    read_roots: Vec<PathBuf>,
    /// Canonical output root.
    output_root: Option<PathBuf>,
    /// The engine's data directory, canonical.
    data_dir: PathBuf,
    /// Files the engine recorded itself (a backtest's Kafka range) that graphs may read
    /// wherever they are, canonical.
    recorded: Vec<PathBuf>,
}

/// Why a policy cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {source}")]
pub struct PolicyError {
    /// The configuration key.
    pub key: &'static str,
    /// The configured path.
    pub path: String,
    /// Why it cannot be used.
    pub source: std::io::Error,
}

impl GraphPolicy {
    /// No confinement and no node limit (`tickflow run`, `validate`: the user's own shell):
    /// the paths a graph names are used as written.
    pub fn free() -> GraphPolicy {
        GraphPolicy {
            confined: None,
            max_nodes: usize::MAX,
        }
    }

    /// The same policy with another node limit.
    pub fn with_max_nodes(self, max_nodes: usize) -> GraphPolicy {
        GraphPolicy { max_nodes, ..self }
    }

    /// Confined to `read_roots` (existing directories) and `output_root` (created if
    /// missing), never into `data_dir`.
    pub fn confined(
        read_roots: &[PathBuf],
        output_root: Option<&Path>,
        data_dir: &Path,
    ) -> Result<GraphPolicy, PolicyError> {
        let canonical = |key: &'static str, p: &Path| {
            p.canonicalize().map_err(|source| PolicyError {
                key,
                path: p.display().to_string(),
                source,
            })
        };
        let read_roots = read_roots
            .iter()
            .map(|r| canonical(READ_ROOTS_KEY, r))
            .collect::<Result<Vec<_>, _>>()?;
        let output_root = match output_root {
            Some(o) => {
                std::fs::create_dir_all(o).map_err(|source| PolicyError {
                    key: OUTPUT_ROOT_KEY,
                    path: o.display().to_string(),
                    source,
                })?;
                Some(canonical(OUTPUT_ROOT_KEY, o)?)
            }
            None => None,
        };
        let data_dir = canonical("data_dir", data_dir)?;
        // A read root may hold the data directory (each path is checked not to lead into
        // it); the output root may not overlap it either way: sinks create directories there.
        let overlaps = |key: &'static str, root: &PathBuf| {
            let inside = root.starts_with(&data_dir);
            let around = key == OUTPUT_ROOT_KEY && data_dir.starts_with(root);
            (inside || around).then(|| PolicyError {
                key,
                path: root.display().to_string(),
                source: std::io::Error::other(
                    "overlaps the engine's data directory (graphs must never reach it)",
                ),
            })
        };
        let roots = read_roots.iter().map(|r| (READ_ROOTS_KEY, r));
        if let Some(e) = roots
            .chain(output_root.iter().map(|o| (OUTPUT_ROOT_KEY, o)))
            .find_map(|(key, root)| overlaps(key, root))
        {
            return Err(e);
        }
        Ok(GraphPolicy {
            confined: Some(Confined {
                read_roots,
                output_root,
                data_dir,
                recorded: Vec::new(),
            }),
            max_nodes: DEFAULT_MAX_NODES,
        })
    }

    /// Whether paths are confined.
    /// The same policy, also letting graphs read `file`, which the engine recorded itself
    /// (a backtest's Kafka range in its scratch directory).
    pub fn with_recorded_input(&self, file: &Path) -> Result<GraphPolicy, RuleError> {
        let mut policy = self.clone();
        if let Some(c) = policy.confined.as_mut() {
            let real = file
                .canonicalize()
                .map_err(|e| RuleError(format!("{}: {e}", file.display())))?;
            c.recorded.push(real);
        }
        Ok(policy)
    }

    pub fn is_confined(&self) -> bool {
        self.confined.is_some()
    }

    /// The file a graph reads at `path` (a file source's `path`, `enrich.reference`), or the
    /// rule it breaks.
    pub fn readable(&self, path: &str) -> Result<PathBuf, RuleError> {
        let Some(c) = &self.confined else {
            let p = PathBuf::from(path);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{path} does not exist or is not a file").into())
            };
        };
        if c.read_roots.is_empty() {
            return Err(format!(
                "file inputs are refused: this server grants no read roots (set \
                 `{READ_ROOTS_KEY}` in the serve configuration to allow them)"
            )
            .into());
        }
        let p = plain_path(path)?;
        if let Some(own) = c.recorded.iter().find(|r| p == **r) {
            return Ok(own.clone());
        }
        let candidates: Vec<PathBuf> = if p.is_absolute() {
            // Lexically inside a root (as configured or canonical) before anything is asked
            // of the file system: nothing is learnt about files outside the roots.
            if !c.read_roots.iter().any(|r| p.starts_with(r)) {
                return Err(
                    format!("{path} is outside the read roots (`{READ_ROOTS_KEY}`)").into(),
                );
            }
            vec![p]
        } else {
            c.read_roots.iter().map(|r| r.join(&p)).collect()
        };
        let Some(real) = candidates.iter().find_map(|p| p.canonicalize().ok()) else {
            return Err(
                format!("{path} does not exist in the read roots (`{READ_ROOTS_KEY}`)").into(),
            );
        };
        if !c.read_roots.iter().any(|r| real.starts_with(r)) {
            return Err(format!(
                "{path} resolves (through a symbolic link) outside the read roots \
                 (`{READ_ROOTS_KEY}`)"
            )
            .into());
        }
        if real.starts_with(&c.data_dir) {
            return Err(format!("{path} points into the engine's data directory").into());
        }
        if !real.is_file() {
            return Err(format!("{path} is not a regular file").into());
        }
        Ok(real)
    }

    /// Checks a file sink's `path` as written (at submit); [`GraphPolicy::sink_file`] places
    /// it when the deployment starts.
    pub fn writable(&self, path: &str) -> Result<(), RuleError> {
        let Some(c) = &self.confined else {
            if Path::new(path).is_dir() {
                return Err(format!("{path} is a directory").into());
            }
            return Ok(());
        };
        if c.output_root.is_none() {
            return Err(format!(
                "file sinks are refused: this server has no output root (set \
                 `{OUTPUT_ROOT_KEY}` in the serve configuration to allow them)"
            )
            .into());
        }
        let p = plain_path(path)?;
        if p.is_absolute() {
            return Err(format!(
                "{path} must be a relative path: file sinks write inside the deployment's \
                 directory under `{OUTPUT_ROOT_KEY}`"
            )
            .into());
        }
        Ok(())
    }

    /// Where a file sink of deployment directory `deployment` writes: under the output
    /// root, in `deployment/`. Creates the directories; refuses a path whose directories
    /// lead out through a symbolic link, or that names something other than a regular file.
    pub fn sink_file(&self, path: &Path, deployment: &str) -> Result<PathBuf, RuleError> {
        let Some(c) = &self.confined else {
            return Ok(path.to_path_buf());
        };
        let shown = path.display();
        self.writable(&path.to_string_lossy())?;
        let root = c
            .output_root
            .as_ref()
            .ok_or_else(|| format!("{shown}: no output root"))?;
        let base = root.join(plain_path(deployment)?);
        let target = base.join(path);
        let parent = target.parent().unwrap_or(&base);
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("{shown}: cannot create its directory: {e}"))?;
        let real_parent = parent
            .canonicalize()
            .map_err(|e| format!("{shown}: cannot resolve its directory: {e}"))?;
        if !real_parent.starts_with(root) {
            return Err(format!(
                "{shown} resolves (through a symbolic link) outside `{OUTPUT_ROOT_KEY}`"
            )
            .into());
        }
        let name = target
            .file_name()
            .ok_or_else(|| format!("{shown} names no file"))?;
        let target = real_parent.join(name);
        match std::fs::symlink_metadata(&target) {
            Ok(m) if !m.file_type().is_file() => {
                Err(format!("{shown} exists and is not a regular file").into())
            }
            _ => Ok(target),
        }
    }

    /// The engine's data directory, when confined.
    pub fn data_dir(&self) -> Option<&Path> {
        self.confined.as_ref().map(|c| c.data_dir.as_path())
    }
}

/// `path` as a relative or absolute path made of plain names only: no `..`, no empty text,
/// no control characters.
fn plain_path(path: &str) -> Result<PathBuf, RuleError> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.chars().any(char::is_control) {
        return Err("the path holds a control character".into());
    }
    let p = PathBuf::from(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{path} must not contain `..`").into());
    }
    Ok(p)
}

/// A path's identity for comparing files: canonical where it exists, else its canonical
/// parent joined with its name, else absolute.
pub fn identity(p: &Path) -> PathBuf {
    if let Ok(real) = p.canonicalize() {
        return real;
    }
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|real| real.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

/// The files `plan` reads (source paths, reference files), with the TOML key naming each.
pub fn files_read(plan: &Plan) -> Vec<(String, PathBuf)> {
    plan.files_read
        .iter()
        .map(|(key, p)| (key.clone(), identity(p)))
        .collect()
}

/// The files `plan` writes (file sinks), with the TOML key naming each.
pub fn files_written(plan: &Plan) -> Vec<(String, PathBuf)> {
    plan.sinks
        .iter()
        .filter_map(|s| {
            let path = s.component.output_file()?;
            Some((format!("sinks.{}.path", s.name), identity(path)))
        })
        .collect()
}

/// Refuses a plan whose file sinks would write over a file it reads, a file another of its
/// sinks writes, a file in `others` (files other runs read or write), or anything inside
/// `data_dir`.
pub fn check_plan_files(
    plan: &Plan,
    data_dir: Option<&Path>,
    others: &[(String, PathBuf)],
) -> Result<(), RuleError> {
    let read = files_read(plan);
    let data_dir = data_dir.map(identity);
    let mut written: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (key, path) in files_written(plan) {
        if let Some((other, _)) = read.iter().find(|(_, r)| *r == path) {
            return Err(format!("{key}: writes the file that `{other}` reads").into());
        }
        if let Some(other) = written.get(&path) {
            return Err(format!("{key}: writes the same file as `{other}`").into());
        }
        if let Some((other, _)) = others.iter().find(|(_, r)| *r == path) {
            return Err(
                format!("{key}: writes a file that an active deployment uses ({other})").into(),
            );
        }
        if data_dir.as_ref().is_some_and(|d| path.starts_with(d)) {
            return Err(format!("{key}: writes inside the data directory").into());
        }
        written.insert(path, key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Roots {
        _tmp: tempfile::TempDir,
        read: PathBuf,
        out: PathBuf,
        data: PathBuf,
        outside: PathBuf,
    }

    fn roots() -> Roots {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (read, out, data, outside) = (
            base.join("read"),
            base.join("out"),
            base.join("data"),
            base.join("outside"),
        );
        for d in [&read, &data, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(read.join("ticks.jsonl"), "{}\n").unwrap();
        std::fs::write(outside.join("secret"), "secret\n").unwrap();
        std::fs::create_dir_all(read.join("dir")).unwrap();
        Roots {
            _tmp: tmp,
            read,
            out,
            data,
            outside,
        }
    }

    #[test]
    fn a_recorded_input_is_readable_alone() {
        let r = roots();
        let policy =
            GraphPolicy::confined(std::slice::from_ref(&r.read), Some(&r.out), &r.data).unwrap();
        let scratch = r.data.join("backtests");
        std::fs::create_dir_all(&scratch).unwrap();
        let (recorded, other) = (scratch.join("recorded.jsonl"), scratch.join("other"));
        std::fs::write(&recorded, "{}\n").unwrap();
        std::fs::write(&other, "{}\n").unwrap();
        let text = |p: &Path| p.to_str().unwrap().to_string();
        assert!(policy.readable(&text(&recorded)).is_err());
        let with = policy.with_recorded_input(&recorded).unwrap();
        assert_eq!(with.readable(&text(&recorded)).unwrap(), recorded);
        assert!(with.readable(&text(&other)).is_err());
        assert!(
            policy.readable(&text(&recorded)).is_err(),
            "the server's own is unchanged"
        );
    }

    #[test]
    fn reads_resolve_inside_the_roots_only() {
        let r = roots();
        let policy =
            GraphPolicy::confined(std::slice::from_ref(&r.read), Some(&r.out), &r.data).unwrap();
        assert_eq!(
            policy.readable("ticks.jsonl").unwrap(),
            r.read.join("ticks.jsonl")
        );
        let abs = r.read.join("ticks.jsonl");
        assert!(policy.readable(abs.to_str().unwrap()).is_ok());
        let secret = r.outside.join("secret");
        let e = policy.readable(secret.to_str().unwrap()).unwrap_err();
        assert!(e.0.contains("outside the read roots"), "{e}");
        let e = policy.readable("../outside/secret").unwrap_err();
        assert!(e.0.contains(".."), "{e}");
        std::os::unix::fs::symlink(&secret, r.read.join("link")).unwrap();
        let e = policy.readable("link").unwrap_err();
        assert!(e.0.contains("symbolic link"), "{e}");
        let e = policy.readable("dir").unwrap_err();
        assert!(e.0.contains("not a regular file"), "{e}");
        let e = policy.readable("missing").unwrap_err();
        assert!(e.0.contains("does not exist"), "{e}");
        let none = GraphPolicy::confined(&[], Some(&r.out), &r.data).unwrap();
        let e = none.readable("ticks.jsonl").unwrap_err();
        assert!(e.0.contains(READ_ROOTS_KEY), "{e}");
    }

    #[test]
    fn sinks_stay_in_their_deployment_directory() {
        let r = roots();
        let policy =
            GraphPolicy::confined(std::slice::from_ref(&r.read), Some(&r.out), &r.data).unwrap();
        let placed = policy.sink_file(Path::new("a/bars.jsonl"), "d1").unwrap();
        assert_eq!(placed, r.out.join("d1/a/bars.jsonl"));
        for bad in ["/tmp/x", "../x", "a/../../x", ""] {
            assert!(policy.writable(bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink(&r.outside, r.out.join("d1/escape")).unwrap();
        let e = policy
            .sink_file(Path::new("escape/x.jsonl"), "d1")
            .unwrap_err();
        assert!(e.0.contains("symbolic link"), "{e}");
        std::fs::create_dir_all(r.out.join("d1/adir")).unwrap();
        let e = policy.sink_file(Path::new("adir"), "d1").unwrap_err();
        assert!(e.0.contains("not a regular file"), "{e}");
        let none = GraphPolicy::confined(std::slice::from_ref(&r.read), None, &r.data).unwrap();
        assert!(none.writable("x").unwrap_err().0.contains(OUTPUT_ROOT_KEY));
    }

    #[test]
    fn roots_overlapping_the_data_directory_are_refused() {
        let r = roots();
        let e = GraphPolicy::confined(std::slice::from_ref(&r.data), None, &r.data).unwrap_err();
        assert_eq!(e.key, READ_ROOTS_KEY);
        let e = GraphPolicy::confined(&[], Some(&r.data.join("out")), &r.data).unwrap_err();
        assert_eq!(e.key, OUTPUT_ROOT_KEY);
        let parent = r.data.parent().unwrap().to_path_buf();
        let e = GraphPolicy::confined(&[], Some(&parent), &r.data).unwrap_err();
        assert_eq!(e.key, OUTPUT_ROOT_KEY);
        // A read root around the data directory is allowed; paths into it are not.
        std::fs::write(r.data.join("events.log"), "x").unwrap();
        let policy = GraphPolicy::confined(&[parent], None, &r.data).unwrap();
        let e = policy.readable("data/events.log").unwrap_err();
        assert!(e.0.contains("data directory"), "{e}");
    }
}

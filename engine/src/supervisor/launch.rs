//! Starting and stopping a deployment's dataflow: its plan placed in its directory, its
//! thread, the wait for its data directory, the reaper of a stopped one.

use std::path::Path;

use crate::policy::{check_plan_files, files_read, files_written};

use super::*;

/// What a deployment's plan is placed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Production: its own sinks, its own consumer groups.
    Production,
    /// A shadow (see [`crate::diff::shadow_graph`]).
    Shadow,
    /// Canary deployment `id` rolling out over version `current`: both versions in one
    /// dataflow, the new one's Kafka sources reading as consumer groups of their own.
    Canary {
        /// The canary deployment.
        id: u64,
        /// The version it rolls out over.
        current: i64,
    },
}

impl Role {
    /// The role of deployment `id`: a shadow, a canary over version `current`, or production.
    pub(super) fn new(id: u64, shadow: bool, current: Option<i64>) -> Role {
        match (shadow, current) {
            (true, _) => Role::Shadow,
            (false, Some(current)) => Role::Canary { id, current },
            (false, None) => Role::Production,
        }
    }
}

impl Supervisor {
    /// The plan of graph version `graph` v`version` as it would run on data directory
    /// `state_dir`: compiled again with the path policy (a file swapped for a symbolic link
    /// since the submit is caught here), file sinks placed in the deployment's output
    /// directory, and refused if a sink would write over a file it reads, the data directory,
    /// or a file any other running deployment (not in `except`) reads or writes.
    pub(super) fn placed_plan(
        &self,
        inner: &Inner,
        (graph, version): (&str, i64),
        (state_dir, role): (&str, Role),
        except: &[u64],
    ) -> Result<Plan, EngineError> {
        let shadow = role == Role::Shadow;
        let toml = &inner
            .state
            .graph_version(graph, version)
            .ok_or_else(|| {
                EngineError::Control(format!("graph `{graph}` v{version} is not in the log"))
            })?
            .toml;
        let file = format!("{graph} v{version}");
        // A shadow's sinks write its own files (see `diff::shadow_graph`).
        let toml = if shadow {
            if self.config.output_root.is_none() {
                return Err(EngineError::Backtest(
                    "a shadow writes its outputs under the output root, and this server has \
                     none (`paths.output_root`)"
                        .into(),
                ));
            }
            crate::diff::shadow_graph(toml, &file, state_dir)?
        } else if let Role::Canary { id, .. } = role {
            crate::diff::own_consumer_groups(toml, &file, &format!("canary-d{id}"))?
        } else {
            toml.clone()
        };
        let mut plan = compile_confined(&toml, &file, &self.policy)?;
        for sink in &mut plan.sinks {
            let place = |path: &Path| self.policy.sink_file(path, state_dir);
            if let Some(placed) = sink
                .component
                .relocated(&place)
                .map_err(|rule| RuleError(format!("sinks.{}.path: {rule}", sink.name)))?
            {
                sink.component = placed;
            }
        }
        let others: Vec<(String, PathBuf)> = inner
            .runs
            .iter()
            .filter(|(other, r)| !except.contains(other) && r.thread.is_some())
            .flat_map(|(other, r)| {
                files_read(&r.plan)
                    .into_iter()
                    .chain(files_written(&r.plan))
                    .map(move |(key, p)| (format!("deployment {other}: {key}"), p))
            })
            .collect();
        check_plan_files(&plan, Some(&self.config.data_dir), &others)?;
        Ok(plan)
    }

    /// Refuses (422) a command whose new deployment could not start for its files, before
    /// anything is appended: the deployments the same command stops are not in the way.
    pub(super) fn check_placement(
        &self,
        inner: &Inner,
        kinds: &[EventKind],
    ) -> Result<(), Refusal> {
        let leaving: Vec<u64> = kinds
            .iter()
            .filter_map(|k| match k {
                EventKind::DeploymentStopped { id }
                | EventKind::DeploymentRolledBack { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        for kind in kinds {
            if let EventKind::DeploymentRequested {
                id,
                graph,
                version,
                state_dir,
                shadow_of,
                canary,
                ..
            } = kind
            {
                let current = canary
                    .as_ref()
                    .and_then(|c| c.get("current_version"))
                    .and_then(|v| v.as_i64());
                if current.is_some() && self.config.cluster.is_some() {
                    return Err(Refusal::Conflict(
                        "a canary rollout on a serve cluster is not built yet: roll out with \
                         shadow and replace"
                            .into(),
                    ));
                }
                let role = Role::new(*id, shadow_of.is_some(), current);
                self.deployment_plan(inner, (graph, *version), (state_dir, role), &[], &leaving)
                    .map_err(|e| Refusal::Invalid(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The plan a deployment runs: its version's placed plan, or for a canary rollout both
    /// versions in one dataflow under `schedule`.
    pub(super) fn deployment_plan(
        &self,
        inner: &Inner,
        (graph, version): (&str, i64),
        (state_dir, role): (&str, Role),
        schedule: &[crate::render::route::ShareStep],
        except: &[u64],
    ) -> Result<Plan, EngineError> {
        let plan = self.placed_plan(inner, (graph, version), (state_dir, role), except)?;
        let Role::Canary { current, .. } = role else {
            return Ok(plan);
        };
        let base = (state_dir, Role::Production);
        let base = self.placed_plan(inner, (graph, current), base, except)?;
        crate::canary::combine(&base, &plan, schedule)
    }

    /// Waits, on a thread of its own, for a stopped dataflow to end; reports one that takes
    /// longer than the stop timeout, so that its deployment is failed.
    pub(super) fn reap(&self, id: u64, generation: u64, thread: JoinHandle<()>) {
        let timeout = self.config.stop_timeout;
        let tx = self.notices.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("stop-{id}"))
            .spawn(move || {
                if join_by(thread, std::time::Instant::now() + timeout) {
                    tracing::info!("deployment {id}: dataflow stopped");
                } else {
                    let _ = tx.send(Notice::StopTimedOut { id, generation });
                }
            });
        if let Err(e) = spawned {
            tracing::error!("deployment {id}: cannot watch the stop: {e}");
        }
    }

    /// Starts the dataflow of `d` on its data directory.
    pub(super) fn launch(
        &self,
        inner: &mut Inner,
        d: &Deployment,
        paused: bool,
    ) -> Result<(), EngineError> {
        let rollout = d.rollout.as_ref().filter(|r| r.is_open());
        let role = Role::new(
            d.id,
            d.shadow_of.is_some(),
            rollout.map(|r| r.current_version),
        );
        let plan = self.deployment_plan(
            inner,
            (&d.graph, d.version),
            (&d.state_dir, role),
            rollout.map_or(&[], |r| r.schedule.as_slice()),
            &[d.id],
        )?;
        let plan = Arc::new(plan);
        inner.generation += 1;
        let generation = inner.generation;
        let id = d.id;
        let tx = self.notices.clone();
        let live = Live::new(
            paused,
            Some(Box::new(move |restored_from| {
                let _ = tx.send(Notice::Started {
                    id,
                    generation,
                    restored_from,
                });
            })),
        );
        let metrics = Arc::new(Metrics::for_plan(&plan));
        let options = RunOptions {
            workers: self.config.workers.max(1),
            data_dir: Some(self.deployment_dir(d)),
            fresh: false,
            adopt: true,
            live: Some(Arc::clone(&live)),
            cluster: self.deployment_cluster(d.id)?,
        };
        let tx = self.notices.clone();
        let dir_lock = Arc::clone(inner.dir_locks.entry(d.state_dir.clone()).or_default());
        let stop_timeout = self.config.stop_timeout;
        // After runs that lost a peer in a row, a growing pause before the next (0.5 s more
        // each, at most 10 s): a peer that is not back, or a port still taken.
        let losses = inner.peer_losses.get(&id).copied().unwrap_or(0);
        let pause = std::time::Duration::from_millis(500 * u64::from(losses))
            .min(std::time::Duration::from_secs(10));
        let thread = {
            let plan = Arc::clone(&plan);
            let metrics = Arc::clone(&metrics);
            let live = Arc::clone(&live);
            std::thread::Builder::new()
                .name(format!("deployment-{id}"))
                .spawn(move || {
                    let until = std::time::Instant::now() + pause;
                    while std::time::Instant::now() < until && !live.is_stopping() {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    // The data directory is free once the dataflow before it has ended.
                    let Some(_dir) = wait_for_dir(&dir_lock, &live, stop_timeout) else {
                        let result = if live.is_stopping() {
                            let mut stopped = Summary::of(&plan, 1, &metrics, 0.0);
                            stopped.stopped = true;
                            Ok(Box::new(stopped))
                        } else {
                            Err(format!(
                                "its data directory is still in use by a dataflow that did \
                                 not stop within {} s",
                                stop_timeout.as_secs()
                            ))
                        };
                        let _ = tx.send(Notice::Ended {
                            id,
                            generation,
                            result,
                            peer_lost: false,
                        });
                        return;
                    };
                    // A panic here must still end the deployment with an event, never
                    // leave it starting for ever.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        crate::run(plan, &options, metrics)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = crate::error::panic_message(&*panic);
                        Err(EngineError::Dataflow(format!(
                            "the deployment panicked: {what}"
                        )))
                    })
                    .map(Box::new);
                    let peer_lost = matches!(result, Err(EngineError::PeerLost(_)));
                    let _ = tx.send(Notice::Ended {
                        id,
                        generation,
                        result: result.map_err(|e| e.to_string()),
                        peer_lost,
                    });
                })
                .map_err(EngineError::Thread)?
        };
        tracing::info!(
            "deployment {id}: graph `{}` v{} starting on {}",
            d.graph,
            d.version,
            d.state_dir
        );
        inner.runs.insert(
            id,
            RunHandle {
                generation,
                live,
                metrics,
                plan,
                thread: Some(thread),
            },
        );
        Ok(())
    }
}

/// Joins `thread` if it ends before `deadline` and returns true; otherwise leaves it
/// running and returns false.
pub(super) fn join_by(thread: JoinHandle<()>, deadline: std::time::Instant) -> bool {
    while !thread.is_finished() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = thread.join();
    true
}

/// The highest `N` of the `dN` deployment directories in `dir` (0 when none).
pub(super) fn used_dir_ids(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix('d')?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Takes the lock of a data directory, waiting for the dataflow holding it to end; `None`
/// when this dataflow is stopped meanwhile or the wait passes `timeout`.
pub(super) fn wait_for_dir<'a>(
    lock: &'a Mutex<()>,
    live: &Live,
    timeout: std::time::Duration,
) -> Option<MutexGuard<'a, ()>> {
    let started = std::time::Instant::now();
    loop {
        match lock.try_lock() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        if live.is_stopping() || started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

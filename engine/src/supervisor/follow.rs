//! `serve` on several processes (see [`ServeCluster`]): each deployment's own Timely
//! cluster, the leader starting a deployment again when its run lost a peer, and the
//! followers folding the leader's events.

use crate::cluster::Cluster;

use super::*;

/// Runs of one deployment in a row that may end by a lost peer before the leader fails it.
pub const MAX_PEER_LOSSES: u32 = 30;

impl ServeCluster {
    /// The Timely cluster of deployment `id`: every process at its address's port + `id`,
    /// ending only the run (not the process) when a peer is lost.
    pub fn deployment(&self, id: u64) -> Result<Cluster, EngineError> {
        let addresses = self
            .addresses
            .iter()
            .map(|a| {
                let (host, port) = a
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .ok_or_else(|| format!("`{a}` is not host:port"))?;
                u16::try_from(u64::from(port) + id)
                    .map(|p| format!("{host}:{p}"))
                    .map_err(|_| format!("port {port} + deployment id {id} is past 65535"))
            })
            .collect::<Result<Vec<String>, String>>()
            .map_err(EngineError::Control)?;
        let n = addresses.len();
        let mut cluster = Cluster::new(addresses, n, self.process)
            .map_err(|e| EngineError::Control(e.to_string()))?;
        cluster.connect_timeout = self.connect_timeout;
        cluster.halts = false;
        Ok(cluster)
    }
}

impl Supervisor {
    /// On a follower, where the leader is (to send commands to).
    pub(super) fn leader(&self) -> Option<String> {
        self.config
            .cluster
            .as_ref()
            .filter(|c| c.process > 0)
            .map(|c| c.leader.clone().unwrap_or_else(|| c.addresses[0].clone()))
    }

    /// The cluster a deployment runs on, if this `serve` is one.
    pub(super) fn deployment_cluster(&self, id: u64) -> Result<Option<Cluster>, EngineError> {
        self.config
            .cluster
            .as_ref()
            .map(|c| c.deployment(id))
            .transpose()
    }

    /// This process's own directory in deployment directory `dir`.
    pub(super) fn own_dir(&self, dir: PathBuf) -> PathBuf {
        match &self.config.cluster {
            Some(c) => crate::checkpoint::layout::process_dir(&dir, c.process),
            None => dir,
        }
    }

    /// On a follower: folds the leader's events after the last one seen (the same
    /// [`ControlState::apply`] the leader uses), then starts, pauses and stops this process's
    /// share of every deployment to match (starting again a share that ended by a lost
    /// peer). Returns the sequence number of the last event seen.
    pub fn follow(&self, events: Vec<LoggedEvent>) -> u64 {
        let mut inner = self.lock();
        let mut last = inner.events.last().map_or(0, |e| e.seq);
        for e in events {
            if e.seq > last {
                last = e.seq;
                inner.state.apply(e.seq, &e.event);
                inner.events.push(e);
            }
        }
        self.reconcile(&mut inner);
        last
    }

    /// On the leader: deployment `id`'s run lost a peer; it starts again (waiting for every
    /// process), unless that happened [`MAX_PEER_LOSSES`] times in a row.
    pub(super) fn peer_lost(&self, inner: &mut Inner, id: u64, error: String) {
        let losses = inner.peer_losses.entry(id).or_default();
        *losses += 1;
        if *losses > MAX_PEER_LOSSES {
            inner.peer_losses.remove(&id);
            let error = format!("{error} ({MAX_PEER_LOSSES} times in a row)");
            tracing::error!("deployment {id}: {error}");
            self.append_system(inner, None, EventKind::DeploymentFailed { id, error });
            return;
        }
        tracing::warn!(
            "deployment {id}: {error}; starting it again once every process is back \
             (attempt {losses})"
        );
        self.reconcile(inner);
    }
}

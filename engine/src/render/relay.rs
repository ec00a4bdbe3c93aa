//! The checkpoint coordinators' line between the processes of a cluster: a Timely broadcast
//! channel addressed to this operator, relayed by each process's first worker between the
//! channel and its coordinator (a thread outside Timely). Every worker allocates the channel,
//! in the same order, so that its identifier agrees everywhere; the others only drain it.
//!
//! The operator holds a capability (else Timely would shut it down after its first run) until
//! every sink's input is complete; it never sends records, so the capability holds nothing up.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::communication::{Pull, Push};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope};
use timely::Bincode;

use crate::checkpoint::Ctrl;

/// One message on the line: the sending process and what it says.
type Relayed = Bincode<(usize, Ctrl)>;

/// The relay's ends in this process.
#[derive(Clone)]
pub struct RelayEnds {
    /// This process.
    pub process: usize,
    /// The global index of the worker that relays (this process's first).
    pub worker: usize,
    /// What this process's coordinator sends.
    pub outbox: crossbeam_channel::Receiver<(usize, Ctrl)>,
    /// What the other processes sent, for this process's coordinator.
    pub inbox: crossbeam_channel::Sender<(usize, Ctrl)>,
    /// The coordinator's way to wake the relay.
    pub wake: Arc<Mutex<Option<timely::scheduling::SyncActivator>>>,
}

/// Renders the relay into `scope`; it lives until `sinks` is done.
pub fn render(scope: Scope<'_, u64>, ends: &RelayEnds, sinks: ProbeHandle<u64>) {
    let ends = ends.clone();
    let me = scope.index();
    source::<_, timely::container::CapacityContainerBuilder<Vec<()>>, _, _>(
        scope,
        "CheckpointRelay",
        move |cap, info| {
            let worker = scope.worker();
            let (mut send, mut recv) =
                worker.broadcast::<Relayed>(worker.new_identifier(), Rc::clone(&info.address));
            let activator = scope.activator_for(Rc::clone(&info.address));
            if me == ends.worker {
                let path: Vec<usize> = info.address.to_vec();
                *ends.wake.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(worker.sync_activator_for(path));
            }
            let mut cap = Some(cap);
            move |_output| {
                while let Some(message) = recv.recv() {
                    let (from, ctrl) = message.payload;
                    if me == ends.worker && from != ends.process {
                        let _ = ends.inbox.send((from, ctrl));
                    }
                }
                if me == ends.worker {
                    let mut sent = false;
                    for message in ends.outbox.try_iter() {
                        send.send(Bincode::from(message));
                        sent = true;
                    }
                    if sent {
                        send.done();
                    }
                }
                if sinks.done() {
                    cap = None;
                } else if cap.is_some() {
                    activator.activate_after(Duration::from_millis(20));
                }
            }
        },
    );
}

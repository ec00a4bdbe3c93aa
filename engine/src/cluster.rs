//! Cluster mode: one graph on several `tickflow` processes, on Timely's own cluster
//! communication (`CommunicationConfig::Cluster`).
//!
//! Every process runs the same graph with the same number of worker threads; worker indices
//! are global (process `p`'s workers are `p * threads ..`). Exchanges cross processes as bincode
//! over TCP, so everything that crosses one means the same in every process (names, not
//! process-local ids). A file source is read by one worker of the whole cluster, Kafka
//! partitions are spread over every worker of every process, and every sink is written by the
//! last worker (of the last process): outputs are those of a one-process run.

//!
//! Processes of a cluster share fate: Timely cannot go on without a peer. A `tickflow run`
//! process that loses a peer, fails, or is told to stop halts at once (logging why), without
//! the orderly goodbye that would leave its peers waiting: they then lose it in turn and halt
//! too. Restarting every process resumes from the newest checkpoint complete on all of them.
//!
//! Under `tickflow serve` a process runs many deployments and must outlive each: there a
//! deployment's run that fails or is stopped drops its dataflow in order, and a run whose peer
//! closed a connection without Timely's goodbye (a crash, a lost network) fails at once: see
//! [`Cluster::halts`] and [`Counted`].

use std::any::Any;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::zero_copy::stream::Stream;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::{AllocatorBuilder, Hooks};

use crate::error::RuleError;
use crate::EngineError;

/// The exit code of a process that halts because it lost a peer (EX_TEMPFAIL: restart it,
/// with the others).
pub const EXIT_PEER_LOST: i32 = 75;

/// How long a process waits for its peers at start, by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// The failure of a run under `tickflow serve` whose peer closed a connection without
/// Timely's goodbye.
pub const PEER_CLOSED: &str = "a peer closed its connection without a goodbye (it crashed or \
                               the network failed)";

/// Whether a lost peer halts the whole process (`tickflow run`) or only fails the run that
/// lost it (`tickflow serve`): the panic hook of Timely's network threads reads it.
static HALTS: AtomicBool = AtomicBool::new(true);

/// This process's place in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index, `0 .. addresses.len()`.
    pub process: usize,
    /// `host:port` of every process, in process order (process `i` listens on the `i`-th).
    pub addresses: Vec<String>,
    /// How long to wait for every peer at start.
    pub connect_timeout: Duration,
    /// Whether this process halts when the run fails, stops or loses a peer (`tickflow run`:
    /// one run per process), or only the run ends (`tickflow serve`; see the module docs).
    pub halts: bool,
}

impl Cluster {
    /// The cluster of `processes` processes whose addresses are in `hosts` (one `host:port`
    /// per line; blank lines and `#` comments are skipped), as process `process`.
    pub fn from_hosts_file(
        hosts: &Path,
        processes: usize,
        process: usize,
    ) -> Result<Self, RuleError> {
        let text = std::fs::read_to_string(hosts)
            .map_err(|e| RuleError(format!("cannot read hosts file {}: {e}", hosts.display())))?;
        let addresses = parse_hosts(&text)
            .map_err(|(line, why)| RuleError(format!("{}:{line}: {why}", hosts.display())))?;
        Self::new(addresses, processes, process)
            .map_err(|e| RuleError(format!("{}: {e}", hosts.display())))
    }

    /// Checks that `addresses` name `processes` processes and that `process` is one of them.
    pub fn new(
        addresses: Vec<String>,
        processes: usize,
        process: usize,
    ) -> Result<Self, RuleError> {
        if processes == 0 {
            return Err("--processes must be at least 1".into());
        }
        if addresses.len() != processes {
            return Err(format!(
                "lists {} address(es) for {processes} process(es); give one `host:port` per \
                 process",
                addresses.len()
            )
            .into());
        }
        if process >= processes {
            return Err(format!(
                "process index {process} is not below the number of processes ({processes})"
            )
            .into());
        }
        Ok(Cluster {
            process,
            addresses,
            connect_timeout: CONNECT_TIMEOUT,
            halts: true,
        })
    }

    /// The number of processes.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Connects to every peer (see [`Cluster::connect`]); gives up early once `cancel` holds.
    pub fn connect_peers(&self, cancel: &dyn Fn() -> bool) -> Result<Peers, EngineError> {
        Ok(Peers {
            sockets: self.connect(cancel)?,
        })
    }

    /// Builds the communication of `threads` workers on the connections `peers`, for
    /// `timely::execute::execute_from`, counting the bytes sent to the peers.
    pub fn network(&self, peers: Peers, threads: usize) -> Result<Network, EngineError> {
        let sent = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let sockets: Vec<Option<Counted>> = peers
            .sockets
            .into_iter()
            .map(|s| {
                s.map(|stream| Counted {
                    stream,
                    sent: Arc::clone(&sent),
                    closed: Arc::clone(&closed),
                    released: (!self.halts).then(|| Arc::clone(&released)),
                    frames: Arc::new(Mutex::new(Frames::default())),
                })
            })
            .collect();
        HALTS.store(self.halts, Ordering::Relaxed);
        report_lost_peer();
        let hooks = Hooks::default();
        let local = ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), None);
        let (builders, guard) =
            initialize_networking_from_sockets(local, sockets, self.process, threads, hooks)
                .map_err(|e| {
                    EngineError::Dataflow(format!("starting the cluster's network: {e}"))
                })?;
        Ok(Network {
            builders: builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
            guard: Box::new(guard),
            sent,
            closed,
            released,
        })
    }

    /// One connection to every other process (`None` at this process's own place): this one
    /// listens on its address, connects to every lower process and is connected to by every
    /// higher one, which each first send their index (8 bytes, big-endian, as Timely's own
    /// start-up does). Waits up to [`Cluster::connect_timeout`], saying whom it waits for.
    fn connect(&self, cancel: &dyn Fn() -> bool) -> Result<Vec<Option<TcpStream>>, EngineError> {
        let failed = EngineError::Dataflow;
        let (me, n) = (self.process, self.processes());
        let deadline = Instant::now() + self.connect_timeout;
        let listener = TcpListener::bind(&self.addresses[me]).map_err(|e| {
            failed(format!(
                "process {me} cannot listen on its address {}: {e}",
                self.addresses[me]
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed(format!("listening on {}: {e}", self.addresses[me])))?;
        let mut sockets: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
        let mut told = Instant::now();
        let mut waiting = |what: String| -> Result<(), EngineError> {
            if cancel() {
                return Err(failed(format!("{what}: stopped while waiting")));
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "{what}: gave up after {:?} (every process of the cluster must be started)",
                    self.connect_timeout
                )));
            }
            if told.elapsed() > Duration::from_secs(5) {
                tracing::warn!("process {me} of {n}: {what}");
                told = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        };
        for (j, address) in self.addresses.iter().enumerate().take(me) {
            loop {
                match TcpStream::connect(address) {
                    Ok(mut stream) => {
                        let sent = stream
                            .set_nodelay(true)
                            .and_then(|()| stream.write_all(&(me as u64).to_be_bytes()));
                        match sent {
                            Ok(()) => {
                                sockets[j] = Some(stream);
                                break;
                            }
                            Err(e) => waiting(format!("process {j} at {address}: {e}"))?,
                        }
                    }
                    Err(e) => waiting(format!("waiting for process {j} at {address}: {e}"))?,
                }
            }
        }
        while let Some(missing) = (me + 1..n).find(|j| sockets[*j].is_none()) {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    let mut index = [0u8; 8];
                    let read = stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(10))))
                        .and_then(|()| stream.read_exact(&mut index));
                    let j = u64::from_be_bytes(index) as usize;
                    match read {
                        Ok(()) if j > me && j < n && sockets[j].is_none() => {
                            stream
                                .set_read_timeout(None)
                                .and_then(|()| stream.set_nodelay(true))
                                .map_err(|e| failed(format!("connection from process {j}: {e}")))?;
                            sockets[j] = Some(stream);
                        }
                        Ok(()) => tracing::warn!(
                            "process {me}: ignored a connection from {from} claiming to be \
                             process {j}"
                        ),
                        Err(e) => tracing::warn!(
                            "process {me}: ignored a connection from {from} that sent no \
                             index: {e}"
                        ),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => waiting(format!(
                    "waiting for process {missing} to connect to {}",
                    self.addresses[me]
                ))?,
                Err(e) => return Err(failed(format!("accepting on {}: {e}", self.addresses[me]))),
            }
        }
        tracing::info!("process {me} of {n}: connected to every peer");
        Ok(sockets)
    }
}

/// The connections to every other process, before Timely takes them: the processes can agree
/// on something first (which checkpoint to restore).
pub struct Peers {
    sockets: Vec<Option<TcpStream>>,
}

impl Peers {
    /// Sends `mine` to every other process and returns what each sent, in process order
    /// (`mine` at this process's place). Every process must call it the same number of times.
    pub fn exchange(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>, EngineError> {
        let lost = |j: usize, e: std::io::Error| {
            EngineError::Dataflow(format!("process {j} of the cluster, at start: {e}"))
        };
        for (j, socket) in self.sockets.iter_mut().enumerate() {
            if let Some(s) = socket {
                s.write_all(&(mine.len() as u64).to_be_bytes())
                    .and_then(|()| s.write_all(mine))
                    .map_err(|e| lost(j, e))?;
            }
        }
        let mut all = Vec::new();
        for (j, socket) in self.sockets.iter_mut().enumerate() {
            match socket {
                None => all.push(mine.to_vec()),
                Some(s) => {
                    let mut len = [0u8; 8];
                    s.read_exact(&mut len).map_err(|e| lost(j, e))?;
                    let mut theirs = vec![0u8; u64::from_be_bytes(len) as usize];
                    s.read_exact(&mut theirs).map_err(|e| lost(j, e))?;
                    all.push(theirs);
                }
            }
        }
        Ok(all)
    }
}

/// A cluster's communication, ready for `timely::execute::execute_from`.
pub struct Network {
    /// One allocator per local worker.
    pub builders: Vec<AllocatorBuilder>,
    /// The network threads (kept until the run ends).
    pub guard: Box<dyn Any + Send>,
    /// Bytes written to the peers so far (Timely's framing included).
    pub sent: Arc<AtomicU64>,
    /// Set once a peer has closed its connection without Timely's goodbye.
    pub closed: Arc<AtomicBool>,
    /// Under `serve`: set once every worker of this process is done with the run (see
    /// [`Counted`]).
    pub released: Arc<AtomicBool>,
}

/// A connection to a peer that counts the bytes written to it and notes when the peer closes
/// it.
///
/// It follows Timely's framing of what it reads ([`Frames`]) to tell a peer that finished the
/// dataflow and said goodbye (a zero-length message, then the end of the stream) from one that
/// vanished: only the second sets `closed`.
///
/// Under `serve` ([`Cluster::halts`] off) it also keeps Timely's network threads from
/// panicking while this process's workers still run: a panic there poisons the queues the
/// workers share with them, and the workers' own clean-up then panics again and aborts the
/// whole process. So writes to a peer that is gone are dropped, and a read that finds the
/// connection closed without a goodbye waits until the workers are done (`released`) before it
/// reports the end of the stream.
struct Counted {
    stream: TcpStream,
    sent: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    released: Option<Arc<AtomicBool>>,
    frames: Arc<Mutex<Frames>>,
}

/// Where the stream read from a peer is in Timely's framing: each message is a header of six
/// big-endian `u64`s (channel, source, target lower and upper, length, sequence number; see
/// `timely::communication::networking::MessageHeader`), then `length` bytes; a message of
/// length 0 is the peer's goodbye.
#[derive(Debug, Default)]
struct Frames {
    header: Vec<u8>,
    body_left: u64,
    goodbye: bool,
}

impl Frames {
    const HEADER: usize = 6 * 8;
    const LENGTH_AT: usize = 4 * 8;

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = bytes.len().min(Self::HEADER - self.header.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == Self::HEADER {
                let mut length = [0u8; 8];
                length.copy_from_slice(&self.header[Self::LENGTH_AT..Self::LENGTH_AT + 8]);
                self.body_left = u64::from_be_bytes(length);
                self.goodbye = self.body_left == 0;
                self.header.clear();
            }
        }
    }

    /// Whether the stream so far ends with the peer's goodbye.
    fn said_goodbye(&self) -> bool {
        self.goodbye && self.header.is_empty() && self.body_left == 0
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.stream.read(buf);
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(n) = read {
            frames.observe(&buf[..n]);
        }
        let vanished = matches!(read, Ok(0) | Err(_)) && !buf.is_empty() && !frames.said_goodbye();
        drop(frames);
        if vanished {
            self.closed.store(true, Ordering::Relaxed);
            if let Some(released) = &self.released {
                while !released.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Let the workers' allocators drop before this thread reports the end.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(0);
            }
        }
        read
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.stream.write(buf) {
            Ok(n) => {
                self.sent.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            // The reads tell a crash from a peer that finished and left.
            Err(_) if self.released.is_some() => Ok(buf.len()),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.stream.flush() {
            Err(_) if self.released.is_some() => Ok(()),
            other => other,
        }
    }
}

impl Stream for Counted {
    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Counted {
            stream: self.stream.try_clone()?,
            sent: Arc::clone(&self.sent),
            closed: Arc::clone(&self.closed),
            released: self.released.clone(),
            frames: Arc::clone(&self.frames),
        })
    }

    fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        self.stream.set_nonblocking(nonblocking)
    }

    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self.stream.shutdown(how) {
            Err(_) if self.released.is_some() => Ok(()),
            other => other,
        }
    }
}

/// Makes the loss of a peer halt this process with a clear line instead of a panic in
/// Timely's network threads (named `timely:send-J` and `timely:recv-J` for peer `J`), which
/// would otherwise leave this process's workers failing one by one; under `tickflow serve`
/// ([`HALTS`] off), it only says so: the run that lost it sees its connection closed.
fn report_lost_peer() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or_default();
            let peer = name
                .strip_prefix("timely:recv-")
                .or_else(|| name.strip_prefix("timely:send-"));
            match peer {
                Some(peer) if !HALTS.load(Ordering::Relaxed) => eprintln!(
                    "tickflow: a deployment lost process {peer} of its cluster ({}); it \
                     restarts from its newest checkpoint complete on every process",
                    crate::error::panic_message(info.payload())
                ),
                Some(peer) => halt(
                    EXIT_PEER_LOST,
                    &format!(
                        "lost process {peer} of the cluster ({}); processes of a cluster share \
                         fate, so this one stops too. Restart every process: they resume from \
                         the newest checkpoint complete on all of them",
                        crate::error::panic_message(info.payload())
                    ),
                ),
                // Joining the network threads of a run that lost a peer, under `serve`: the
                // run reports it (see `run`).
                None if !HALTS.load(Ordering::Relaxed) && {
                    let m = crate::error::panic_message(info.payload());
                    m.starts_with("Send thread panic") || m.starts_with("Recv thread panic")
                } => {}
                None => previous(info),
            }
        }));
    });
}

/// Stops this process of a cluster at once, after saying why on standard error: no orderly
/// goodbye to the peers (which would leave them waiting for its workers), so that they see
/// the connection drop and halt in turn.
pub fn halt(code: i32, why: &str) -> ! {
    eprintln!("tickflow: {why}");
    std::process::exit(code)
}

/// The addresses of a hosts file, or the 1-based line of the first bad one and why.
fn parse_hosts(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut addresses: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let bad = |why: &str| (i + 1, format!("`{entry}`: {why}"));
        let (host, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("the host is empty or has spaces"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        if addresses.iter().any(|a| a == entry) {
            return Err(bad("listed twice"));
        }
        addresses.push(entry.to_string());
    }
    Ok(addresses)
}

/// The process index a Kubernetes StatefulSet pod's hostname carries: `tickflow-2` is 2.
pub fn ordinal_of_hostname(hostname: &str) -> Option<usize> {
    let (name, ordinal) = hostname.trim().rsplit_once('-')?;
    if name.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_tells_a_goodbye_from_a_stream_cut_short_in_timelys_own_format() {
        use timely::communication::networking::MessageHeader;
        let header = |length: usize| {
            let mut bytes = Vec::new();
            MessageHeader {
                channel: 3,
                source: 1,
                target_lower: 0,
                target_upper: 2,
                length,
                seqno: 9,
            }
            .write_to(&mut bytes)
            .unwrap();
            bytes
        };
        let mut stream = header(5);
        stream.extend_from_slice(b"hello");
        stream.extend(header(0));
        // Read in chunks of every size: only the whole stream ends with the goodbye.
        for chunk in 1..stream.len() {
            let mut f = Frames::default();
            for (i, piece) in stream.chunks(chunk).enumerate() {
                f.observe(piece);
                let end = (i + 1) * chunk >= stream.len();
                assert_eq!(f.said_goodbye(), end, "chunks of {chunk}, after piece {i}");
            }
        }
        // A stream cut inside a message, or after a message that is not the goodbye.
        let mut f = Frames::default();
        f.observe(&stream[..50]);
        assert!(!f.said_goodbye());
        let mut f = Frames::default();
        f.observe(&stream[..53]);
        assert!(!f.said_goodbye());
    }

    #[test]
    fn a_hosts_file_lists_one_address_per_process() {
        let text = "# peers\n127.0.0.1:2101\n\n  127.0.0.1:2102  # second\n[::1]:2103\n";
        assert_eq!(
            parse_hosts(text).unwrap(),
            ["127.0.0.1:2101", "127.0.0.1:2102", "[::1]:2103"]
        );
        assert_eq!(
            parse_hosts("a:1\nb\n").unwrap_err(),
            (2, "`b`: expected host:port".to_string())
        );
        assert_eq!(parse_hosts("a:0").unwrap_err().0, 1);
        assert_eq!(parse_hosts("a:99999").unwrap_err().0, 1);
        assert!(parse_hosts("a:1\na:1")
            .unwrap_err()
            .1
            .contains("listed twice"));
    }

    #[test]
    fn the_process_count_and_index_must_match_the_addresses() {
        let two = vec!["a:1".to_string(), "b:2".to_string()];
        assert!(Cluster::new(two.clone(), 2, 1).is_ok());
        assert!(Cluster::new(two.clone(), 3, 0)
            .unwrap_err()
            .0
            .contains("2 address(es) for 3"));
        assert!(Cluster::new(two, 2, 2).unwrap_err().0.contains("index 2"));
    }

    #[test]
    fn a_statefulset_hostname_gives_the_process_index() {
        assert_eq!(ordinal_of_hostname("tickflow-0"), Some(0));
        assert_eq!(ordinal_of_hostname("my-tickflow-12"), Some(12));
        assert_eq!(ordinal_of_hostname("tickflow"), None);
        assert_eq!(ordinal_of_hostname("tickflow-"), None);
        assert_eq!(ordinal_of_hostname("tickflow-a1"), None);
    }
}

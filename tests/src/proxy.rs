//! [`FaultProxy`]: a TCP proxy that injects network faults between a client
//! and a server.
//!
//! It is hand-written on tokio because no crate offers a proxy whose faults
//! can be switched at run time and apply to connections that are already
//! open (toxiproxy does, but is an external Go server, not a library).
//!
//! # Design
//!
//! * One task accepts connections; each proxied connection runs in a task of
//!   its own, registered in a shared registry so [`FaultProxy::cut_all`] can
//!   reach it and [`FaultProxy::connection_count`] can count it.
//! * The fault mode lives in a `tokio::sync::watch` channel that every
//!   connection watches, so a mode change affects live connections at once.
//! * Each direction of a connection is a two-stage pipeline: a *read stage* that timestamps every chunk it reads, and a
//!   *write stage* that releases chunks in order when the mode allows it (not
//!   blackholed, latency elapsed since the chunk was read). Latency is thus a
//!   propagation delay that does not throttle throughput, and a blackhole holds
//!   the bytes like a network partition would: when it heals, the stream goes
//!   on where it stopped.
//! * Protocol-aware faults (e.g. cutting after a `COMMIT` went upstream but
//!   before its reply came back, see [`CutPoint`]) hook in between the two
//!   stages: each read stage frames the PostgreSQL messages of its direction
//!   ([`crate::protocol`]), and the client's may end its stream with a cut
//!   order that the write stage carries out once the bytes before it are
//!   written ([`crate::cuts`]).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::cuts::{
    ClientStep, ClientTap, CutCounts, CutOrder, CutPoint, CutRule, Cuts, Link, RandomCuts,
    ServerTap,
};

/// Size of one read; a chunk is whatever one read returned.
const CHUNK_SIZE: usize = 16 * 1024;

/// Chunks that may wait between the read and the write stage of one
/// direction; beyond that the read stage stops reading (back-pressure), which
/// bounds memory while latency or a blackhole holds data back.
const PIPELINE_DEPTH: usize = 64;

/// How long connecting to the upstream server may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy does to traffic. Set with the methods of [`FaultProxy`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Forward everything as fast as possible.
    #[default]
    Pass,
    /// Forward everything, each chunk delayed by this much in each direction
    /// (a round trip takes at least twice as long).
    Latency(Duration),
    /// A silent network: accept new connections but forward nothing in
    /// either direction and close nothing, on live connections too. Data is
    /// held, not dropped, and flows again when the mode changes.
    Blackhole,
    /// Reset new connections as soon as they are accepted, like a host with
    /// nothing listening; live connections keep forwarding.
    Refuse,
}

impl ProxyMode {
    /// Whether live connections may forward data in this mode.
    fn forwards(&self) -> bool {
        !matches!(self, ProxyMode::Blackhole)
    }

    fn latency(&self) -> Duration {
        match self {
            ProxyMode::Latency(delay) => *delay,
            _ => Duration::ZERO,
        }
    }
}

/// The direction bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (e.g. a database driver) to the upstream server.
    ClientToServer,
    /// From the upstream server back to the client.
    ServerToClient,
}

/// A TCP proxy on 127.0.0.1 in front of one upstream server, with faults that
/// can be switched at any time. Dropping it stops everything: the listener
/// and all proxied connections are closed.
///
/// ```no_run
/// # async fn demo(cluster: &resilient_tx_testkit::PgCluster) -> std::io::Result<()> {
/// use resilient_tx_testkit::FaultProxy;
/// let proxy = FaultProxy::start(cluster.socket_addr()).await?;
/// let url = cluster.url_via(&proxy); // connect the code under test here
/// proxy.blackhole(); // ...and the network goes silent
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

/// State shared by the proxy handle, the accept task and the connections.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    connections: Mutex<HashMap<u64, Registration>>,
    next_id: AtomicU64,
    cuts: Arc<Cuts>,
}

/// A live connection as seen by the registry.
#[derive(Debug)]
struct Registration {
    /// Tells the connection to reset both of its sockets; it acknowledges
    /// through the enclosed sender once they are closed.
    cut: oneshot::Sender<oneshot::Sender<()>>,
    /// Lets dropping the proxy abort the connection's task.
    task: Option<AbortHandle>,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Registration>> {
        // A panic while holding this lock leaves the map consistent (every
        // operation on it is a single insert/remove), so poisoning is ignored.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl FaultProxy {
    /// Starts a proxy listening on 127.0.0.1 (on a free port) that forwards
    /// to `upstream`, in [`ProxyMode::Pass`].
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::Sender::new(ProxyMode::Pass),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            cuts: Arc::new(Cuts::new()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, %upstream, "fault proxy started");
        Ok(FaultProxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.shared.mode.borrow().clone()
    }

    /// Switches to `mode`, for live and new connections alike.
    pub fn set_mode(&self, mode: ProxyMode) {
        tracing::debug!(addr = %self.addr, ?mode, "fault proxy mode");
        self.shared.mode.send_replace(mode);
    }

    /// Forwards everything without delay (heals any fault but closed
    /// connections).
    pub fn pass(&self) {
        self.set_mode(ProxyMode::Pass);
    }

    /// Delays every chunk by `delay` in each direction.
    pub fn latency(&self, delay: Duration) {
        self.set_mode(ProxyMode::Latency(delay));
    }

    /// Makes the network silent: nothing is forwarded and nothing is closed.
    pub fn blackhole(&self) {
        self.set_mode(ProxyMode::Blackhole);
    }

    /// Resets new connections at once; live ones keep working.
    pub fn refuse(&self) {
        self.set_mode(ProxyMode::Refuse);
    }

    /// Resets every live connection on both sides (the client and the server
    /// each see a connection reset), and returns once they are all closed;
    /// returns how many there were. New connections are still accepted
    /// according to the mode.
    pub async fn cut_all(&self) -> usize {
        let registrations: Vec<Registration> = self
            .shared
            .connections()
            .drain()
            .map(|(_, registration)| registration)
            .collect();
        let count = registrations.len();
        let mut acks = Vec::with_capacity(count);
        for registration in registrations {
            let (ack_tx, ack_rx) = oneshot::channel();
            // A connection that ended on its own in the meantime has dropped
            // its receiver; there is nothing left to cut then.
            if registration.cut.send(ack_tx).is_ok() {
                acks.push(ack_rx);
            }
        }
        for ack in acks {
            // An error means the task ended without acknowledging, which
            // also means its sockets are closed.
            let _ = ack.await;
        }
        tracing::debug!(addr = %self.addr, count, "fault proxy cut all connections");
        count
    }

    /// How many proxied connections are open (including ones accepted while
    /// blackholed, which wait to be connected upstream).
    pub fn connection_count(&self) -> usize {
        self.shared.connections().len()
    }

    /// Cuts the connection that next reaches `point` (any connection of this
    /// proxy, live or new), once; then cutting is off again. Replaces any
    /// other cut plan.
    ///
    /// ```no_run
    /// # async fn demo(proxy: &resilient_tx_testkit::FaultProxy, client: &tokio_postgres::Client)
    /// # -> Result<(), tokio_postgres::Error> {
    /// use resilient_tx_testkit::CutPoint;
    /// client.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await?;
    /// proxy.cut_next(CutPoint::AfterCommitBeforeReply);
    /// // The server commits, the client sees the connection reset.
    /// assert!(client.batch_execute("COMMIT").await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn cut_next(&self, point: CutPoint) {
        self.cut_once([CutRule::at(point)]);
    }

    /// Cuts the connection whose next statement containing `text` (e.g. a
    /// table name) reaches `point`, once. Replaces any other cut plan.
    pub fn cut_next_matching(&self, point: CutPoint, text: &str) {
        self.cut_once([CutRule::at(point).matching(text)]);
    }

    /// Arms several one-shot cuts at once: each rule cuts the first
    /// statement it matches (statements are offered to the rules in order,
    /// the first matching rule takes it), then cutting stops once all have
    /// cut. Replaces any other cut plan; an empty list stops cutting.
    pub fn cut_once(&self, rules: impl IntoIterator<Item = CutRule>) {
        let rules: Vec<CutRule> = rules.into_iter().collect();
        tracing::debug!(addr = %self.addr, ?rules, "fault proxy: one-shot cuts");
        self.shared.cuts.cut_once(rules);
    }

    /// Cuts statements at random, reproducibly from a seed, until
    /// [`FaultProxy::stop_cutting`]; see [`RandomCuts`]. Replaces any other
    /// cut plan.
    pub fn cut_randomly(&self, cuts: RandomCuts) {
        tracing::debug!(addr = %self.addr, ?cuts, "fault proxy: random cuts");
        self.shared.cuts.cut_randomly(cuts);
    }

    /// Stops cutting (a pending [`FaultProxy::cut_next`] included); cuts in
    /// progress complete.
    pub fn stop_cutting(&self) {
        self.shared.cuts.stop();
    }

    /// The one-shot cuts ([`FaultProxy::cut_next`], [`FaultProxy::cut_once`])
    /// that have not happened yet.
    pub fn pending_cuts(&self) -> Vec<CutRule> {
        self.shared.cuts.pending()
    }

    /// How many protocol-aware cuts this proxy made, by point.
    pub fn cuts(&self) -> CutCounts {
        self.shared.cuts.counts()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        for (_, registration) in self.shared.connections().drain() {
            if let Some(task) = registration.task {
                task.abort();
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _peer)) => client,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning; the listener
                // itself stays usable.
                tracing::warn!(error = %e, "fault proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if *shared.mode.borrow() == ProxyMode::Refuse {
            reset(client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (cut_tx, cut_rx) = oneshot::channel();
        shared.connections().insert(
            id,
            Registration {
                cut: cut_tx,
                task: None,
            },
        );
        let task = tokio::spawn(serve_connection(Arc::clone(&shared), id, client, cut_rx));
        // The task may already have finished and deregistered itself.
        if let Some(registration) = shared.connections().get_mut(&id) {
            registration.task = Some(task.abort_handle());
        }
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Deregister {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        self.shared.connections().remove(&self.id);
    }
}

/// How a proxied connection ended.
enum End {
    /// Both directions reached end-of-stream and forwarded it.
    Closed,
    /// A socket failed, or a protocol-aware cut was made; both sides are
    /// reset.
    Failed,
    /// [`FaultProxy::cut_all`] asked for a reset (with its acknowledgement
    /// channel, if it is still waiting).
    Cut(Option<oneshot::Sender<()>>),
}

async fn serve_connection(
    shared: Arc<Shared>,
    id: u64,
    mut client: TcpStream,
    mut cut: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let _deregister = Deregister {
        shared: Arc::clone(&shared),
        id,
    };
    let _ = client.set_nodelay(true);

    // A blackholed network does not let the handshake through either, so the
    // upstream connection is only made once traffic may flow.
    let connect = async {
        let mut mode = shared.mode.subscribe();
        wait_until_forwarding(&mut mode).await?;
        tokio::time::timeout(
            UPSTREAM_CONNECT_TIMEOUT,
            TcpStream::connect(shared.upstream),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))?
    };
    let mut server = tokio::select! {
        biased;
        ack = &mut cut => {
            reset(client);
            acknowledge(ack.ok());
            return;
        }
        server = connect => match server {
            Ok(server) => server,
            Err(e) => {
                tracing::debug!(error = %e, upstream = %shared.upstream, "fault proxy: upstream unreachable");
                reset(client);
                return;
            }
        },
    };
    let _ = server.set_nodelay(true);

    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let link = Link::new();
        let upstream = forward(
            Direction::ClientToServer,
            client_read,
            server_write,
            shared.mode.subscribe(),
            Tap::Client(ClientTap::new(Arc::clone(&link), Arc::clone(&shared.cuts))),
        );
        let downstream = forward(
            Direction::ServerToClient,
            server_read,
            client_write,
            shared.mode.subscribe(),
            Tap::Server(ServerTap::new(Arc::clone(&link))),
        );
        // `biased` so that once a cut is requested, not one more byte is
        // forwarded: the pipelines are dropped before they are polled again.
        tokio::select! {
            biased;
            ack = &mut cut => End::Cut(ack.ok()),
            result = async { tokio::try_join!(upstream, downstream) } => match result {
                Ok(_) => End::Closed,
                Err(_) => End::Failed,
            },
        }
    };
    match end {
        End::Closed => {}
        End::Failed => {
            reset(client);
            reset(server);
        }
        End::Cut(ack) => {
            reset(client);
            reset(server);
            acknowledge(ack);
        }
    }
}

fn acknowledge(ack: Option<oneshot::Sender<()>>) {
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

/// Closes `stream` with a TCP RST instead of an orderly FIN, so the peer sees
/// "connection reset" at once rather than a clean end-of-stream.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Waits until the mode lets data through.
async fn wait_until_forwarding(mode: &mut watch::Receiver<ProxyMode>) -> io::Result<()> {
    mode.wait_for(ProxyMode::forwards)
        .await
        .map(|_| ())
        .map_err(|_| io::Error::other("fault proxy stopped"))
}

/// What travels from the read stage to the write stage of one direction.
enum Event {
    /// Bytes, in order, with the time they were read.
    Data { bytes: Vec<u8>, read_at: Instant },
    /// The reader reached end-of-stream; the writer shuts its side down.
    Eof { read_at: Instant },
    /// A protocol-aware cut, carried out once the bytes before it are
    /// written: the direction fails, and the connection is reset.
    Cut { order: CutOrder, read_at: Instant },
    /// The server side holds back replies from here on: everything before
    /// is written (a pending cut waits for this).
    Drained { read_at: Instant },
}

/// The protocol-aware part of a direction's read stage.
enum Tap {
    Client(ClientTap),
    Server(ServerTap),
}

impl Tap {
    /// The link both directions share, for the write stage's cut orders.
    fn link(&self) -> Arc<Link> {
        match self {
            Tap::Client(tap) => tap.link(),
            Tap::Server(tap) => tap.link(),
        }
    }

    fn cuts(&self) -> Option<Arc<Cuts>> {
        match self {
            Tap::Client(tap) => Some(tap.cuts()),
            Tap::Server(_) => None,
        }
    }

    /// What to forward of a chunk, and what to do after it.
    fn process(&mut self, bytes: Vec<u8>, read_at: Instant) -> (Vec<u8>, Option<Event>) {
        match self {
            Tap::Client(tap) => match tap.process(bytes) {
                ClientStep::Forward(bytes) => (bytes, None),
                ClientStep::Cut(bytes, order) => (bytes, Some(Event::Cut { order, read_at })),
            },
            Tap::Server(tap) => match tap.process(bytes) {
                (bytes, false) => (bytes, None),
                (bytes, true) => (bytes, Some(Event::Drained { read_at })),
            },
        }
    }

    /// Bytes held back when the stream ended.
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Tap::Client(tap) => tap.finish(),
            Tap::Server(_) => Vec::new(),
        }
    }
}

/// Forwards one direction of a connection until end-of-stream (forwarded as
/// a write shutdown) or an error.
///
/// The read stage reads as fast as the pipeline depth allows; the write stage
/// releases each event once the mode allows forwarding and the mode's latency
/// has passed since the event was read. Both stages run concurrently in the
/// caller's task, so dropping the returned future stops the direction at once.
async fn forward<R, W>(
    direction: Direction,
    mut reader: R,
    mut writer: W,
    mut mode: watch::Receiver<ProxyMode>,
    mut tap: Tap,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Event>(PIPELINE_DEPTH);
    let link = tap.link();
    let cuts = tap.cuts();

    let read_stage = async move {
        loop {
            let mut bytes = vec![0u8; CHUNK_SIZE];
            let n = reader.read(&mut bytes).await?;
            let read_at = Instant::now();
            if n == 0 {
                let held = tap.finish();
                if !held.is_empty() {
                    let data = Event::Data {
                        bytes: held,
                        read_at,
                    };
                    if tx.send(data).await.is_err() {
                        return Ok(());
                    }
                }
                let _ = tx.send(Event::Eof { read_at }).await;
                return Ok::<(), io::Error>(());
            }
            bytes.truncate(n);
            let (bytes, then) = tap.process(bytes, read_at);
            if !bytes.is_empty() && tx.send(Event::Data { bytes, read_at }).await.is_err() {
                return Ok(());
            }
            if let Some(event) = then {
                // Nothing after a cut point is read, let alone forwarded.
                let cut = matches!(event, Event::Cut { .. });
                if tx.send(event).await.is_err() || cut {
                    return Ok(());
                }
            }
        }
    };

    let write_stage = async move {
        while let Some(event) = rx.recv().await {
            let read_at = match &event {
                Event::Data { read_at, .. }
                | Event::Eof { read_at }
                | Event::Cut { read_at, .. }
                | Event::Drained { read_at } => *read_at,
            };
            release_at(&mut mode, read_at).await?;
            match event {
                Event::Data { bytes, .. } => writer.write_all(&bytes).await?,
                Event::Eof { .. } => {
                    writer.shutdown().await?;
                    return Ok(());
                }
                Event::Drained { .. } => link.mark_drained(),
                Event::Cut { order, .. } => {
                    let cuts = cuts.as_deref().expect("only the client side cuts");
                    return Err(order.execute(&link, cuts).await);
                }
            }
        }
        Ok::<(), io::Error>(())
    };

    tokio::try_join!(read_stage, write_stage)
        .map(|_| ())
        .map_err(|e| {
            tracing::trace!(?direction, error = %e, "fault proxy direction failed");
            e
        })
}

/// Waits until an event read at `read_at` may be written: the mode forwards
/// and its latency has elapsed since `read_at`. Re-checks after sleeping, so a
/// blackhole that starts during the delay holds the event back.
async fn release_at(mode: &mut watch::Receiver<ProxyMode>, read_at: Instant) -> io::Result<()> {
    loop {
        wait_until_forwarding(mode).await?;
        let latency = mode.borrow().latency();
        tokio::time::sleep_until(read_at + latency).await;
        if mode.borrow().forwards() {
            return Ok(());
        }
    }
}

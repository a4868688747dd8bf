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
//!   its own (`connection`), registered in a shared registry so
//!   [`FaultProxy::cut_all`] can reach it and [`FaultProxy::connection_count`]
//!   can count it.
//! * The fault mode (`mode`) lives in a `tokio::sync::watch` channel that every
//!   connection watches, so a mode change affects live connections at once.
//! * Each direction of a connection is a two-stage pipeline (`pipeline`): a
//!   *read stage* that timestamps every chunk it reads, and a *write stage* that
//!   releases chunks in order when the mode allows it (not blackholed, latency
//!   elapsed since the chunk was read). Latency is thus a propagation delay
//!   that does not throttle throughput, and a blackhole holds the bytes like a
//!   network partition would: when it heals, the stream goes on where it
//!   stopped.
//! * Protocol-aware faults (e.g. cutting after a `COMMIT` went upstream but
//!   before its reply came back, see [`CutPoint`]) hook in between the two
//!   stages: each read stage frames the PostgreSQL messages of its direction
//!   ([`crate::protocol`]), and the client's may end its stream with a cut
//!   order that the write stage carries out once the bytes before it are
//!   written ([`crate::cuts`]).

mod connection;
mod mode;
mod pipeline;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cuts::{CutCounts, CutPoint, CutRule, Cuts, RandomCuts};
use connection::{Registration, Shared, accept_loop};
pub use mode::{Direction, ProxyMode};

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

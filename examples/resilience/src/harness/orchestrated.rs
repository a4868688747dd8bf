//! A cluster a real orchestrator runs, as the failover scenarios see it: Patroni (on
//! etcd, behind HAProxy) or pg_auto_failover, started by the test kit, with one way
//! to ask either for its primary, a switchover, a crash, the return of a node, and the
//! instant a route to the primary took a real write.

use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use resilient_tx_testkit::{AutoFailoverFormation, Killed, PatroniCluster, Via};

use super::inspect::connect;
use super::{CaseError, stop};
use crate::topology::{Orchestrator, Replication, Route};

/// Nodes of every cluster the scenarios start: a primary and one standby, the
/// smallest cluster that fails over.
const NODES: usize = 2;

/// One orchestrated cluster of [`NODES`] nodes.
#[derive(Debug)]
pub(crate) enum Orchestrated {
    Patroni(PatroniCluster),
    AutoFailover(AutoFailoverFormation),
}

/// How long pg_auto_failover's monitor waits for a primary to report itself demoted
/// before it promotes the standby, in a switchover as after a failure. With the test
/// kit's 2 s a switchover on a loaded machine lost acknowledged writes once: a keeper
/// that falls behind leaves the old primary writable after its standby was promoted.
/// 5 s (pg_auto_failover's default is 30 s) costs an unplanned failover 3 s more.
const PRIMARY_DEMOTE_TIMEOUT: Duration = Duration::from_secs(5);

impl Orchestrated {
    /// Starts a cluster; returns once node 0 is the primary and the other node streams
    /// from it.
    pub(crate) async fn start(
        orchestrator: Orchestrator,
        replication: Replication,
    ) -> io::Result<Orchestrated> {
        Ok(match orchestrator {
            Orchestrator::Patroni => Orchestrated::Patroni(
                PatroniCluster::builder()
                    .nodes(NODES)
                    .synchronous_mode(replication.synchronous())
                    .start()
                    .await?,
            ),
            Orchestrator::AutoFailover => Orchestrated::AutoFailover(
                AutoFailoverFormation::builder()
                    .nodes(NODES)
                    .primary_demote_timeout(PRIMARY_DEMOTE_TIMEOUT)
                    .start()
                    .await?,
            ),
        })
    }

    /// The URL a gateway on `route` connects to.
    pub(crate) fn url(&self, route: Route) -> String {
        match (self, route) {
            (Orchestrated::Patroni(c), Route::Proxy) => c.write_url(),
            (Orchestrated::Patroni(c), Route::MultiHost) => c.multi_host_url(),
            // The formation has no proxy; scenarios only ask for the routes it offers.
            (Orchestrated::AutoFailover(f), _) => f.url().to_owned(),
        }
    }

    /// The URL of node `index` alone, as the superuser.
    pub(crate) fn node_url(&self, index: usize) -> String {
        match self {
            Orchestrated::Patroni(c) => c.nodes()[index].url(),
            Orchestrated::AutoFailover(f) => f.nodes()[index].url(),
        }
    }

    /// The node's PostgreSQL port.
    pub(crate) fn node_port(&self, index: usize) -> u16 {
        match self {
            Orchestrated::Patroni(c) => c.nodes()[index].port(),
            Orchestrated::AutoFailover(f) => f.nodes()[index].port(),
        }
    }

    /// The node the orchestrator has as its running primary.
    pub(crate) async fn primary(&self) -> io::Result<usize> {
        match self {
            Orchestrated::Patroni(c) => c.leader().await,
            Orchestrated::AutoFailover(f) => f.primary().await,
        }
    }

    /// A planned switchover to the other node, by the orchestrator's own command;
    /// returns the new primary once the orchestrator has it running (it may not take
    /// writes yet).
    pub(crate) async fn switchover(&self) -> io::Result<usize> {
        match self {
            Orchestrated::Patroni(c) => {
                let old = c.leader().await?;
                c.switchover(Some((old + 1) % NODES)).await
            }
            Orchestrated::AutoFailover(f) => f.switchover().await,
        }
    }

    /// SIGKILLs the primary's node: its Patroni or `pg_autoctl` and its PostgreSQL.
    pub(crate) async fn kill_primary(&self) -> io::Result<Killed> {
        match self {
            Orchestrated::Patroni(c) => c.kill_leader().await,
            Orchestrated::AutoFailover(f) => f.kill_primary().await,
        }
    }

    /// Starts a killed node's Patroni or `pg_autoctl` again: the orchestrator makes it
    /// a standby of the current primary (Patroni rewinds it with `pg_rewind`).
    pub(crate) fn start_node(&self, index: usize) -> io::Result<()> {
        match self {
            Orchestrated::Patroni(c) => c.start_node(index),
            Orchestrated::AutoFailover(f) => f.start_node(index),
        }
    }

    /// Waits until every running node has its role again, one primary and the others
    /// streaming from it; returns the primary.
    pub(crate) async fn wait_whole(&self, timeout: Duration) -> io::Result<usize> {
        match self {
            Orchestrated::Patroni(c) => c.wait_healthy(timeout).await,
            Orchestrated::AutoFailover(f) => f.wait_settled(timeout).await,
        }
    }

    /// The instant a write on a connection of its own, through `route`, committed.
    pub(crate) async fn wait_writable(
        &self,
        route: Route,
        timeout: Duration,
    ) -> io::Result<Instant> {
        let via = match route {
            Route::Proxy => Via::Proxy,
            Route::MultiHost => Via::MultiHost,
        };
        self.wait_writable_via(via, timeout).await
    }

    /// The instant a write through `via` committed.
    pub(crate) async fn wait_writable_via(
        &self,
        via: Via,
        timeout: Duration,
    ) -> io::Result<Instant> {
        match self {
            Orchestrated::Patroni(c) => c.wait_writable(via, timeout).await,
            Orchestrated::AutoFailover(f) => f.wait_writable(via, timeout).await,
        }
    }
}

impl Orchestrated {
    /// Stops the WAL senders of node `index` (a primary) with SIGSTOP until the returned
    /// guard is dropped: its standbys stay up and answer, but receive nothing more, like
    /// standbys on a slow link falling behind. The senders, not the standby's receiver:
    /// WAL already sent would wait in the receiver's socket, and a kill of the primary
    /// would not take it away.
    pub(crate) async fn freeze_senders(&self, index: usize) -> Result<FrozenSenders, CaseError> {
        let client = connect(&self.node_url(index)).await?;
        let rows = client
            .query("SELECT pid FROM pg_stat_replication", &[])
            .await?;
        if rows.is_empty() {
            return Err(stop(format!(
                "node {index} has no WAL sender: no standby streams from it"
            )));
        }
        let mut frozen = FrozenSenders { pids: Vec::new() };
        for row in rows {
            let pid: i32 = row.try_get(0)?;
            signal(pid, "STOP")?;
            frozen.pids.push(pid);
        }
        Ok(frozen)
    }
}

/// WAL senders stopped by [`Orchestrated::freeze_senders`]; those still alive run
/// again when this is dropped (a killed primary took the others with it).
#[derive(Debug)]
pub(crate) struct FrozenSenders {
    pids: Vec<i32>,
}

impl Drop for FrozenSenders {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            if let Err(error) = signal(pid, "CONT") {
                tracing::warn!(%error, pid, "could not let a WAL sender run again");
            }
        }
    }
}

/// Sends `signal` (`STOP`, `CONT`) to `pid` with kill(1).
fn signal(pid: i32, signal: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -{signal} {pid} failed: {status}"
        )))
    }
}

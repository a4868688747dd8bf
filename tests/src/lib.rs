//! Test kit of resilient-tx: real PostgreSQL servers and network faults for
//! the integration suites.
//!
//! * [`PgCluster`] — a throw-away PostgreSQL server (initdb'ed into a
//!   temporary directory, on a port of its own) that tests can stop, restart,
//!   crash, replicate, promote, and whose backends they can terminate.
//! * [`FaultProxy`] — a TCP proxy in front of a server that adds latency,
//!   goes silent (blackhole), refuses or resets connections on command, and
//!   cuts connections at exact points of the PostgreSQL protocol
//!   ([`CutPoint`]: e.g. after a COMMIT reached the server, before its reply
//!   reached the client), once or at random from a seed ([`RandomCuts`]).
//! * TLS-only clusters ([`PgClusterBuilder::tls`]): certificates generated
//!   at run time ([`TlsFiles`]), plain-text TCP refused by `pg_hba.conf`.
//! * [`PgBouncer`] — a PgBouncer process in front of a cluster (transaction
//!   pooling by default), with its admin console.
//! * [`PatroniCluster`] — PostgreSQL nodes run by Patroni on a local etcd,
//!   behind HAProxy; planned switchover, unplanned loss of the leader.
//! * [`AutoFailoverFormation`] — a pg_auto_failover monitor and its nodes;
//!   the same two events.
//! * [`wait_writable`] — the instant a server (or a route to one) took a
//!   real write, to measure how long a failover kept writes away.
//! * [`binaries`] — where the PostgreSQL binaries are and how to run them
//!   (as the `postgres` OS user when the tests run as root).
//!
//! Everything is isolated per instance (directory, port, socket directory),
//! so tests may run in parallel, in threads (`cargo test`) or processes
//! (`cargo nextest`). The server binaries are found through `$PG_BINDIR`,
//! `pg_config --bindir`, or `/usr/lib/postgresql/<major>/bin`; PostgreSQL 14
//! or newer is needed (`pg_terminate_backend` with a timeout).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use resilient_tx_testkit::{CutPoint, FaultProxy, PgCluster, RandomCuts};
//!
//! let cluster = PgCluster::start().await?;
//! let proxy = FaultProxy::start(cluster.socket_addr()).await?;
//! // Point the code under test at `cluster.url_via(&proxy)`, then:
//! proxy.cut_next(CutPoint::AfterCommitBeforeReply); // committed, reply lost
//! proxy.cut_randomly(RandomCuts::new(0.05, 42));    // cuts anywhere, seeded
//! proxy.stop_cutting();
//! proxy.cut_all().await;           // every connection is reset
//! cluster.restart_immediate().await?; // the server crashes and recovers
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod auto_failover;
mod auto_failover_node;
pub mod binaries;
mod cluster;
mod cuts;
mod daemon;
mod daemon_slot;
mod etcd;
mod failover;
mod haproxy;
mod patroni;
mod patroni_node;
mod patroni_rest;
mod pg_autoctl;
mod pgbouncer;
mod pgbouncer_config;
mod ports;
mod postmaster;
mod process_tree;
mod protocol;
mod proxy;
mod replica;
mod rest;
mod settings;
mod tls;
mod wait;

pub use auto_failover::{AutoFailoverFormation, AutoFailoverFormationBuilder};
pub use auto_failover_node::AutoFailoverNode;
pub use cluster::{ADMIN_APPLICATION_NAME, PgCluster, PgClusterBuilder, SUPERUSER};
pub use cuts::{CutCounts, CutPoint, CutRule, REPLY_WAIT, RandomCuts};
pub use etcd::Etcd;
pub use failover::{
    Killed, PROBE_APPLICATION_NAME, Via, WRITE_PROBE_TABLE, try_write, wait_writable,
};
pub use haproxy::{HaProxy, READ_BACKEND, ServerStatus, WRITE_BACKEND};
pub use patroni::{PatroniCluster, PatroniClusterBuilder};
pub use patroni_node::PatroniNode;
pub use patroni_rest::PatroniMember;
pub use pg_autoctl::AutoFailoverNodeState;
pub use pgbouncer::{CONSOLE_DATABASE, PGBOUNCER_ENV, PgBouncer};
pub use pgbouncer_config::{PgBouncerBuilder, PoolMode};
pub use ports::pick_free_port;
pub use proxy::{Direction, FaultProxy, ProxyMode};
pub use tls::{CLIENT_CERT_ROLE, SERVER_NAMES, TlsFiles};

/// Installs a `tracing` subscriber for tests: filtered by `RUST_LOG`
/// (default `info`), written through the test harness's capture so output
/// shows up only for failing tests. Safe to call from every test: only the
/// first call in a process installs anything.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

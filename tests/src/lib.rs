//! Real PostgreSQL servers and real network faults for tests: the test kit of
//! resilient-tx, usable in any project's tests.
//!
//! A test starts its own throw-away server, puts a fault proxy in front of it,
//! points the code under test at the proxy, and then does to it what
//! production does: restarts, crashes, failovers, terminated backends, a silent
//! network, a connection cut right after the server executed a COMMIT and
//! before its reply came back. Nothing is mocked: the server is PostgreSQL, the
//! driver is whatever the code under test uses, and the faults happen on real
//! TCP connections.
//!
//! # Quick start
//!
//! The case that matters most for exactly-once: the server commits, the client
//! never hears back. A `#[retriable_tx]` function must neither fail nor apply
//! twice.
//!
//! ```
//! use resilient_tx::{Db, Tx, TxError, retriable_tx};
//! use resilient_tx_testkit::{CutPoint, FaultProxy, PgCluster};
//!
//! #[retriable_tx]
//! async fn add_order(tx: &mut Tx<'_>, id: i32) -> Result<(), TxError> {
//!     tx.execute("INSERT INTO orders(id) VALUES ($1)", &[&id]).await?;
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let cluster = PgCluster::start().await?; // a server of its own, removed on drop
//!     let admin = cluster.admin().await?;
//!     admin.batch_execute("CREATE TABLE orders(id int)").await?;
//!     let proxy = FaultProxy::start(cluster.socket_addr()).await?;
//!     let db = Db::connect(&cluster.url_via(&proxy)).await?;
//!
//!     proxy.cut_next(CutPoint::AfterCommitBeforeReply); // committed, reply lost
//!     add_order(&db, 1).await?; // commit verification finds it committed: Ok
//!     assert_eq!(proxy.cuts().after_commit, 1);
//!     let rows: i64 = admin.query_one("SELECT count(*) FROM orders", &[]).await?.get(0);
//!     assert_eq!(rows, 1, "applied exactly once");
//!     Ok(())
//! }
//! ```
//!
//! In `Cargo.toml` (the kit is not published: depend on it by path or git):
//!
//! ```toml
//! [dev-dependencies]
//! resilient-tx-testkit = { path = "../resilient-tx/tests" }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! # What is in the kit
//!
//! * **Clusters.** [`PgCluster::start`] initdb's a server into a temporary
//!   directory and starts it on a free port of 127.0.0.1 (never 5432);
//!   [`PgCluster::builder`] adds settings. [`PgCluster::url`] is its
//!   connection URL, [`PgCluster::admin`] a superuser connection over the Unix
//!   socket that no proxy or TLS rule gets in the way of. The lifecycle:
//!   [`stop_fast`](PgCluster::stop_fast), [`stop_immediate`](PgCluster::stop_immediate),
//!   [`restart_fast`](PgCluster::restart_fast),
//!   [`restart_immediate`](PgCluster::restart_immediate) (crash recovery),
//!   [`kill`](PgCluster::kill) (SIGKILL of every server process),
//!   [`start_again`](PgCluster::start_again); configuration changes that are
//!   in force when they return ([`alter_system`](PgCluster::alter_system),
//!   [`reload_config`](PgCluster::reload_config)).
//! * **Backend termination.** [`PgCluster::terminate_backends`] ends the
//!   backends of one `application_name` (put it in the URL of the code under
//!   test) and waits until they are gone;
//!   [`terminate_all_client_backends`](PgCluster::terminate_all_client_backends)
//!   ends all but the kit's own.
//! * **Replicas and promotion.** [`PgCluster::create_replica`] makes a
//!   streaming hot standby; [`wait_replay_catch_up`](PgCluster::wait_replay_catch_up),
//!   [`promote`](PgCluster::promote), and
//!   [`demote_to_standby_of`](PgCluster::demote_to_standby_of) for a
//!   switchover (the old primary follows the new one). A multi-host URL
//!   (`postgres://u@127.0.0.1:p1,127.0.0.1:p2/db?target_session_attrs=read-write`)
//!   lets the code under test find the new primary.
//! * **The TCP fault proxy.** [`FaultProxy`] sits in front of a server
//!   ([`PgCluster::url_via`] is the URL through it) and switches, for live and
//!   new connections alike, between passing, [`latency`](FaultProxy::latency),
//!   [`blackhole`](FaultProxy::blackhole) (a silent network that holds the
//!   bytes), [`refuse`](FaultProxy::refuse) (new connections reset) and
//!   [`cut_all`](FaultProxy::cut_all) (every live connection reset).
//! * **Protocol-aware cuts.** The same proxy frames the PostgreSQL protocol and
//!   cuts a connection at an exact point ([`CutPoint`]): before a statement,
//!   after it ran but before its reply, before COMMIT, after COMMIT ran but
//!   before its reply. Once ([`FaultProxy::cut_next`],
//!   [`cut_next_matching`](FaultProxy::cut_next_matching), several
//!   [`CutRule`]s with [`cut_once`](FaultProxy::cut_once)) or at random,
//!   reproducibly from a seed ([`RandomCuts`]); [`FaultProxy::cuts`] counts
//!   what was cut ([`CutCounts`]).
//! * **TLS-only clusters.** [`PgClusterBuilder::tls`]: certificates generated
//!   at run time ([`TlsFiles`]: the CA for `sslrootcert`, a client certificate
//!   for [`CLIENT_CERT_ROLE`], an untrusted CA), and `pg_hba.conf` refusing
//!   every TCP connection that is not encrypted. Connect with host `localhost`
//!   or `127.0.0.1` ([`SERVER_NAMES`]) and
//!   `sslmode=verify-full&sslrootcert=<ca_cert()>`.
//! * **PgBouncer.** [`PgBouncer::start`] runs a PgBouncer in front of a
//!   cluster (transaction pooling by default, [`PgBouncerBuilder`] for the
//!   mode, pool size, users, or a [`FaultProxy`] between PgBouncer and the
//!   server), with its admin console ([`PgBouncer::show`]) and its own
//!   restarts and crashes.
//! * **Orchestrators.** [`PatroniCluster`]: PostgreSQL nodes run by Patroni on
//!   a local etcd, behind HAProxy (writes to `/primary`, reads to `/replica`),
//!   optionally with `synchronous_mode`; a planned switchover, an unplanned
//!   loss of the leader. [`AutoFailoverFormation`]: a pg_auto_failover monitor
//!   and its nodes, the same two events. [`wait_writable`] gives the instant a
//!   server, or a route to one, took a real write, to measure how long a
//!   failover kept writes away.
//! * [`binaries`]: where the PostgreSQL binaries are and how to run them
//!   (as the `postgres` OS user when the tests run as root);
//!   [`init_tracing`] for log output that shows only for failing tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use resilient_tx_testkit::{CutPoint, FaultProxy, PgCluster, RandomCuts};
//!
//! let cluster = PgCluster::start().await?;
//! let replica = cluster.create_replica().await?;
//! let proxy = FaultProxy::start(cluster.socket_addr()).await?;
//! // Point the code under test at `cluster.url_via(&proxy)`, then:
//! proxy.latency(Duration::from_millis(5)); // every chunk 5 ms late, each way
//! proxy.blackhole();                       // a partition: nothing moves
//! proxy.pass();                            // healed; held bytes flow again
//! proxy.cut_next(CutPoint::BeforeCommit);  // COMMIT never reaches the server
//! proxy.cut_randomly(RandomCuts::new(0.05, 42)); // cuts anywhere, seeded
//! proxy.stop_cutting();
//! proxy.cut_all().await;                   // every connection is reset
//! cluster.terminate_backends("my-app").await?; // application_name=my-app
//! cluster.restart_immediate().await?;      // the server crashes and recovers
//! cluster.stop_fast().await?;              // failover:
//! replica.promote().await?;                // the standby takes writes
//! # Ok(()) }
//! ```
//!
//! # Requirements, isolation, cleanup
//!
//! The PostgreSQL server binaries (14 or newer: `initdb`, `postgres`, and
//! `pg_basebackup` and `pg_ctl` for replicas), found through
//! `$PG_BINDIR`, `pg_config --bindir`, or `/usr/lib/postgresql/<major>/bin`;
//! `pgbouncer` for [`PgBouncer`] (`$PGBOUNCER` or `/usr/sbin/pgbouncer`). No
//! server needs to be running. When the tests run as root, the servers run as
//! the `postgres` OS user, as PostgreSQL demands.
//!
//! Every cluster, proxy and PgBouncer has its own directory, port and socket
//! directory, so tests may run in parallel, in threads (`cargo test`) or
//! processes (`cargo nextest`). Dropping one stops it and deletes its files,
//! also when the test panics. Lifecycle methods take `&self`, so a cluster can
//! be shared (`Arc`) while a test restarts it under its clients. The servers
//! run with `fsync = off` (fast, and safe for everything but an operating
//! system crash) and `synchronous_commit = on`, so a killed server keeps every
//! commit it acknowledged.

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

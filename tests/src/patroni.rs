//! [`PatroniCluster`]: PostgreSQL nodes managed by Patroni on a local etcd,
//! behind HAProxy, tuned to fail over as fast as Patroni allows.
//!
//! Patroni keeps the leader lock in etcd with a time to live (`ttl`, 20 s at
//! the least by Patroni's documentation); the leader renews it every
//! `loop_wait` (1 s). A planned switchover takes a few seconds; after an
//! unplanned loss of the leader a replica takes over once the lock expired,
//! so about `ttl` later.
//!
//! Node 0 bootstraps the cluster and is the first leader; the others are
//! cloned from it. `use_pg_rewind` is on, so a former leader started again
//! rejoins as a replica.
//!
//! Needs the Debian packages `patroni`, `etcd-server` and `haproxy`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use resilient_tx_testkit::{PatroniCluster, Via};
//!
//! let cluster = PatroniCluster::builder().synchronous_mode(true).start().await?;
//! // Point the code under test at `cluster.write_url()` (HAProxy) or
//! // `cluster.multi_host_url()`, then:
//! let killed = cluster.kill_leader().await?;
//! let writable = cluster.wait_writable(Via::Proxy, Duration::from_secs(60)).await?;
//! println!("no writes for {:?}", writable - killed.at);
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;

use crate::cluster::SUPERUSER;
use crate::daemon;
use crate::etcd::Etcd;
use crate::failover::{self, Killed, Via};
use crate::haproxy::{self, HaProxy};
use crate::patroni_node::{PatroniNode, SharedConfig};
use crate::patroni_rest::{self, PatroniMember};
use crate::ports;
use crate::wait::{self, Probe};

/// How long bootstrapping node 0 may take (initdb, first start).
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the other nodes may take to be cloned and to stream.
const REPLICAS_TIMEOUT: Duration = Duration::from_secs(90);

/// How long HAProxy's checks may at least take to agree with Patroni.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `patronictl switchover` and the new leader's takeover may take.
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of a new cluster; see [`PatroniCluster::builder`].
#[derive(Debug, Clone)]
pub struct PatroniClusterBuilder {
    nodes: usize,
    synchronous_mode: bool,
    synchronous_mode_strict: bool,
    ttl: u32,
    loop_wait: u32,
    retry_timeout: u32,
    parameters: Vec<(String, String)>,
}

impl Default for PatroniClusterBuilder {
    fn default() -> Self {
        PatroniClusterBuilder {
            nodes: 2,
            synchronous_mode: false,
            synchronous_mode_strict: false,
            ttl: 20,
            loop_wait: 1,
            // Above Patroni's minimum of 3 s: the leader demotes itself when
            // etcd does not answer within this time, and etcd fsyncs every
            // write on a machine busy with parallel tests.
            retry_timeout: 5,
            parameters: Vec::new(),
        }
    }
}

impl PatroniClusterBuilder {
    /// Number of nodes, 1 to 5 (default 2).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Patroni's `synchronous_mode`: a commit returns once a synchronous
    /// standby has it, and Patroni fails over only to that standby, so no
    /// acknowledged commit is lost in a failover (default off).
    pub fn synchronous_mode(mut self, on: bool) -> Self {
        self.synchronous_mode = on;
        self
    }

    /// Patroni's `synchronous_mode_strict`: commits block while no
    /// synchronous standby is available, instead of going asynchronous.
    /// Needs [`synchronous_mode`](Self::synchronous_mode).
    pub fn synchronous_mode_strict(mut self, on: bool) -> Self {
        self.synchronous_mode_strict = on;
        self
    }

    /// Time to live of the leader lock in seconds (default and minimum 20):
    /// roughly how long an unplanned failover takes.
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.ttl = seconds;
        self
    }

    /// Seconds Patroni sleeps between its checks (default and minimum 1).
    pub fn loop_wait(mut self, seconds: u32) -> Self {
        self.loop_wait = seconds;
        self
    }

    /// Seconds Patroni retries etcd and PostgreSQL before giving up
    /// (default 5, minimum 3; `loop_wait + 2 * retry_timeout <= ttl`).
    pub fn retry_timeout(mut self, seconds: u32) -> Self {
        self.retry_timeout = seconds;
        self
    }

    /// A PostgreSQL setting for every node, in Patroni's dynamic
    /// configuration (later ones override earlier ones and the kit's).
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.parameters.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Checks the options against Patroni's rules.
    fn validate(&self) -> io::Result<()> {
        let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        if !(1..=5).contains(&self.nodes) {
            return invalid(format!(
                "a Patroni cluster needs 1 to 5 nodes, not {}",
                self.nodes
            ));
        }
        if self.synchronous_mode_strict && !self.synchronous_mode {
            return invalid("synchronous_mode_strict needs synchronous_mode".to_owned());
        }
        if self.ttl < 20 || self.loop_wait < 1 || self.retry_timeout < 3 {
            return invalid(format!(
                "Patroni needs ttl >= 20, loop_wait >= 1 and retry_timeout >= 3, \
                 not {}, {} and {}",
                self.ttl, self.loop_wait, self.retry_timeout
            ));
        }
        if self.loop_wait + 2 * self.retry_timeout > self.ttl {
            return invalid(format!(
                "Patroni needs loop_wait + 2 * retry_timeout <= ttl, not {} + 2 * {} > {}",
                self.loop_wait, self.retry_timeout, self.ttl
            ));
        }
        Ok(())
    }

    /// `bootstrap.dcs`: the dynamic configuration all nodes share.
    fn dcs(&self) -> serde_json::Value {
        let mut parameters = json!({
            "wal_level": "replica",
            "hot_standby": "on",
            "wal_log_hints": "on",
            "max_connections": 200,
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "shared_buffers": "32MB",
            // The same trade as PgCluster's: only an OS crash could lose
            // data, and tests never crash the OS. `full_page_writes` stays
            // on: pg_rewind refuses to work without it.
            "fsync": "off",
            "synchronous_commit": "on",
        });
        for (name, value) in &self.parameters {
            parameters[name.as_str()] = json!(value);
        }
        json!({
            "ttl": self.ttl,
            "loop_wait": self.loop_wait,
            "retry_timeout": self.retry_timeout,
            "maximum_lag_on_failover": 1_048_576,
            "synchronous_mode": self.synchronous_mode,
            "synchronous_mode_strict": self.synchronous_mode_strict,
            "postgresql": {
                "use_pg_rewind": true,
                "use_slots": true,
                "parameters": parameters,
            },
        })
    }

    /// Starts etcd, the nodes and HAProxy; returns once node 0 leads, every
    /// other node streams from it (one of them as synchronous standby in
    /// synchronous mode), and HAProxy routes writes to node 0 only.
    pub async fn start(self) -> io::Result<PatroniCluster> {
        self.validate()?;
        let mut attempt = 1;
        loop {
            match self.try_start().await {
                Err(e) if attempt < daemon::START_ATTEMPTS && daemon::is_port_clash(&e) => {
                    tracing::warn!(
                        attempt,
                        "a port of the Patroni cluster was taken, starting anew"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_start(&self) -> io::Result<PatroniCluster> {
        let started = Instant::now();
        let dir = daemon::temp_dir("resilient-tx-patroni-")?;
        let etcd = Etcd::start_in(&dir.path().join("etcd")).await?;
        let scope = format!("testkit-{}", etcd.endpoint().replace([':', '.'], "-"));
        let shared = SharedConfig {
            scope: scope.clone(),
            etcd: etcd.endpoint(),
            dcs: self.dcs(),
        };
        let ports = ports::pick_free_ports(2 * self.nodes)?;
        let nodes = (0..self.nodes)
            .map(|i| {
                let dir = dir.path().join(format!("node{i}"));
                PatroniNode::new(i, dir, ports[2 * i], ports[2 * i + 1], &shared)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let rest = patroni_rest::client()?;

        nodes[0].spawn()?;
        patroni_rest::wait_primary(&rest, &nodes[0], BOOTSTRAP_TIMEOUT).await?;
        for node in &nodes[1..] {
            node.spawn()?;
        }
        let servers: Vec<haproxy::Server> = nodes
            .iter()
            .map(|node| haproxy::Server {
                name: node.name().to_owned(),
                pg_port: node.port(),
                check_port: node.rest_port(),
            })
            .collect();
        let haproxy = HaProxy::start_in(&dir.path().join("haproxy"), &servers).await?;
        let cluster = PatroniCluster {
            nodes,
            haproxy,
            etcd,
            rest,
            scope,
            synchronous_mode: self.synchronous_mode,
            dir,
        };
        cluster.wait_healthy(REPLICAS_TIMEOUT).await?;
        failover::create_probe_table(&cluster.nodes[0].url()).await?;
        tracing::info!(
            nodes = cluster.nodes.len(),
            synchronous_mode = cluster.synchronous_mode,
            elapsed = ?started.elapsed(),
            "started Patroni cluster"
        );
        Ok(cluster)
    }
}

/// A Patroni cluster on one local etcd, with HAProxy in front; everything
/// lives in a temporary directory and is killed and removed on drop, also
/// when the test panics.
///
/// Ports are free ones on 127.0.0.1, so clusters can run in parallel. When
/// the tests run as root, Patroni and PostgreSQL run as the postgres OS user.
#[derive(Debug)]
pub struct PatroniCluster {
    // Dropped in this order: PostgreSQL first, the directory last.
    nodes: Vec<PatroniNode>,
    haproxy: HaProxy,
    etcd: Etcd,
    rest: reqwest::Client,
    scope: String,
    synchronous_mode: bool,
    dir: TempDir,
}

impl PatroniCluster {
    /// Options for a new cluster (2 nodes, asynchronous replication).
    pub fn builder() -> PatroniClusterBuilder {
        PatroniClusterBuilder::default()
    }

    /// Starts a cluster of two nodes with the default options.
    pub async fn start() -> io::Result<PatroniCluster> {
        Self::builder().start().await
    }

    /// The nodes, by index.
    pub fn nodes(&self) -> &[PatroniNode] {
        &self.nodes
    }

    /// Node `index`, if there is one.
    pub fn node(&self, index: usize) -> Option<&PatroniNode> {
        self.nodes.get(index)
    }

    fn checked_node(&self, index: usize) -> io::Result<&PatroniNode> {
        self.nodes.get(index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "there is no node {index}: the cluster has nodes 0 to {}",
                    self.nodes.len() - 1
                ),
            )
        })
    }

    /// HAProxy in front of the nodes.
    pub fn haproxy(&self) -> &HaProxy {
        &self.haproxy
    }

    /// The etcd holding the cluster's state.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// Patroni's `scope` (the cluster's name in etcd and `patronictl`).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The temporary directory holding everything; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// URL of the `postgres` database through HAProxy's write port (the
    /// leader).
    pub fn write_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/postgres",
            self.haproxy.write_port()
        )
    }

    /// URL of the `postgres` database through HAProxy's read port (the
    /// replicas, balanced).
    pub fn read_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/postgres",
            self.haproxy.read_port()
        )
    }

    /// URL listing every node with `target_session_attrs=read-write`: the
    /// client tries them in order and keeps the first that accepts writes.
    pub fn multi_host_url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        format!(
            "postgres://{SUPERUSER}@{}/postgres?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// The members as Patroni sees them (`GET /cluster` of the first node
    /// whose REST API answers).
    pub async fn members(&self) -> io::Result<Vec<PatroniMember>> {
        patroni_rest::members(&self.rest, &self.nodes).await
    }

    /// Index of the node holding the leader lock and running.
    pub async fn leader(&self) -> io::Result<usize> {
        let members = self.members().await?;
        patroni_rest::leader_of(&members, &self.nodes).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "there is no running leader right now: {}",
                    patroni_rest::describe(&members)
                ),
            )
        })
    }

    /// Planned switchover with `patronictl switchover --force`, to node `to`
    /// or (with `None`) to a replica of Patroni's choice. Returns the new
    /// leader once Patroni reports it running as leader; it may not accept
    /// writes yet: see [`wait_writable`](Self::wait_writable).
    pub async fn switchover(&self, to: Option<usize>) -> io::Result<usize> {
        let old = self.leader().await?;
        if let Some(to) = to {
            self.checked_node(to)?;
            if to == old {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("node {to} is the leader already"),
                ));
            }
        }
        let program = daemon::find_program("patronictl", "patroni")?;
        let mut cmd = daemon::command(&program, true)?;
        cmd.arg("-c").arg(self.nodes[old].config_path()).args([
            "switchover",
            "--force",
            "--leader",
            self.nodes[old].name(),
        ]);
        if let Some(to) = to {
            cmd.args(["--candidate", self.nodes[to].name()]);
        }
        cmd.arg(&self.scope).env("HOME", self.dir.path());
        let logs = self.node_logs();
        daemon::run_bounded(cmd, SWITCHOVER_TIMEOUT)
            .await
            .map_err(|e| wait::with_logs(e, &logs))?;
        let what = match to {
            Some(to) => format!("node {to} to lead after a switchover from node {old}"),
            None => format!("another node than {old} to lead after a switchover"),
        };
        wait::until(&what, SWITCHOVER_TIMEOUT, &logs, || async {
            match self.members().await {
                Ok(members) => match patroni_rest::leader_of(&members, &self.nodes) {
                    Some(new) if new != old && to.is_none_or(|to| to == new) => Probe::Ready(new),
                    _ => Probe::NotYet(patroni_rest::describe(&members)),
                },
                Err(e) => Probe::NotYet(e.to_string()),
            }
        })
        .await
    }

    /// SIGKILLs the leader's Patroni and PostgreSQL together: an unplanned
    /// loss of the primary, as in a machine crash. Killing only PostgreSQL
    /// would let the surviving Patroni restart it in place (no failover);
    /// killing only Patroni would leave a primary running without a lock.
    pub async fn kill_leader(&self) -> io::Result<Killed> {
        let leader = self.leader().await?;
        self.kill_node(leader).await
    }

    /// SIGKILLs node `index`'s Patroni and PostgreSQL together; returns when
    /// all of its processes are gone.
    pub async fn kill_node(&self, index: usize) -> io::Result<Killed> {
        self.checked_node(index)?.kill().await?;
        let at = Instant::now();
        tracing::info!(node = index, "killed Patroni node");
        Ok(Killed { node: index, at })
    }

    /// Starts node `index`'s Patroni again (after [`kill_node`](Self::kill_node));
    /// a former leader rejoins as a replica, rewound with `pg_rewind`. Wait
    /// with [`wait_healthy`](Self::wait_healthy).
    pub fn start_node(&self, index: usize) -> io::Result<()> {
        self.checked_node(index)?.spawn()
    }

    /// Waits until a write through `via` commits and returns the instant its
    /// COMMIT returned. Through [`Via::Proxy`], the write must also find
    /// HAProxy routing to a single server.
    pub async fn wait_writable(&self, via: Via, timeout: Duration) -> io::Result<Instant> {
        match via {
            Via::Node(index) => {
                let node = self.checked_node(index)?;
                let what = format!("node {index} (port {}) to accept a write", node.port());
                failover::wait_writable_logged(&node.url(), &what, timeout, &[node.log_path()])
                    .await
            }
            Via::MultiHost => {
                let url = self.multi_host_url();
                let what = format!("a write through the multi-host URL {url}");
                failover::wait_writable_logged(&url, &what, timeout, &self.node_logs()).await
            }
            Via::Proxy => {
                let url = self.write_url();
                let what = format!("a write through HAProxy ({url}) with one server UP");
                let mut logs = self.node_logs();
                logs.push(self.haproxy.log_path());
                wait::until(&what, timeout, &logs, || async {
                    if let Err(why) = failover::try_write(&url).await {
                        return Probe::NotYet(why);
                    }
                    let at = Instant::now();
                    match self.haproxy.write_servers_up().await {
                        Ok(up) if up.len() == 1 => Probe::Ready(at),
                        Ok(up) => Probe::NotYet(format!("written, but HAProxy has {up:?} UP")),
                        Err(e) => Probe::NotYet(e.to_string()),
                    }
                })
                .await
            }
        }
    }

    /// Waits until the cluster is whole again: every node whose Patroni runs
    /// is a member in good state, one of them leads, the others stream from
    /// it (as its `pg_stat_replication` shows; one as synchronous standby in
    /// synchronous mode), and HAProxy routes to match. Returns the leader.
    pub async fn wait_healthy(&self, timeout: Duration) -> io::Result<usize> {
        let started = Instant::now();
        let mut logs = self.node_logs();
        logs.push(self.etcd.log_path());
        let running: Vec<&PatroniNode> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let what = format!(
            "nodes {:?} to form a healthy cluster{}",
            running.iter().map(|n| n.index()).collect::<Vec<_>>(),
            if self.synchronous_mode {
                " with a synchronous standby"
            } else {
                ""
            }
        );
        let leader = wait::until(&what, timeout, &logs, || async {
            if let Some(node) = running.iter().find(|node| !node.is_running()) {
                let how = node.exit_status().unwrap_or_default();
                return Probe::Failed(format!("Patroni of {} stopped: {how}", node.name()));
            }
            if let Some(node) = running
                .iter()
                .find(|n| daemon::log_shows_port_clash(n.log_path()))
            {
                return Probe::Failed(format!("a port of {} is already in use", node.name()));
            }
            let members = match self.members().await {
                Ok(members) => members,
                Err(e) => return Probe::NotYet(e.to_string()),
            };
            let Some(leader) =
                patroni_rest::healthy_leader(&members, &running, self.synchronous_mode)
            else {
                return Probe::NotYet(patroni_rest::describe(&members));
            };
            // A killed node's member entry outlives it by up to `ttl`: each
            // node confirms its role itself.
            for node in &running {
                let path = if node.index() == leader {
                    "/primary"
                } else {
                    "/replica"
                };
                if let Err(why) = patroni_rest::confirms(&self.rest, node, path).await {
                    return Probe::NotYet(why);
                }
            }
            // A former leader runs as a replica before Patroni notices that
            // it must be rewound: only the leader's view says it streams.
            let streaming = match failover::side_query(
                &self.nodes[leader].url(),
                "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
            )
            .await
            {
                Ok(names) => names,
                Err(why) => return Probe::NotYet(format!("on the leader: {why}")),
            };
            let lagging: Vec<&str> = running
                .iter()
                .filter(|n| n.index() != leader && !streaming.iter().any(|s| s == n.name()))
                .map(|n| n.name())
                .collect();
            if lagging.is_empty() {
                Probe::Ready(leader)
            } else {
                Probe::NotYet(format!("{lagging:?} not streaming from the leader yet"))
            }
        })
        .await?;
        let replicas: Vec<&str> = running
            .iter()
            .filter(|node| node.index() != leader)
            .map(|node| node.name())
            .collect();
        let remaining = timeout
            .saturating_sub(started.elapsed())
            .max(ROUTES_TIMEOUT);
        self.haproxy
            .wait_routes(self.nodes[leader].name(), &replicas, remaining)
            .await?;
        Ok(leader)
    }

    fn node_logs(&self) -> Vec<&Path> {
        self.nodes.iter().map(PatroniNode::log_path).collect()
    }
}

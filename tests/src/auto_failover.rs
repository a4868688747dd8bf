//! [`AutoFailoverFormation`]: a pg_auto_failover monitor and its PostgreSQL
//! nodes, tuned to fail over within seconds.
//!
//! The monitor health-checks the nodes every second and considers a node
//! unhealthy after 3 s without news; a primary that cannot be reached gets
//! 2 s to demote itself before its standby is promoted. The defaults of
//! pg_auto_failover (5 s checks, 20 s, 30 s) are there for real networks.
//!
//! `pg_autoctl create` would size `shared_buffers` at a quarter of the
//! machine's memory per instance and listen on every address: the kit runs
//! `initdb` itself, puts its settings into `postgresql.auto.conf` (which wins
//! over `pg_autoctl`'s include file, and travels to the standbys with
//! `pg_basebackup`), and passes `--listen 127.0.0.1`. `pg_hba.conf` is
//! `initdb`'s trust-everything-local one (`--skip-pg-hba`).
//!
//! Node 0 is created first and is the first primary; the others are cloned
//! from it.
//!
//! Needs the Debian package `postgresql-<major>-auto-failover`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use resilient_tx_testkit::{AutoFailoverFormation, Via};
//!
//! let formation = AutoFailoverFormation::start().await?;
//! // Point the code under test at `formation.url()`, then:
//! let killed = formation.kill_primary().await?;
//! let writable = formation.wait_writable(Via::MultiHost, Duration::from_secs(60)).await?;
//! println!("no writes for {:?}", writable - killed.at);
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::auto_failover_node::{AutoFailoverNode, Instance};
use crate::cluster::SUPERUSER;
use crate::daemon;
use crate::failover::{self, Killed, Via};
use crate::pg_autoctl::{self, AutoFailoverNodeState, PgAutoctl};
use crate::ports;
use crate::wait::{self, Probe};

/// How long the monitor, or one node, may take to be created and running.
const CREATE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long `pg_autoctl perform switchover` may take (it waits itself).
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of a new formation; see [`AutoFailoverFormation::builder`].
#[derive(Debug, Clone)]
pub struct AutoFailoverFormationBuilder {
    nodes: usize,
    health_check_period: Duration,
    unhealthy_timeout: Duration,
    primary_demote_timeout: Duration,
}

impl Default for AutoFailoverFormationBuilder {
    fn default() -> Self {
        AutoFailoverFormationBuilder {
            nodes: 2,
            health_check_period: Duration::from_secs(1),
            unhealthy_timeout: Duration::from_secs(3),
            primary_demote_timeout: Duration::from_secs(2),
        }
    }
}

impl AutoFailoverFormationBuilder {
    /// Number of PostgreSQL nodes besides the monitor, 1 to 5 (default 2).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// How often the monitor checks each node (default 1 s).
    pub fn health_check_period(mut self, period: Duration) -> Self {
        self.health_check_period = period;
        self
    }

    /// How long without news before the monitor considers a node unhealthy
    /// (default 3 s).
    pub fn unhealthy_timeout(mut self, timeout: Duration) -> Self {
        self.unhealthy_timeout = timeout;
        self
    }

    /// How long an unreachable primary gets to demote itself before its
    /// standby is promoted (default 2 s).
    pub fn primary_demote_timeout(mut self, timeout: Duration) -> Self {
        self.primary_demote_timeout = timeout;
        self
    }

    fn validate(&self) -> io::Result<()> {
        if !(1..=5).contains(&self.nodes) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a pg_auto_failover formation needs 1 to 5 nodes, not {}",
                    self.nodes
                ),
            ));
        }
        let timers = [
            self.health_check_period,
            self.unhealthy_timeout,
            self.primary_demote_timeout,
        ];
        if timers.iter().any(|t| t.as_millis() < 100) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pg_auto_failover timers must be at least 100 ms, not {timers:?}"),
            ));
        }
        Ok(())
    }

    /// The monitor's settings (its extension reads them at start).
    fn monitor_settings(&self) -> Vec<(String, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        let check = ms(self.health_check_period);
        [
            ("pgautofailover.health_check_period", check.clone()),
            ("pgautofailover.health_check_timeout", check),
            ("pgautofailover.health_check_max_retries", "1".to_owned()),
            ("pgautofailover.health_check_retry_delay", "500".to_owned()),
            (
                "pgautofailover.node_considered_unhealthy_timeout",
                ms(self.unhealthy_timeout),
            ),
            (
                "pgautofailover.primary_demote_timeout",
                ms(self.primary_demote_timeout),
            ),
            // No failover in the first seconds after the monitor started.
            ("pgautofailover.startup_grace_period", "1000".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Creates and starts the monitor and the nodes; returns once node 0 is
    /// primary and every other node a secondary.
    pub async fn start(self) -> io::Result<AutoFailoverFormation> {
        self.validate()?;
        let mut attempt = 1;
        loop {
            match self.try_start().await {
                Err(e) if attempt < daemon::START_ATTEMPTS && daemon::is_port_clash(&e) => {
                    tracing::warn!(
                        attempt,
                        "a port of the pg_auto_failover formation was taken, starting anew"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_start(&self) -> io::Result<AutoFailoverFormation> {
        let started = Instant::now();
        let dir = daemon::temp_dir("resilient-tx-autofailover-")?;
        let autoctl = PgAutoctl::new(dir.path())?;
        let ports = ports::pick_free_ports(1 + self.nodes)?;
        let monitor = Instance::new(dir.path(), "monitor", 0, ports[0]);
        let nodes: Vec<AutoFailoverNode> = (0..self.nodes)
            .map(|i| AutoFailoverNode {
                instance: Instance::new(dir.path(), &format!("node{i}"), i, ports[1 + i]),
            })
            .collect();
        let mut formation = AutoFailoverFormation {
            nodes,
            monitor,
            autoctl,
            url: String::new(),
            dir,
        };
        formation.create_monitor(&self.monitor_settings()).await?;
        formation.create_node(0).await?;
        formation
            .wait_states(
                "node 0 to run as single primary",
                CREATE_TIMEOUT,
                |states| states.len() == 1 && states[0].is_primary(),
            )
            .await?;
        for index in 1..formation.nodes.len() {
            formation.create_node(index).await?;
        }
        if formation.nodes.len() > 1 {
            formation
                .wait_states(
                    "node 0 to be primary and the others secondaries",
                    CREATE_TIMEOUT,
                    |states| {
                        states.len() == formation.nodes.len()
                            && states.iter().all(|s| {
                                let want = if s.name == "node0" {
                                    "primary"
                                } else {
                                    "secondary"
                                };
                                s.is_settled() && s.assigned == want
                            })
                    },
                )
                .await?;
        }
        let uri = formation
            .autoctl
            .formation_uri(&formation.monitor.data_dir)
            .await?;
        formation.url = pg_autoctl::with_user(&uri, SUPERUSER)?;
        failover::create_probe_table(&formation.nodes[0].url()).await?;
        tracing::info!(
            nodes = formation.nodes.len(),
            elapsed = ?started.elapsed(),
            "started pg_auto_failover formation"
        );
        Ok(formation)
    }
}

/// A pg_auto_failover formation (`default`): a monitor and its nodes, in a
/// temporary directory, killed and removed on drop, also when the test
/// panics. Ports are free ones on 127.0.0.1; when the tests run as root,
/// everything runs as the postgres OS user.
#[derive(Debug)]
pub struct AutoFailoverFormation {
    // Dropped in this order: the nodes, the monitor, the directory.
    nodes: Vec<AutoFailoverNode>,
    monitor: Instance,
    autoctl: PgAutoctl,
    url: String,
    dir: TempDir,
}

impl AutoFailoverFormation {
    /// Options for a new formation (2 nodes, fast health checks).
    pub fn builder() -> AutoFailoverFormationBuilder {
        AutoFailoverFormationBuilder::default()
    }

    /// Starts a formation of a monitor and two nodes.
    pub async fn start() -> io::Result<AutoFailoverFormation> {
        Self::builder().start().await
    }

    async fn create_monitor(&self, settings: &[(String, String)]) -> io::Result<()> {
        let monitor = &self.monitor;
        monitor.init(settings).await?;
        let mut args = self.create_args("monitor", monitor);
        args.push("--run".into());
        monitor.spawn(&self.autoctl, args)?;
        let logs = [monitor.log_path()];
        wait::until(
            "the pg_auto_failover monitor to answer",
            CREATE_TIMEOUT,
            &logs,
            || async {
                if let Some(how) = monitor.daemon.exit_status() {
                    return Probe::Failed(format!("pg_autoctl of the monitor stopped: {how}"));
                }
                match self.autoctl.states(&monitor.data_dir).await {
                    Ok(_) => Probe::Ready(()),
                    Err(e) => Probe::NotYet(e.to_string()),
                }
            },
        )
        .await
    }

    async fn create_node(&self, index: usize) -> io::Result<()> {
        let node = &self.nodes[index].instance;
        // Node 0 starts from our initdb; the others are cloned from it by
        // pg_autoctl (settings included).
        if index == 0 {
            node.init(&[]).await?;
        }
        let mut args = self.create_args("postgres", node);
        let monitor = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover",
            self.monitor.port
        );
        for arg in [
            "--name",
            &node.name,
            "--formation",
            "default",
            "--monitor",
            &monitor,
            "--run",
        ] {
            args.push(arg.into());
        }
        node.spawn(&self.autoctl, args)
    }

    /// `create <what>` arguments shared by the monitor and the nodes.
    fn create_args(&self, what: &str, instance: &Instance) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["create".into(), what.into(), "--pgdata".into()];
        args.push(instance.data_dir.clone().into());
        args.push("--pgctl".into());
        args.push(self.autoctl.pg_ctl().into());
        for arg in [
            "--pgport",
            &instance.port.to_string(),
            "--hostname",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--no-ssl",
            "--skip-pg-hba",
        ] {
            args.push(arg.into());
        }
        args
    }

    /// Waits until the monitor's view satisfies `done`.
    async fn wait_states(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[AutoFailoverNodeState]) -> bool,
    ) -> io::Result<Vec<AutoFailoverNodeState>> {
        let logs = self.logs();
        let done = &done;
        wait::until(what, timeout, &logs, || async move {
            let instances = std::iter::once(&self.monitor).chain(
                self.nodes
                    .iter()
                    .map(|n| &n.instance)
                    .filter(|i| i.daemon.is_started()),
            );
            for instance in instances {
                if let Some(how) = instance.daemon.exit_status() {
                    return Probe::Failed(format!(
                        "pg_autoctl of {} stopped: {how}",
                        instance.name
                    ));
                }
                if daemon::log_shows_port_clash(instance.log_path()) {
                    return Probe::Failed(format!("a port of {} is already in use", instance.name));
                }
            }
            match self.states().await {
                Ok(states) if done(&states) => Probe::Ready(states),
                Ok(states) => Probe::NotYet(describe(&states)),
                Err(e) => Probe::NotYet(e.to_string()),
            }
        })
        .await
    }

    fn logs(&self) -> Vec<&Path> {
        std::iter::once(self.monitor.log_path())
            .chain(self.nodes.iter().map(AutoFailoverNode::log_path))
            .collect()
    }

    fn checked_node(&self, index: usize) -> io::Result<&AutoFailoverNode> {
        self.nodes.get(index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "there is no node {index}: the formation has nodes 0 to {}",
                    self.nodes.len() - 1
                ),
            )
        })
    }

    /// The nodes, by index.
    pub fn nodes(&self) -> &[AutoFailoverNode] {
        &self.nodes
    }

    /// Node `index`, if there is one.
    pub fn node(&self, index: usize) -> Option<&AutoFailoverNode> {
        self.nodes.get(index)
    }

    /// The formation's multi-host URL, from `pg_autoctl show uri --formation
    /// default` (every node, `target_session_attrs=read-write`), with the
    /// superuser added.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// URL of the monitor's `pg_auto_failover` database.
    pub fn monitor_url(&self) -> String {
        format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover",
            self.monitor.port
        )
    }

    /// The temporary directory holding everything; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log of the monitor's `pg_autoctl` and PostgreSQL.
    pub fn monitor_log_path(&self) -> &Path {
        self.monitor.log_path()
    }

    /// The monitor's view of every node.
    pub async fn states(&self) -> io::Result<Vec<AutoFailoverNodeState>> {
        self.autoctl.states(&self.monitor.data_dir).await
    }

    /// Index of the node the monitor has as settled primary, among those
    /// whose `pg_autoctl` runs.
    pub async fn primary(&self) -> io::Result<usize> {
        let states = self.states().await?;
        self.primary_in(&states).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no settled primary right now: {}", describe(&states)),
            )
        })
    }

    fn primary_in(&self, states: &[AutoFailoverNodeState]) -> Option<usize> {
        let state = states.iter().find(|s| s.is_primary())?;
        let node = self.nodes.iter().find(|n| n.name() == state.name)?;
        node.is_running().then_some(node.index())
    }

    /// Planned switchover with `pg_autoctl perform switchover` (which waits
    /// until it is done); returns the new primary once the monitor has it
    /// settled. It may not accept writes yet: see
    /// [`wait_writable`](Self::wait_writable).
    pub async fn switchover(&self) -> io::Result<usize> {
        let old = self.primary().await?;
        let seconds = SWITCHOVER_TIMEOUT.as_secs().to_string();
        let args: [OsString; 5] = [
            "perform".into(),
            "switchover".into(),
            "--pgdata".into(),
            self.monitor.data_dir.clone().into(),
            format!("--wait={seconds}").into(),
        ];
        self.autoctl
            .run(args, SWITCHOVER_TIMEOUT + Duration::from_secs(10))
            .await
            .map_err(|e| wait::with_logs(e, &self.logs()))?;
        let what = format!("another node than {old} to be settled primary after a switchover");
        wait::until(&what, SWITCHOVER_TIMEOUT, &self.logs(), || async {
            match self.states().await {
                Ok(states) => match self.primary_in(&states) {
                    Some(new) if new != old => Probe::Ready(new),
                    _ => Probe::NotYet(describe(&states)),
                },
                Err(e) => Probe::NotYet(e.to_string()),
            }
        })
        .await
    }

    /// SIGKILLs the primary's `pg_autoctl` and PostgreSQL together: an
    /// unplanned loss of the primary, as in a machine crash.
    pub async fn kill_primary(&self) -> io::Result<Killed> {
        let primary = self.primary().await?;
        self.kill_node(primary).await
    }

    /// SIGKILLs node `index`'s `pg_autoctl` and PostgreSQL together; returns
    /// when all of its processes are gone.
    pub async fn kill_node(&self, index: usize) -> io::Result<Killed> {
        self.checked_node(index)?.instance.daemon.kill().await?;
        let at = Instant::now();
        tracing::info!(node = index, "killed pg_auto_failover node");
        Ok(Killed { node: index, at })
    }

    /// Starts node `index`'s `pg_autoctl run` again (after
    /// [`kill_node`](Self::kill_node)); the monitor tells it to rejoin as a
    /// secondary.
    pub fn start_node(&self, index: usize) -> io::Result<()> {
        let node = &self.checked_node(index)?.instance;
        let args: Vec<OsString> = vec![
            "run".into(),
            "--pgdata".into(),
            node.data_dir.clone().into(),
        ];
        node.spawn(&self.autoctl, args)
    }

    /// Waits until a write through `via` commits and returns the instant its
    /// COMMIT returned. A formation has no proxy: [`Via::Proxy`] is an
    /// error.
    pub async fn wait_writable(&self, via: Via, timeout: Duration) -> io::Result<Instant> {
        let (url, what) = match via {
            Via::Node(index) => {
                let node = self.checked_node(index)?;
                (
                    node.url(),
                    format!("node {index} (port {}) to accept a write", node.port()),
                )
            }
            Via::MultiHost => (
                self.url.clone(),
                format!("a write through the formation URL {}", self.url),
            ),
            Via::Proxy => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a pg_auto_failover formation has no proxy: use Via::MultiHost or Via::Node",
                ));
            }
        };
        failover::wait_writable_logged(&url, &what, timeout, &self.logs()).await
    }

    /// Waits until every node whose `pg_autoctl` runs has settled, one as
    /// primary and the others as secondaries; returns the primary. With a
    /// secondary, the primary must have left `wait_primary` too: the monitor
    /// refuses a switchover until it has.
    pub async fn wait_settled(&self, timeout: Duration) -> io::Result<usize> {
        let running: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(AutoFailoverNode::name)
            .collect();
        let what = format!("nodes {running:?} to settle as one primary and secondaries");
        let states = self
            .wait_states(&what, timeout, |states| {
                let mine: Vec<&AutoFailoverNodeState> = states
                    .iter()
                    .filter(|s| running.contains(&s.name.as_str()))
                    .collect();
                let primaries: Vec<&&AutoFailoverNodeState> =
                    mine.iter().filter(|s| s.is_primary()).collect();
                mine.len() == running.len()
                    && primaries.len() == 1
                    && (running.len() == 1 || primaries[0].assigned == "primary")
                    && mine
                        .iter()
                        .all(|s| s.is_primary() || (s.is_settled() && s.assigned == "secondary"))
            })
            .await?;
        self.primary_in(&states)
            .ok_or_else(|| io::Error::other("the primary vanished"))
    }
}

/// `node0 primary, node1 catchingup -> secondary` for messages.
fn describe(states: &[AutoFailoverNodeState]) -> String {
    if states.is_empty() {
        return "no nodes registered".to_owned();
    }
    states
        .iter()
        .map(|s| {
            if s.is_settled() {
                format!("{} {}", s.name, s.reported)
            } else {
                format!("{} {} -> {}", s.name, s.reported, s.assigned)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

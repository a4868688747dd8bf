//! [`PatroniNode`]: one member of a [`PatroniCluster`]: its ports, its
//! directory, the Patroni configuration written there, and the Patroni
//! process with the PostgreSQL it runs.
//!
//! [`PatroniCluster`]: crate::PatroniCluster

use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::binaries;
use crate::cluster::SUPERUSER;
use crate::daemon;
use crate::daemon_slot::DaemonSlot;

/// The part of a node's configuration all nodes share.
#[derive(Debug, Clone)]
pub(crate) struct SharedConfig {
    /// Patroni's `scope` (the cluster name).
    pub(crate) scope: String,
    /// `host:port` of etcd's client endpoint.
    pub(crate) etcd: String,
    /// The dynamic configuration bootstrapped into the DCS (`bootstrap.dcs`).
    pub(crate) dcs: serde_json::Value,
}

/// One member of a [`PatroniCluster`](crate::PatroniCluster).
#[derive(Debug)]
pub struct PatroniNode {
    index: usize,
    name: String,
    pg_port: u16,
    rest_port: u16,
    dir: PathBuf,
    data_dir: PathBuf,
    config_path: PathBuf,
    /// Patroni, with the PostgreSQL it runs.
    daemon: DaemonSlot,
}

impl PatroniNode {
    /// Lays the node out in `dir` (created, owned by the server user) and
    /// writes its Patroni configuration.
    pub(crate) fn new(
        index: usize,
        dir: PathBuf,
        pg_port: u16,
        rest_port: u16,
        shared: &SharedConfig,
    ) -> io::Result<PatroniNode> {
        std::fs::create_dir_all(&dir)?;
        binaries::chown_to_server_user(&dir)?;
        let name = format!("node{index}");
        let data_dir = dir.join("data");
        let daemon = DaemonSlot::new(
            &format!("Patroni of {name}"),
            &dir.join("patroni.log"),
            Some(&data_dir),
        );
        let node = PatroniNode {
            index,
            name,
            pg_port,
            rest_port,
            data_dir,
            config_path: dir.join("patroni.yml"),
            dir,
            daemon,
        };
        // JSON is YAML: serde writes the quoting right for any path.
        let bin_dir = binaries::bindir()?;
        let config = serde_json::to_string_pretty(&node.config(shared, &bin_dir))
            .map_err(|e| io::Error::other(format!("could not render the Patroni config: {e}")))?;
        crate::cluster::write_owned(&node.config_path, &config)?;
        Ok(node)
    }

    fn config(&self, shared: &SharedConfig, bin_dir: &Path) -> serde_json::Value {
        let rest = format!("127.0.0.1:{}", self.rest_port);
        let pg = format!("127.0.0.1:{}", self.pg_port);
        json!({
            "scope": shared.scope,
            "namespace": "/resilient-tx-testkit/",
            "name": self.name,
            "log": { "level": "INFO" },
            "restapi": { "listen": rest, "connect_address": rest },
            "etcd3": { "hosts": [shared.etcd] },
            "watchdog": { "mode": "off" },
            "bootstrap": {
                "dcs": shared.dcs,
                "initdb": [{ "encoding": "UTF8" }, { "locale": "C" }, "no-sync"],
                "pg_hba": [
                    "local all all trust",
                    "local replication all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
            "postgresql": {
                "listen": pg,
                "connect_address": pg,
                "data_dir": self.data_dir,
                "bin_dir": bin_dir,
                "pgpass": self.dir.join("pgpass"),
                // Trust authentication: no passwords anywhere.
                "authentication": {
                    "superuser": { "username": SUPERUSER },
                    "replication": { "username": "replicator" },
                    "rewind": { "username": SUPERUSER },
                },
                "basebackup": [{ "checkpoint": "fast" }],
                "parameters": {
                    "unix_socket_directories": self.dir,
                    "log_line_prefix": "%m [%p] %q%a ",
                },
            },
        })
    }

    /// Starts Patroni (as the postgres OS user when we are root).
    pub(crate) fn spawn(&self) -> io::Result<()> {
        let program = daemon::find_program("patroni", "patroni")?;
        let mut cmd = daemon::command(&program, true)?;
        cmd.arg(&self.config_path).env("HOME", &self.dir);
        self.daemon.spawn(cmd)
    }

    /// SIGKILLs Patroni and its PostgreSQL (postmaster and every backend) at
    /// once, like a machine that lost power. A no-op when not running.
    pub(crate) async fn kill(&self) -> io::Result<()> {
        self.daemon.kill().await
    }

    /// `None` while Patroni runs; how it ended otherwise.
    pub(crate) fn exit_status(&self) -> Option<String> {
        self.daemon.exit_status()
    }

    /// Index of the node in its cluster.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Patroni's member name, `node<index>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PostgreSQL's port.
    pub fn port(&self) -> u16 {
        self.pg_port
    }

    /// The port of Patroni's REST API.
    pub fn rest_port(&self) -> u16 {
        self.rest_port
    }

    /// Base URL of Patroni's REST API, e.g. `http://127.0.0.1:23456`.
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    /// Connection URL of this node's `postgres` database as the superuser.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.pg_port)
    }

    /// The PostgreSQL data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Patroni's configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The log of Patroni and of the PostgreSQL it runs.
    pub fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }

    /// Whether Patroni runs (it may be between PostgreSQL restarts).
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }
}

//! [`PatroniNode`]: one member of a [`PatroniCluster`]: its ports, its
//! directory, the Patroni configuration written there, and the Patroni
//! process with the PostgreSQL it runs.
//!
//! [`PatroniCluster`]: crate::PatroniCluster

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

use crate::binaries;
use crate::cluster::SUPERUSER;
use crate::daemon::{self, Daemon, lock};
use crate::process_tree;

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
    log_path: PathBuf,
    /// Patroni, while it runs.
    daemon: Mutex<Option<Daemon>>,
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
        let node = PatroniNode {
            index,
            name: format!("node{index}"),
            pg_port,
            rest_port,
            data_dir: dir.join("data"),
            config_path: dir.join("patroni.yml"),
            log_path: dir.join("patroni.log"),
            dir,
            daemon: Mutex::new(None),
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
        let mut guard = lock(&self.daemon);
        if guard.as_mut().is_some_and(|d| d.exit_status().is_none()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("Patroni of {} is already running", self.name),
            ));
        }
        let program = daemon::find_program("patroni", "patroni")?;
        let mut cmd = daemon::command(&program, true)?;
        cmd.arg(&self.config_path).env("HOME", &self.dir);
        *guard = Some(Daemon::spawn(
            &format!("Patroni of {}", self.name),
            cmd,
            &self.log_path,
        )?);
        Ok(())
    }

    /// SIGKILLs Patroni and its PostgreSQL (postmaster and every backend) at
    /// once, like a machine that lost power. A no-op when not running.
    pub(crate) async fn kill(&self) -> io::Result<()> {
        let postmaster: Vec<u32> = self.postmaster_pid().into_iter().collect();
        let daemon = lock(&self.daemon).take();
        match daemon {
            Some(mut daemon) => daemon.kill(&postmaster).await,
            None => Ok(()),
        }
    }

    /// The postmaster's pid from `postmaster.pid`, if that process runs this
    /// data directory (the file outlives a killed server).
    pub(crate) fn postmaster_pid(&self) -> Option<u32> {
        let contents = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = contents.lines().next()?.trim().parse().ok()?;
        let data_dir = self.data_dir.to_string_lossy();
        process_tree::is_alive_with_arg(pid, &data_dir).then_some(pid)
    }

    /// `None` while Patroni runs; how it ended otherwise.
    pub(crate) fn exit_status(&self) -> Option<String> {
        lock(&self.daemon)
            .as_mut()
            .map_or(Some("it was killed".to_owned()), Daemon::exit_status)
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
        &self.log_path
    }

    /// Whether Patroni runs (it may be between PostgreSQL restarts).
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }
}

impl Drop for PatroniNode {
    fn drop(&mut self) {
        let postmaster: Vec<u32> = self.postmaster_pid().into_iter().collect();
        if let Some(mut daemon) = lock(&self.daemon).take() {
            daemon.kill_blocking(&postmaster);
        } else if !postmaster.is_empty() {
            // Patroni is gone but its PostgreSQL was left behind.
            let pids = process_tree::kill_trees(&postmaster);
            process_tree::wait_gone_blocking(&pids, &[], std::time::Duration::from_secs(10));
        }
    }
}

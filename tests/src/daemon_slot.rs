//! [`DaemonSlot`]: the place of one daemon in a setup (etcd, HAProxy, a
//! Patroni or `pg_autoctl` node): started, killed, started again, and killed
//! for good on drop, together with the PostgreSQL it runs.
//!
//! A killed orchestrator leaves a `postmaster.pid` behind, and its
//! postmaster may not be its descendant any more; the slot therefore looks
//! the postmaster up by its data directory and kills it with the daemon.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::daemon::{Daemon, lock};
use crate::process_tree;

/// How long a postmaster left behind may take to die in `Drop`.
const DROP_KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// One daemon's place: empty, or holding the running (or exited) daemon.
#[derive(Debug)]
pub(crate) struct DaemonSlot {
    name: String,
    log_path: PathBuf,
    /// The data directory of the PostgreSQL the daemon runs, if any.
    pg_data_dir: Option<PathBuf>,
    daemon: Mutex<Option<Daemon>>,
}

impl DaemonSlot {
    /// An empty slot for the daemon `name` logging to `log_path`, running
    /// PostgreSQL on `pg_data_dir` if given.
    pub(crate) fn new(name: &str, log_path: &Path, pg_data_dir: Option<&Path>) -> DaemonSlot {
        DaemonSlot {
            name: name.to_owned(),
            log_path: log_path.to_owned(),
            pg_data_dir: pg_data_dir.map(Path::to_owned),
            daemon: Mutex::new(None),
        }
    }

    /// Starts `cmd` in the slot; fails if its daemon still runs.
    pub(crate) fn spawn(&self, cmd: Command) -> io::Result<()> {
        let mut guard = lock(&self.daemon);
        if guard.as_mut().is_some_and(|d| d.exit_status().is_none()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already running", self.name),
            ));
        }
        *guard = Some(Daemon::spawn(&self.name, cmd, &self.log_path)?);
        Ok(())
    }

    /// SIGKILLs the daemon, everything it started and its PostgreSQL, all at
    /// once; returns when they are gone. A no-op for an empty slot.
    pub(crate) async fn kill(&self) -> io::Result<()> {
        let postmaster = self.postmaster_pid();
        let daemon = lock(&self.daemon).take();
        match daemon {
            Some(mut daemon) => daemon.kill(&postmaster).await,
            None => Ok(()),
        }
    }

    /// `None` while the daemon runs; how it ended otherwise (also "never
    /// started" or "killed").
    pub(crate) fn exit_status(&self) -> Option<String> {
        match lock(&self.daemon).as_mut() {
            Some(daemon) => daemon.exit_status(),
            None => Some(format!(
                "{} is not running (killed or never started)",
                self.name
            )),
        }
    }

    /// Whether the daemon runs.
    pub(crate) fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Whether a daemon was started in the slot and not killed since (it may
    /// have exited by itself).
    pub(crate) fn is_started(&self) -> bool {
        lock(&self.daemon).is_some()
    }

    /// The file the daemon's output goes to.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The postmaster from `postmaster.pid`, if that process runs the slot's
    /// data directory (the file outlives a killed server, and its pid may
    /// belong to somebody else by now).
    fn postmaster_pid(&self) -> Vec<u32> {
        let Some(data_dir) = &self.pg_data_dir else {
            return Vec::new();
        };
        let pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|contents| contents.lines().next()?.trim().parse::<u32>().ok());
        pid.filter(|&pid| process_tree::is_alive_with_arg(pid, &data_dir.to_string_lossy()))
            .into_iter()
            .collect()
    }
}

impl Drop for DaemonSlot {
    fn drop(&mut self) {
        let postmaster = self.postmaster_pid();
        if let Some(mut daemon) = lock(&self.daemon).take() {
            daemon.kill_blocking(&postmaster);
        } else if !postmaster.is_empty() {
            // The daemon is gone but its PostgreSQL was left behind.
            let pids = process_tree::kill_trees(&postmaster);
            process_tree::wait_gone_blocking(&pids, &[], DROP_KILL_TIMEOUT);
        }
    }
}

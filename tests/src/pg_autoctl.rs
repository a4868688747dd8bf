//! Running `pg_autoctl`, pg_auto_failover's one program: its environment,
//! one-shot commands, and the monitor's view of a formation.
//!
//! `pg_autoctl` keeps files outside the data directory: its configuration
//! under `$XDG_CONFIG_HOME`, its state under `$XDG_DATA_HOME` and pid files
//! under `$XDG_RUNTIME_DIR` (or `/tmp/pg_autoctl`). All of them point into the
//! formation's temporary directory, so formations never meet.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::binaries;
use crate::daemon;

/// How long a one-shot `pg_autoctl` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A node of a pg_auto_failover formation as the monitor sees it (a row of
/// `pg_autoctl show state --json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AutoFailoverNodeState {
    /// Node name (`node<index>`).
    #[serde(rename = "nodename")]
    pub name: String,
    /// PostgreSQL's port.
    #[serde(rename = "nodeport")]
    pub port: u16,
    /// The state the node last reported (`single`, `primary`, `secondary`,
    /// `wait_primary`, `stop_replication`, `demoted`, …).
    #[serde(rename = "current_group_state")]
    pub reported: String,
    /// The state the monitor assigned it.
    #[serde(rename = "assigned_group_state")]
    pub assigned: String,
    /// The monitor's health check: 1 healthy, 0 unhealthy, -1 unknown.
    pub health: i32,
}

impl AutoFailoverNodeState {
    /// Whether the node reached the state it was assigned.
    pub fn is_settled(&self) -> bool {
        self.reported == self.assigned
    }

    /// Whether the node is a settled primary: `single` (no standby),
    /// `wait_primary` (standby not caught up) or `primary`.
    pub fn is_primary(&self) -> bool {
        self.is_settled()
            && matches!(
                self.assigned.as_str(),
                "single" | "wait_primary" | "primary"
            )
    }
}

/// How to run `pg_autoctl` for one formation.
#[derive(Debug)]
pub(crate) struct PgAutoctl {
    program: PathBuf,
    pg_ctl: PathBuf,
    home: PathBuf,
}

impl PgAutoctl {
    /// Finds `pg_autoctl` and `pg_ctl`, and prepares `home` (the formation's
    /// directory) for the files `pg_autoctl` keeps outside data directories.
    pub(crate) fn new(home: &Path) -> io::Result<PgAutoctl> {
        let program = daemon::find_program("pg_autoctl", "postgresql-15-auto-failover")?;
        for sub in ["config", "share", "run"] {
            let dir = home.join(sub);
            std::fs::create_dir_all(&dir)?;
            binaries::chown_to_server_user(&dir)?;
        }
        Ok(PgAutoctl {
            program,
            pg_ctl: binaries::binary("pg_ctl")?,
            home: home.to_owned(),
        })
    }

    /// `pg_ctl`, for `--pgctl` (so `pg_autoctl` uses the server binaries the
    /// rest of the kit uses).
    pub(crate) fn pg_ctl(&self) -> &Path {
        &self.pg_ctl
    }

    /// A `pg_autoctl` command with `args`, as the postgres OS user when we are
    /// root, in the formation's environment.
    pub(crate) fn command<I, S>(&self, args: I) -> io::Result<Command>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        if let Some(pgdata) = args
            .iter()
            .position(|a| a == "--pgdata")
            .and_then(|i| args.get(i + 1))
        {
            self.prepare_state_dirs(Path::new(pgdata))?;
        }
        let mut cmd = daemon::command(&self.program, true)?;
        cmd.args(args)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_DATA_HOME", self.home.join("share"))
            .env("XDG_RUNTIME_DIR", self.home.join("run"));
        Ok(cmd)
    }

    /// Creates the directories `pg_autoctl` keeps for `pgdata` (under
    /// `$XDG_*/pg_autoctl/<pgdata>`) before it runs. Its own `mkdir -p` is not
    /// safe against a concurrent one: the monitor's daemon and a `show state`
    /// started at the same moment fail with "File exists".
    fn prepare_state_dirs(&self, pgdata: &Path) -> io::Result<()> {
        let relative = pgdata.strip_prefix("/").unwrap_or(pgdata);
        for sub in ["config", "share", "run"] {
            let base = self.home.join(sub);
            let mut dir = base.clone();
            for part in Path::new("pg_autoctl").join(relative).components() {
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Ok(()) => binaries::chown_to_server_user(&dir)?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Runs a one-shot `pg_autoctl` command; returns its stdout.
    pub(crate) async fn run<I, S>(&self, args: I, timeout: Duration) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        daemon::run_bounded(self.command(args)?, timeout).await
    }

    /// The monitor's view of every node (`show state --json`), through the
    /// monitor's data directory.
    pub(crate) async fn states(&self, monitor: &Path) -> io::Result<Vec<AutoFailoverNodeState>> {
        let json = self
            .run(
                [
                    OsStr::new("show"),
                    "state".as_ref(),
                    "--json".as_ref(),
                    "--pgdata".as_ref(),
                    monitor.as_os_str(),
                ],
                COMMAND_TIMEOUT,
            )
            .await?;
        // An empty formation prints nothing at all.
        if json.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&json).map_err(|e| {
            io::Error::other(format!(
                "unexpected `pg_autoctl show state --json`: {e}: {json}"
            ))
        })
    }

    /// The formation's multi-host connection URI (`show uri --formation
    /// default`), as printed: without a user name.
    pub(crate) async fn formation_uri(&self, monitor: &Path) -> io::Result<String> {
        let json = self
            .run(
                [
                    OsStr::new("show"),
                    "uri".as_ref(),
                    "--formation".as_ref(),
                    "default".as_ref(),
                    "--json".as_ref(),
                    "--pgdata".as_ref(),
                    monitor.as_os_str(),
                ],
                COMMAND_TIMEOUT,
            )
            .await?;
        let uris: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
            io::Error::other(format!(
                "unexpected `pg_autoctl show uri --json`: {e}: {json}"
            ))
        })?;
        uris["default"].as_str().map(str::to_owned).ok_or_else(|| {
            io::Error::other(format!(
                "`pg_autoctl show uri --json` has no formation `default`: {json}"
            ))
        })
    }
}

/// `uri` (`postgres://host:port,…/db?…`) with `user@` added after the
/// scheme: `pg_autoctl` leaves the user to libpq's default (the OS user),
/// which other clients do not share.
pub(crate) fn with_user(uri: &str, user: &str) -> io::Result<String> {
    let rest = uri
        .strip_prefix("postgres://")
        .or_else(|| uri.strip_prefix("postgresql://"))
        .ok_or_else(|| io::Error::other(format!("unexpected formation URI {uri}")))?;
    if rest
        .split('/')
        .next()
        .is_some_and(|hosts| hosts.contains('@'))
    {
        return Ok(uri.to_owned());
    }
    Ok(format!("postgres://{user}@{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_state() {
        let json = r#"[{"health": 1, "node_id": 1, "group_id": 0, "nodehost": "127.0.0.1",
            "nodename": "node0", "nodeport": 23011, "nodecluster": "default",
            "reported_lsn": "0/155A068", "reported_tli": 1, "formation_kind": "pgsql",
            "candidate_priority": 50, "replication_quorum": true,
            "current_group_state": "single", "assigned_group_state": "single"}]"#;
        let states: Vec<AutoFailoverNodeState> = serde_json::from_str(json).expect("parses");
        assert_eq!(states[0].name, "node0");
        assert_eq!(states[0].port, 23011);
        assert!(states[0].is_primary());
    }

    #[test]
    fn adds_the_user_to_the_formation_uri() {
        let uri = "postgres://127.0.0.1:1,127.0.0.1:2/postgres?target_session_attrs=read-write";
        assert_eq!(
            with_user(uri, "postgres").expect("valid"),
            "postgres://postgres@127.0.0.1:1,127.0.0.1:2/postgres?target_session_attrs=read-write"
        );
        assert!(with_user("host=x", "postgres").is_err());
    }
}

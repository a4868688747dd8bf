//! The running `postgres` server process of a [`PgCluster`](crate::PgCluster):
//! spawning it, waiting until it accepts connections, stopping and killing it.
//!
//! The server is spawned directly as a child of the test process instead of
//! through `pg_ctl start`. `pg_ctl` daemonizes the server, which then gets
//! re-parented to pid 1; in containers whose pid 1 does not reap orphans (the
//! common case for CI sandboxes) a killed server stays a zombie, `kill(pid, 0)`
//! keeps succeeding and the next start refuses with "lock file postmaster.pid
//! already exists". As our child the server is reaped by us, and we know
//! exactly when it is gone. It also stays in the test's process group, so a
//! test runner that signals the group on timeout or Ctrl-C stops it too.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binaries;

/// How often readiness and exit are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Shutdown modes of PostgreSQL, each mapped to the signal the server expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownMode {
    /// SIGINT: roll back open transactions, disconnect clients, checkpoint.
    Fast,
    /// SIGQUIT: quit at once without a checkpoint; crash recovery at next start.
    Immediate,
}

impl ShutdownMode {
    fn signal(self) -> libc::c_int {
        match self {
            ShutdownMode::Fast => libc::SIGINT,
            ShutdownMode::Immediate => libc::SIGQUIT,
        }
    }
}

/// A `postgres` server process that we spawned and must reap.
#[derive(Debug)]
pub(crate) struct Postmaster {
    child: Child,
}

impl Postmaster {
    /// Spawns `postgres -D data_dir`, appending its stderr/stdout to `log_path`.
    pub(crate) fn spawn(data_dir: &Path, log_path: &Path) -> io::Result<Postmaster> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("could not open server log {}: {e}", log_path.display()),
                )
            })?;
        binaries::chown_to_server_user(log_path)?;
        let mut cmd = binaries::pg_command("postgres")?;
        cmd.arg("-D")
            .arg(data_dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("could not spawn postgres: {e}")))?;
        Ok(Postmaster { child })
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `postmaster.pid` says the server accepts connections (status
    /// `ready`, or `standby` for a hot standby), the same test `pg_ctl -w` uses.
    /// Crash recovery happens before that status is written, so this also
    /// waits it out.
    pub(crate) async fn wait_ready(
        &mut self,
        data_dir: &Path,
        timeout: Duration,
    ) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let pid_file = data_dir.join("postmaster.pid");
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "postgres exited during startup ({status})"
                )));
            }
            if let Ok(contents) = std::fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = contents.lines().collect();
                let same_pid =
                    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(self.pid());
                let status = lines.get(7).map(|l| l.trim());
                if same_pid && matches!(status, Some("ready") | Some("standby")) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("postgres did not accept connections within {timeout:?}"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Asks the server to shut down in `mode` and waits until it has exited
    /// (it waits for all its children first). Kills it if it takes longer than
    /// `timeout`.
    pub(crate) async fn stop(mut self, mode: ShutdownMode, timeout: Duration) -> io::Result<()> {
        signal(self.pid(), mode.signal())?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let pid = self.pid();
        self.kill_tree().await?;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("postgres (pid {pid}) did not stop within {timeout:?} and was killed"),
        ))
    }

    /// Kills the server and every process it forked with SIGKILL, like a
    /// machine crash: no shutdown checkpoint, clients see their connections
    /// reset. Returns once all of them are dead, so the data directory can be
    /// started again right away (a surviving backend would keep the old shared
    /// memory attached, and the new server would refuse to start).
    pub(crate) async fn kill_tree(mut self) -> io::Result<()> {
        let children = self.freeze_and_kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reaped = self.child.try_wait()?.is_some();
            if reaped && children.iter().all(|&pid| !is_alive(pid)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "postgres processes survived SIGKILL for 30 s",
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Best-effort synchronous teardown for `Drop`: immediate shutdown, then
    /// SIGKILL for whatever is left after a few seconds.
    pub(crate) fn stop_blocking(mut self) {
        if signal(self.pid(), ShutdownMode::Immediate.signal()).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) | Err(_) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        let children = self.freeze_and_kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && children.iter().any(|&pid| is_alive(pid)) {
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the server process has exited (and has been reaped).
    pub(crate) fn has_exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGSTOPs the server so it cannot fork while we look, lists its children,
    /// then SIGKILLs all of them. Returns the children's pids.
    fn freeze_and_kill(&mut self) -> Vec<u32> {
        let pid = self.pid();
        let _ = signal(pid, libc::SIGSTOP);
        let children = children_of(pid);
        let _ = signal(pid, libc::SIGKILL);
        for &child in &children {
            let _ = signal(child, libc::SIGKILL);
        }
        children
    }
}

/// Sends `sig` to `pid`.
pub(crate) fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) only reads its integer arguments.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `pid` is a live process (zombies count as dead: they hold no
/// resources but a process-table slot).
pub(crate) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(proc_state(&stat), Some('Z') | Some('X') | None),
        Err(_) => false,
    }
}

/// The state letter of a `/proc/<pid>/stat` line. The command name in
/// parentheses may itself contain spaces or parentheses, so fields are counted
/// from the last `)`.
fn proc_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn proc_ppid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pids of the live direct children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| proc_ppid(&stat))
                == Some(parent)
        })
        .collect()
}

/// The current size of the log file, to read what a later attempt appends.
pub(crate) fn log_len(log_path: &Path) -> u64 {
    std::fs::metadata(log_path).map(|m| m.len()).unwrap_or(0)
}

/// What the server logged since `offset`, at most the last 4 KiB, for error
/// messages.
pub(crate) fn log_since(log_path: &Path, offset: u64) -> String {
    const MAX: u64 = 4096;
    let read = || -> io::Result<String> {
        let mut file = File::open(log_path)?;
        let len = file.metadata()?.len();
        let start = offset.max(len.saturating_sub(MAX));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "1234 (postgres: a) b) S 99 1234 1234 0 -1";
        assert_eq!(proc_state(stat), Some('S'));
        assert_eq!(proc_ppid(stat), Some(99));
    }
}

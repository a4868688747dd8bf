//! [`Daemon`]: a long-running program of an orchestrator setup (etcd, HAProxy,
//! Patroni, `pg_autoctl`) run as our child, logging to a file, killed with
//! everything it started when it is dropped.
//!
//! Daemons stay in the test's process group, like [`PgCluster`]'s server: a
//! test runner that signals the group (timeout, Ctrl-C) reaches them, and
//! Patroni and `pg_autoctl` answer SIGTERM by stopping their PostgreSQL. Each
//! gets SIGTERM as parent-death signal too, for a test process that dies
//! without unwinding. Processes that detach themselves (see
//! [`process_tree`](crate::process_tree)) are found through the process
//! tree, not the group.
//!
//! [`PgCluster`]: crate::PgCluster

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::binaries;
use crate::process_tree;

/// How long killed processes may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Directories searched for programs after `$PATH`: Debian puts daemons such
/// as `haproxy` into `sbin` directories that a plain user's `PATH` lacks.
const EXTRA_PROGRAM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Environment variables a daemon must not inherit: libpq's (a developer's
/// `PGPORT` would point a client at the wrong server) and Patroni's own
/// configuration variables.
const SCRUBBED_ENV_PREFIXES: &[&str] = &["PG", "PATRONI_"];

/// Full path of `program`, from `$PATH` or the usual system directories; the
/// error names the Debian package that provides it.
pub(crate) fn find_program(program: &str, package: &str) -> io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_PROGRAM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "`{program}` is not installed (looked in $PATH and {}); \
                     install the Debian package `{package}`",
                    EXTRA_PROGRAM_DIRS.join(", ")
                ),
            )
        })
}

/// A command for `program` (a path from [`find_program`]): stdin from
/// `/dev/null`, a scrubbed environment, and, with `as_server_user` while the
/// tests run as root, the postgres OS user's identity (set directly, no
/// `runuser`/`su` in between, so the child's pid is the program's pid).
pub(crate) fn command(program: &Path, as_server_user: bool) -> io::Result<Command> {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null()).current_dir("/");
    for (name, _) in std::env::vars_os() {
        let scrub = name
            .to_str()
            .is_some_and(|name| SCRUBBED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)));
        if scrub {
            cmd.env_remove(name);
        }
    }
    if as_server_user {
        if let Some(user) = binaries::server_user()? {
            cmd.uid(user.uid).gid(user.gid);
        }
    }
    Ok(cmd)
}

/// How many times a whole setup is started on new ports when one of the
/// ports it picked was taken before its daemon could bind it.
pub(crate) const START_ATTEMPTS: usize = 3;

/// Whether a failed start (its message, which carries the log tails) comes
/// from a port another process took between our check and the daemon's bind.
pub(crate) fn is_port_clash(error: &io::Error) -> bool {
    let message = error.to_string();
    message.contains("already in use") || message.contains("cannot bind socket")
}

/// Whether the end of a daemon's log reports a port clash (PostgreSQL's
/// "could not bind … Address already in use"): its orchestrator would retry
/// for ever, so waits give up at once and the setup starts anew.
pub(crate) fn log_shows_port_clash(log: &Path) -> bool {
    crate::postmaster::log_since(log, 0).contains("Address already in use")
}

/// A new temporary directory named `prefix…` for an orchestrated setup,
/// owned by the server user (whose daemons write there) and closed to
/// everybody else.
pub(crate) fn temp_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;

    let base = std::env::temp_dir();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "could not create a temporary directory in {}: {e}",
                    base.display()
                ),
            )
        })?;
    if binaries::running_as_root() {
        // The postgres user has to reach its directory inside `base`.
        let mode = std::fs::metadata(&base)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the temporary directory {} is not traversable by the postgres user; \
                     point TMPDIR at a world-traversable directory such as /tmp",
                    base.display()
                ),
            ));
        }
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    binaries::chown_to_server_user(dir.path())?;
    Ok(dir)
}

/// Runs a one-shot command (from [`command`]) to completion within
/// `timeout` and returns its stdout; a failure, or a command still running at
/// the deadline (it is killed), is an error with the command line, its exit
/// status and its output.
pub(crate) async fn run_bounded(cmd: Command, timeout: Duration) -> io::Result<String> {
    let description = {
        let mut s = describe(cmd.get_program());
        for arg in cmd.get_args() {
            s.push(' ');
            s.push_str(&arg.to_string_lossy());
        }
        s
    };
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(output) => output
            .map_err(|e| io::Error::new(e.kind(), format!("could not run {description}: {e}")))?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{description} did not finish within {timeout:?}"),
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(io::Error::other(format!(
            "{description} failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// A running daemon: our child, its output appended to a log file.
#[derive(Debug)]
pub(crate) struct Daemon {
    name: String,
    /// `None` once the daemon was killed and reaped.
    child: Option<Child>,
}

impl Daemon {
    /// Spawns `cmd` (from [`command`]) as a child subreaper with SIGTERM as
    /// parent-death signal, its stdout and stderr appended to `log_path`.
    /// `name` names it in errors and logs.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> io::Result<Daemon> {
        process_tree::become_subreaper()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "could not open the log {} of {name}: {e}",
                        log_path.display()
                    ),
                )
            })?;
        binaries::chown_to_server_user(log_path)?;
        cmd.stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls (prctl, getppid) on integers.
        unsafe {
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0
                    || libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the death signal was armed.
                if libc::getppid() != parent {
                    return Err(io::Error::other("the test process is gone"));
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_owned();
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("could not start {name} ({}): {e}", describe(&program)),
            )
        })?;
        tracing::debug!(daemon = name, pid = child.id(), "started");
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// `None` while it runs; a description of how it ended otherwise.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            None => Some("it was killed".to_owned()),
            Some(Ok(None)) => None,
            Some(Ok(Some(status))) => Some(format!("it exited ({status})")),
            Some(Err(e)) => Some(format!("its status is unknown: {e}")),
        }
    }

    /// Stops the daemon's process and everything it started with SIGKILL, all
    /// at once, together with the trees of `extra_roots` (processes of the
    /// daemon's that may have escaped its tree). Returns once all are gone.
    pub(crate) async fn kill(&mut self, extra_roots: &[u32]) -> io::Result<()> {
        let (pids, skip) = self.kill_all(extra_roots);
        let result = process_tree::wait_gone(&pids, &skip, KILL_TIMEOUT).await;
        self.reap_child();
        process_tree::reap_orphans(&pids).await;
        result.map_err(|e| io::Error::new(e.kind(), format!("killing {}: {e}", self.name)))
    }

    /// Blocking [`kill`](Self::kill), for `Drop`.
    pub(crate) fn kill_blocking(&mut self, extra_roots: &[u32]) {
        let (pids, skip) = self.kill_all(extra_roots);
        process_tree::wait_gone_blocking(&pids, &skip, KILL_TIMEOUT);
        self.reap_child();
        process_tree::reap_orphans_blocking(&pids);
    }

    fn kill_all(&mut self, extra_roots: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let own = self.child.as_ref().map(Child::id);
        let roots: Vec<u32> = own.into_iter().chain(extra_roots.iter().copied()).collect();
        let pids = process_tree::kill_trees(&roots);
        tracing::debug!(daemon = %self.name, ?pids, "killed");
        (pids, own.into_iter().collect())
    }

    fn reap_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already SIGKILLed: wait() returns at once.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill_blocking(&[]);
        }
    }
}

/// Locks `mutex`, also when a panicking thread poisoned it (what it guards,
/// a process handle, is valid either way).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn describe(program: &OsStr) -> String {
    program.to_string_lossy().into_owned()
}

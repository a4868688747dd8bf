//! Whole process trees of the orchestrators: finding every process a daemon
//! started, killing them all at once, and reaping what is left.
//!
//! Orchestrators detach PostgreSQL from themselves: Patroni starts the
//! postmaster through a launcher that calls `setsid()` and exits, and every
//! PostgreSQL backend has a session of its own. Process groups therefore
//! miss processes, and an orphan is re-parented to pid 1, which in many
//! containers never reaps it: a killed postmaster then stays a zombie whose
//! pid still "exists" for Patroni (`psutil`) and for `postmaster.pid` checks.
//!
//! Two rules keep every process findable and reaped:
//!
//! * every daemon is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so the
//!   processes it detaches stay its descendants (Patroni then waits for its
//!   own postmaster with `waitpid`, as it would under a proper init);
//! * the test process is one too, so when a daemon is killed its orphans come
//!   to us, and [`kill_trees`] reaps the ones it killed.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::postmaster::{is_alive, signal};

/// How often [`wait_gone`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Makes the test process a child subreaper, once. Orphans of the daemons it
/// starts are then re-parented to it instead of to pid 1, so they can be
/// killed and reaped. Nothing else changes for the process: it only reaps
/// pids it killed itself.
pub(crate) fn become_subreaper() -> io::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only reads its integer
        // arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
            Ok(())
        } else {
            Err(format!(
                "could not make the test process a child subreaper: {}",
                io::Error::last_os_error()
            ))
        }
    })
    .clone()
    .map_err(io::Error::other)
}

/// Pids of every live process in `/proc`, mapped to their parent pids.
fn parents() -> HashMap<u32, u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, ppid_of(&stat)?))
        })
        .collect()
}

/// The parent pid in a `/proc/<pid>/stat` line; fields are counted from the
/// last `)` because the command name may contain spaces and parentheses.
fn ppid_of(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `roots` and all their descendants (zombies included, so they get reaped).
fn trees(roots: &[u32]) -> BTreeSet<u32> {
    let parents = parents();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = BTreeSet::new();
    let mut todo: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|pid| parents.contains_key(pid))
        .collect();
    while let Some(pid) = todo.pop() {
        if found.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    found
}

/// SIGKILLs `roots` and everything they started, as one event: every process
/// is stopped first (SIGSTOP, repeated until no process forked a new one in
/// between), so none of them can react to the others' deaths, e.g. by
/// restarting PostgreSQL. Returns the killed pids; `roots` that are not
/// running are skipped.
pub(crate) fn kill_trees(roots: &[u32]) -> Vec<u32> {
    let mut frozen = BTreeSet::new();
    // A process can fork between the scan and its SIGSTOP; the next scan
    // finds the child. A handful of rounds settles any real tree.
    for _ in 0..50 {
        let new: Vec<u32> = trees(roots)
            .into_iter()
            .filter(|pid| !frozen.contains(pid))
            .collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            let _ = signal(pid, libc::SIGSTOP);
            frozen.insert(pid);
        }
    }
    for &pid in &frozen {
        let _ = signal(pid, libc::SIGKILL);
    }
    frozen.into_iter().collect()
}

/// Reaps `pid` if it is a dead child of ours; a no-op otherwise.
fn reap(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    let mut status = 0;
    // SAFETY: waitpid only writes the status integer we pass; WNOHANG makes it
    // return at once. It fails with ECHILD for processes that are not our
    // children, which is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Waits until every pid in `pids` is gone, reaping those that became our
/// children (all but `skip`, which a `std::process::Child` owns and reaps).
pub(crate) async fn wait_gone(pids: &[u32], skip: &[u32], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive = reap_and_list_alive(pids, skip);
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("processes {alive:?} survived SIGKILL for {timeout:?}"),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Blocking [`wait_gone`] for `Drop`; gives up silently after `timeout`.
pub(crate) fn wait_gone_blocking(pids: &[u32], skip: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !reap_and_list_alive(pids, skip).is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// How long [`reap_orphans`] waits for killed processes to become zombies of ours.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(2);

/// Reaps the zombies among `pids` once they are children of ours, after the
/// daemon's own process was reaped. A process killed together with its parent
/// (PostgreSQL under Patroni) stays that parent's zombie until the parent is
/// reaped, which [`wait_gone`] takes for gone; only then is it re-parented to
/// us, the subreaper. Left unreaped, the zombie keeps its pid and its start
/// time, so a pid file naming it passes for a running server: a Patroni
/// started again on the same data directory waits for it to stop, forever.
pub(crate) async fn reap_orphans(pids: &[u32]) {
    let deadline = Instant::now() + ORPHAN_TIMEOUT;
    while reap_zombies(pids) && Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Blocking [`reap_orphans`] for `Drop`.
pub(crate) fn reap_orphans_blocking(pids: &[u32]) {
    let deadline = Instant::now() + ORPHAN_TIMEOUT;
    while reap_zombies(pids) && Instant::now() < deadline {
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Reaps those of `pids` that are zombie children of ours; whether zombies of
/// other parents remain among them (a live process that took a freed pid is
/// not one of ours, and not waited for).
fn reap_zombies(pids: &[u32]) -> bool {
    let us = std::process::id();
    let mut left = false;
    for &pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_state(&stat) != Some('Z') {
            continue;
        }
        if ppid_of(&stat) == Some(us) {
            reap(pid);
        } else {
            left = true;
        }
    }
    left
}

/// The state letter of a `/proc/<pid>/stat` line (fields counted from the last `)`).
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn reap_and_list_alive(pids: &[u32], skip: &[u32]) -> Vec<u32> {
    for &pid in pids.iter().filter(|pid| !skip.contains(pid)) {
        reap(pid);
    }
    pids.iter().copied().filter(|&pid| is_alive(pid)).collect()
}

/// Whether `pid` is a live process whose command line mentions `needle`
/// (e.g. its data directory): guards against acting on a stale pid file
/// whose pid now belongs to somebody else.
pub(crate) fn is_alive_with_arg(pid: u32, needle: &str) -> bool {
    is_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parent_pid_after_odd_command_names() {
        assert_eq!(ppid_of("77 (a) b (c)) S 42 77 77 0"), Some(42));
    }

    #[test]
    fn the_tree_of_this_process_contains_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let tree = trees(&[std::process::id()]);
        assert!(tree.contains(&std::process::id()));
        assert!(tree.contains(&child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }
}

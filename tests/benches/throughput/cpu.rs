//! CPU time spent by the benchmark's own process and by the PostgreSQL server's
//! processes, read from Linux's `/proc`.
//!
//! On a busy local server, throughput is what two cores can do divided by the CPU
//! time one transaction takes; that CPU time is far steadier from run to run than
//! transactions per second, which the scheduler's whims move by several percent. So
//! the benchmark prints both, and prices features in CPU time too.

use std::fs;
use std::ops::Add;
use std::time::Duration;

/// CPU time used so far, by the client (this process, proxy included) and by the
/// server (the postmaster and all its children).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub client: Duration,
    pub server: Duration,
}

impl CpuTime {
    /// Reads both now; `None` where `/proc` cannot tell (not Linux, or the
    /// scheduler's statistics are off).
    pub fn now(postmaster: u32) -> Option<CpuTime> {
        Some(CpuTime {
            client: process_time(std::process::id())?,
            server: server_time(postmaster)?,
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            client: self.client.saturating_sub(earlier.client),
            server: self.server.saturating_sub(earlier.server),
        }
    }
}

impl Add for CpuTime {
    type Output = CpuTime;

    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime {
            client: self.client + other.client,
            server: self.server + other.server,
        }
    }
}

/// All threads of a process: the sum of `/proc/<pid>/task/*/schedstat`, whose first
/// field is nanoseconds on a CPU (precise, unlike the 10 ms ticks of `stat`).
fn process_time(pid: u32) -> Option<Duration> {
    let mut nanos = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

/// The postmaster and every process whose parent it is (backends, checkpointer, WAL
/// writer…). Backends that exited are not counted: the benchmark's pools keep
/// theirs for the whole run.
fn server_time(postmaster: u32) -> Option<Duration> {
    let mut total = process_time(postmaster)?;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_of(pid) == Some(postmaster) {
            // A backend may exit between listing and reading: count it as nothing.
            total += process_time(pid).unwrap_or_default();
        }
    }
    Some(total)
}

/// The parent pid, from `/proc/<pid>/stat` (the field after the state, which follows
/// the command name in parentheses; the name itself may hold anything).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

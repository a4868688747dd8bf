//! Counters of what the runtime did, and the snapshot callers read. Each recording
//! method also emits the event through the facade when the `metrics` feature is on;
//! the labels it takes (a function's name, a pool's) are for that.

use std::sync::atomic::{AtomicU64, Ordering};

use super::emit::{self, Stopwatch};
use super::names;
use crate::error::{Failure, TxError};

/// Monotonic counters shared by every clone of a `Db`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    commits: AtomicU64,
    retries_conflict: AtomicU64,
    retries_connection: AtomicU64,
    retries_read_only: AtomicU64,
    retries_timeout: AtomicU64,
    connections_opened: AtomicU64,
    connect_failures: AtomicU64,
    connections_discarded: AtomicU64,
    stale_connections_replaced: AtomicU64,
    ambiguous_commits: AtomicU64,
    ambiguous_rerun_idempotent: AtomicU64,
    ambiguous_unresolved: AtomicU64,
    ambiguous_checked_by_key: AtomicU64,
    ambiguous_verified_committed: AtomicU64,
    ambiguous_verified_not_committed: AtomicU64,
    stored_results_returned: AtomicU64,
    give_ups: AtomicU64,
    budget_refusals: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn call(&self) {
        bump(&self.calls);
    }
    pub(crate) fn attempt(&self) {
        bump(&self.attempts);
    }
    /// Counts a commit; returns how many there have been.
    pub(crate) fn commit(&self) -> u64 {
        self.commits.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub(crate) fn retry(&self, function: &'static str, failure: Failure) {
        emit::retry(function, failure);
        match failure {
            Failure::ReadOnly => bump(&self.retries_read_only),
            Failure::ClientTimeout => bump(&self.retries_timeout),
            Failure::ConnectionLost | Failure::Unreachable | Failure::ConnectTimeout => {
                bump(&self.retries_connection)
            }
            _ => bump(&self.retries_conflict),
        }
    }
    /// A connection of `pool` was opened after connecting since `started`.
    pub(crate) fn connection_opened(&self, pool: &'static str, started: &Stopwatch) {
        emit::connection_opened(pool, started);
        bump(&self.connections_opened);
    }
    pub(crate) fn connect_failed(&self, pool: &'static str, failure: Failure) {
        emit::connect_failed(pool, failure);
        bump(&self.connect_failures);
    }
    pub(crate) fn connection_discarded(&self, pool: &'static str) {
        emit::discarded(pool);
        bump(&self.connections_discarded);
    }
    pub(crate) fn stale_connection_replaced(&self, pool: &'static str) {
        emit::stale_replaced(pool);
        bump(&self.stale_connections_replaced);
    }
    pub(crate) fn ambiguous_commit(&self) {
        bump(&self.ambiguous_commits);
    }
    pub(crate) fn ambiguous_rerun(&self, function: &'static str) {
        emit::ambiguous(function, names::RERUN_IDEMPOTENT);
        bump(&self.ambiguous_rerun_idempotent);
    }
    /// A non-idempotent call gave up on an ambiguous COMMIT. (The facade counts every
    /// call that returns `CommitUnknown` as unresolved, in [`Counters::gave_up`].)
    pub(crate) fn ambiguous_unresolved(&self) {
        bump(&self.ambiguous_unresolved);
    }
    pub(crate) fn ambiguous_checked_by_key(&self, function: &'static str) {
        emit::ambiguous(function, names::CHECKED_BY_KEY);
        bump(&self.ambiguous_checked_by_key);
    }
    pub(crate) fn ambiguous_verified(&self, function: &'static str, committed: bool) {
        if committed {
            emit::ambiguous(function, names::VERIFIED_COMMITTED);
            bump(&self.ambiguous_verified_committed);
        } else {
            emit::ambiguous(function, names::VERIFIED_NOT_COMMITTED);
            bump(&self.ambiguous_verified_not_committed);
        }
    }
    pub(crate) fn stored_result_returned(&self, function: &'static str) {
        emit::stored_result(function);
        bump(&self.stored_results_returned);
    }
    /// A call returned `error` after `attempts` attempts: a give-up when it had
    /// retried; an unresolved ambiguous COMMIT when the error is `CommitUnknown`.
    pub(crate) fn gave_up(&self, function: &'static str, error: &TxError, attempts: u32) {
        if attempts > 1 {
            emit::give_up(function, error.kind());
            bump(&self.give_ups);
        }
        if error.failure() == Failure::CommitUnknown {
            emit::ambiguous(function, names::UNRESOLVED);
        }
    }
    pub(crate) fn budget_refusal(&self, function: &'static str) {
        emit::budget_refusal(function);
        bump(&self.budget_refusals);
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            calls: read(&self.calls),
            attempts: read(&self.attempts),
            commits: read(&self.commits),
            retries_conflict: read(&self.retries_conflict),
            retries_connection: read(&self.retries_connection),
            retries_read_only: read(&self.retries_read_only),
            retries_timeout: read(&self.retries_timeout),
            connections_opened: read(&self.connections_opened),
            connect_failures: read(&self.connect_failures),
            connections_discarded: read(&self.connections_discarded),
            stale_connections_replaced: read(&self.stale_connections_replaced),
            ambiguous_commits: read(&self.ambiguous_commits),
            ambiguous_rerun_idempotent: read(&self.ambiguous_rerun_idempotent),
            ambiguous_unresolved: read(&self.ambiguous_unresolved),
            ambiguous_checked_by_key: read(&self.ambiguous_checked_by_key),
            ambiguous_verified_committed: read(&self.ambiguous_verified_committed),
            ambiguous_verified_not_committed: read(&self.ambiguous_verified_not_committed),
            stored_results_returned: read(&self.stored_results_returned),
            give_ups: read(&self.give_ups),
            budget_refusals: read(&self.budget_refusals),
        }
    }
}

/// A snapshot of the runtime's counters since the `Db` was built. Every field only
/// grows; subtract two snapshots to get rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[must_use]
pub struct Metrics {
    /// Transactional calls started.
    pub calls: u64,
    /// Attempts started (calls plus retries).
    pub attempts: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Retries after a serialization failure, deadlock, lock timeout or stale plan.
    pub retries_conflict: u64,
    /// Retries after a lost connection or a failed connect.
    pub retries_connection: u64,
    /// Retries after reaching a read-only server (25006).
    pub retries_read_only: u64,
    /// Retries after the client-side timer abandoned a silent connection.
    pub retries_timeout: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Connections discarded after a failure instead of going back to the pool.
    pub connections_discarded: u64,
    /// Dead pooled connections detected at checkout and replaced without an error.
    pub stale_connections_replaced: u64,
    /// Attempts whose connection was lost while COMMIT was in flight.
    pub ambiguous_commits: u64,
    /// Ambiguous commits resolved by re-running an `idempotent` body.
    pub ambiguous_rerun_idempotent: u64,
    /// Ambiguous commits returned to the caller as `CommitUnknown` (verification off
    /// or without an answer before the deadline).
    pub ambiguous_unresolved: u64,
    /// Ambiguous commits of keyed calls, resolved by retrying: the retry finds the
    /// stored result if the COMMIT landed, and runs the body if it did not.
    pub ambiguous_checked_by_key: u64,
    /// Ambiguous commits that verification found committed: the call succeeded.
    pub ambiguous_verified_committed: u64,
    /// Ambiguous commits that verification found not committed: the call retried.
    pub ambiguous_verified_not_committed: u64,
    /// Keyed calls that returned the result an earlier call stored, without running.
    pub stored_results_returned: u64,
    /// Calls that ended with an error after retrying.
    pub give_ups: u64,
    /// Retries refused because the retry budget was spent.
    pub budget_refusals: u64,
}

impl Metrics {
    /// All retries, whatever their cause.
    pub fn retries(&self) -> u64 {
        self.retries_conflict
            + self.retries_connection
            + self.retries_read_only
            + self.retries_timeout
    }
}

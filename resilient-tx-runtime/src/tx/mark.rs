//! What COMMIT's flight carries so that commit verification can settle a lost reply,
//! and when a transaction needs it whatever it wrote.

use tokio_postgres::error::SqlState;

use crate::connection::CommitCounter;
use crate::error::{Failure, TxError};

/// What COMMIT's flight carries so that commit verification can settle a lost reply.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CommitMark<'a> {
    /// `sql` inserts `marker` (`$1`, text).
    Marker { sql: &'a str, marker: &'a str },
    /// `sql` moves this connection's commit counter by one (`$1` its id, `$2` the value
    /// it last committed, `$3` the next) and returns how many rows it moved; `claim`:
    /// it also claims the row (creates it, or sets its `updated_at`).
    Counter { sql: &'a str, claim: bool },
}

impl CommitMark<'_> {
    pub(super) fn sql(&self) -> &str {
        match self {
            CommitMark::Marker { sql, .. } | CommitMark::Counter { sql, .. } => sql,
        }
    }
}

/// Whether SQL text may queue a notification: `NOTIFY` or `pg_notify`, in any case.
pub(super) fn mentions_notify(sql: &str) -> bool {
    sql.as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"notify"))
}

/// Which part of COMMIT's flight failed.
pub(super) enum Sent {
    /// The statement that leaves the evidence of the commit: COMMIT then only ended an
    /// aborted transaction.
    Mark(tokio_postgres::Error),
    /// COMMIT itself.
    Commit(tokio_postgres::Error),
}

/// Whether the counter's compare-and-set divided by zero: it found the connection's
/// row missing, or holding another value than the connection last committed.
pub(super) fn counter_missed(error: &TxError) -> bool {
    error.sqlstate() == Some(&SqlState::DIVISION_BY_ZERO)
}

/// The compare-and-set of `counter` moved nothing, so the transaction rolled back: its
/// row was purged, or the server is an older copy of the one that knew it (a failover
/// that lost commits, behind a pooler that kept the session). The connection is done
/// with; the attempt runs again on a fresh one, which has a row of its own.
pub(super) fn counter_moved(counter: CommitCounter, error: &TxError) -> TxError {
    TxError::with_details(
        Failure::CounterMoved,
        format!(
            "the transaction was rolled back: its connection's commit counter row \
             (id = {}) was gone or did not hold {}, the value the connection last \
             committed (the row was purged, or the server lost commits in a failover)",
            counter.id, counter.committed
        ),
        error.sqlstate().cloned(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_is_seen_in_any_case_and_form() {
        assert!(mentions_notify("NOTIFY jobs, 'x'"));
        assert!(mentions_notify("select pg_notify('jobs', $1)"));
        assert!(mentions_notify("Notify jobs"));
        assert!(!mentions_notify("INSERT INTO notes VALUES (1)"));
        assert!(!mentions_notify(""));
    }
}

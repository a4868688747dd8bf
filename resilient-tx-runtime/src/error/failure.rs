//! What went wrong in one attempt ([`Failure`]), and what the attempt loop does about
//! it ([`Action`]): the vocabulary shared by classification, the retry decision and the
//! metrics.

use crate::error::ErrorKind;

/// What went wrong in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Failure {
    /// 40001 / 40P01: the server rolled the transaction back; run it again.
    Conflict,
    /// 55P03 / 55006: a lock or object was not available; run it again, a few times.
    LockUnavailable,
    /// The connection died before COMMIT was sent: the server aborted the transaction.
    ConnectionLost,
    /// A connection could not be made (refused, 57P03, 53300, a failed session check).
    Unreachable,
    /// A connect did not finish in time: the network or the server is silent.
    ConnectTimeout,
    /// 25006: the connection reached a read-only server (a demoted primary or standby).
    ReadOnly,
    /// No pooled connection became free in time while the database answers.
    PoolExhausted,
    /// 57014: a statement ran past `statement_timeout` and was cancelled.
    StatementTimeout,
    /// The client-side timer fired: the connection stopped answering.
    ClientTimeout,
    /// A cached prepared statement no longer matches the schema; drop the cache and retry.
    StalePlan,
    /// A statement the runtime prepared is not on the server connection (26000) or
    /// another of its name is (42P05): a pooler in transaction mode moved the session
    /// to another server connection. Named statements are switched off; retry.
    StatementsLost,
    /// The commit counter's compare-and-set found the connection's row gone or moved
    /// (purged, or an older copy of the server after a failover): the server rolled the
    /// transaction back. Discard the connection; retry on a fresh one.
    CounterMoved,
    /// The connection was lost while COMMIT was in flight: the outcome is unknown.
    CommitUnknown,
    /// 25P02: the body swallowed an earlier error and went on.
    Aborted,
    /// Any other server error, or a client-side error such as an unexpected row count.
    Database,
    /// Invalid configuration.
    Config,
    /// An idempotency key stored with another fingerprint than this call's arguments.
    KeyReused,
    /// Committed, but no standby confirmed having the commit within `replicated`.
    NotReplicated,
}

/// What the executor does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Back off and run the attempt again on the same kind of connection.
    Retry,
    /// Discard the connection, back off and run the attempt again on a fresh one.
    Reconnect,
    /// The COMMIT outcome is unknown: resolve it, never re-run blindly.
    Resolve,
    /// Return the error to the caller at once.
    Return,
}

impl Failure {
    /// The kind the caller sees when this failure ends the call.
    pub(crate) fn kind(self) -> ErrorKind {
        match self {
            Failure::Conflict
            | Failure::LockUnavailable
            | Failure::StalePlan
            | Failure::StatementsLost
            | Failure::CounterMoved => ErrorKind::Conflict,
            Failure::ConnectionLost
            | Failure::Unreachable
            | Failure::ConnectTimeout
            | Failure::ReadOnly => ErrorKind::Unavailable,
            Failure::PoolExhausted => ErrorKind::PoolExhausted,
            Failure::StatementTimeout | Failure::ClientTimeout => ErrorKind::Timeout,
            Failure::CommitUnknown => ErrorKind::CommitUnknown,
            Failure::Aborted | Failure::Database => ErrorKind::Database,
            Failure::Config => ErrorKind::Config,
            Failure::KeyReused => ErrorKind::KeyReused,
            Failure::NotReplicated => ErrorKind::NotReplicated,
        }
    }

    /// What to do about it.
    pub(crate) fn action(self) -> Action {
        match self {
            Failure::Conflict
            | Failure::LockUnavailable
            | Failure::StalePlan
            | Failure::StatementsLost => Action::Retry,
            Failure::ConnectionLost
            | Failure::Unreachable
            | Failure::ConnectTimeout
            | Failure::ReadOnly
            | Failure::ClientTimeout
            | Failure::CounterMoved => Action::Reconnect,
            Failure::CommitUnknown => Action::Resolve,
            Failure::PoolExhausted
            | Failure::StatementTimeout
            | Failure::Aborted
            | Failure::Database
            | Failure::Config
            | Failure::KeyReused
            | Failure::NotReplicated => Action::Return,
        }
    }

    /// Whether the connection the failure happened on must not go back to the pool.
    pub(crate) fn discards_connection(self) -> bool {
        matches!(
            self,
            Failure::ConnectionLost
                | Failure::ReadOnly
                | Failure::ClientTimeout
                | Failure::CommitUnknown
                | Failure::CounterMoved
        )
    }

    /// A stable name for spans and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::Conflict => "conflict",
            Failure::LockUnavailable => "lock_unavailable",
            Failure::ConnectionLost => "connection_lost",
            Failure::Unreachable => "unreachable",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ReadOnly => "read_only",
            Failure::PoolExhausted => "pool_exhausted",
            Failure::StatementTimeout => "statement_timeout",
            Failure::ClientTimeout => "client_timeout",
            Failure::StalePlan => "stale_plan",
            Failure::StatementsLost => "statements_lost",
            Failure::CounterMoved => "counter_moved",
            Failure::CommitUnknown => "commit_unknown",
            Failure::Aborted => "aborted",
            Failure::Database => "database",
            Failure::Config => "config",
            Failure::KeyReused => "key_reused",
            Failure::NotReplicated => "not_replicated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TxError;

    #[test]
    fn a_reused_key_returns_at_once_and_is_not_transient() {
        let failure = Failure::KeyReused;
        assert_eq!(failure.kind(), ErrorKind::KeyReused);
        assert_eq!(failure.kind().as_str(), "key_reused");
        assert_eq!(failure.action(), Action::Return);
        assert!(!failure.discards_connection());
        assert!(!TxError::new(failure, "reused").is_transient());
    }

    #[test]
    fn a_moved_counter_is_retried_on_a_fresh_connection() {
        let failure = Failure::CounterMoved;
        assert_eq!(failure.action(), Action::Reconnect);
        assert!(failure.discards_connection());
        assert_eq!(failure.kind(), ErrorKind::Conflict);
        assert_eq!(failure.as_str(), "counter_moved");
    }
}

//! [`ErrorKind`]: what a caller can act on.

use std::fmt;

/// What kind of failure a [`TxError`](super::TxError) is, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The database could not be reached or the connection was lost, and retries or the
    /// deadline are spent. Usually worth a `503` with `Retry-After`.
    Unavailable,
    /// No pooled connection became free within the pool timeout while the database
    /// answers: the application is busier than its pool.
    PoolExhausted,
    /// A statement or an attempt ran past its timeout.
    Timeout,
    /// Serialization failures or deadlocks kept happening until retries were spent.
    Conflict,
    /// The connection was lost while COMMIT was in flight and the outcome could not be
    /// determined: the transaction may or may not have been applied.
    CommitUnknown,
    /// The server rejected the work for a reason retrying cannot fix (constraint,
    /// syntax, permission, a result of unexpected shape …).
    Database,
    /// The configuration is invalid (for example a malformed database URL), or the
    /// runtime's own tables are missing and the role may not create them.
    Config,
    /// An idempotency key came back with other arguments than the call that first used
    /// it (its fingerprint differs): the request is not the same one repeated. Never
    /// retried; usually a `422` telling the client to use a new key for a new request.
    KeyReused,
    /// The transaction committed on the primary, but no standby confirmed having it
    /// within the call's `replicated` bound: a failover now could lose it. The work is
    /// done; running it again applies it twice unless the call has an idempotency key
    /// (whose retry returns the stored result once a standby has it).
    NotReplicated,
}

impl ErrorKind {
    /// A short stable name (`"unavailable"`, `"pool_exhausted"`, …) for logs and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Conflict => "conflict",
            ErrorKind::CommitUnknown => "commit_unknown",
            ErrorKind::Database => "database",
            ErrorKind::Config => "config",
            ErrorKind::KeyReused => "key_reused",
            ErrorKind::NotReplicated => "not_replicated",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

//! [`CommitVerification`]: how a `Db` settles a COMMIT whose reply was lost.

use super::marker::new_marker;

/// How calls without an idempotency key, not marked `idempotent`, settle a COMMIT
/// whose reply was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CommitVerification {
    /// Note the transaction's id and the server's history with BEGIN (a `SELECT` in
    /// BEGIN's own query, no extra round trip, no table); after a lost COMMIT reply,
    /// ask the server for that transaction's status. An orphaned transaction still open on the
    /// server (its client gone silent) is ended first, so the answer is final.
    /// Settles every case except a COMMIT that survived a crash or failover of the
    /// server in the same moment: transaction ids can be handed out again after
    /// one, so a "committed" may belong to another transaction; that case is
    /// `CommitUnknown`. Every transaction gets an id, so a call that only reads
    /// should say `read_only`.
    TransactionId,
    /// Insert a marker row with every transaction that wrote, just before COMMIT;
    /// after a lost COMMIT reply, look for it on a fresh connection. Settles every
    /// case, across any number of crashes and failovers, for one more row written
    /// (and later purged) per writing transaction; a transaction that only read is
    /// not marked and is run again. Needs the marker table ([`Db::migrate`](crate::Db::migrate)).
    /// The default.
    #[default]
    MarkerRow,
    /// No verification: a lost COMMIT reply is `CommitUnknown`.
    Off,
}

impl CommitVerification {
    /// The marker for the next COMMIT, when this method writes one.
    pub(crate) fn marker(self) -> Option<String> {
        (self == CommitVerification::MarkerRow).then(new_marker)
    }
}

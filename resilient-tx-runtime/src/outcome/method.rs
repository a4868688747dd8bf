//! [`CommitVerification`]: how a `Db` settles a COMMIT whose reply was lost.

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
    /// Move a counter of the connection's own, in the same flight as COMMIT, from
    /// the value its last commit left to the next, aborting the transaction if it finds
    /// another; after a lost COMMIT reply, a fresh connection reads the counter and
    /// fences it (so that the original's messages, delivered late, can no longer
    /// commit). Settles every case, across any number of crashes and failovers, like
    /// [`MarkerRow`](Self::MarkerRow), at a constant cost: one row per connection,
    /// rewritten in place (a HOT update) rather than one row per transaction, so the
    /// table does not grow with traffic and each commit writes a third of the marker
    /// row's WAL. A transaction that only read moves nothing and is run again. Needs
    /// the counter table ([`Db::migrate`](crate::Db::migrate)). The default.
    #[default]
    FencedCounter,
    /// Insert a marker row with every transaction that wrote, just before COMMIT;
    /// after a lost COMMIT reply, look for it on a fresh connection. Settles every
    /// case, across any number of crashes and failovers, for one more row written
    /// (and later purged) per writing transaction; a transaction that only read is
    /// not marked and is run again. Needs the marker table ([`Db::migrate`](crate::Db::migrate)).
    /// The default before [`FencedCounter`](Self::FencedCounter), which settles the same
    /// cases with a table that does not grow; kept for deployments that have the
    /// marker table.
    MarkerRow,
    /// No verification: a lost COMMIT reply is `CommitUnknown`.
    Off,
}

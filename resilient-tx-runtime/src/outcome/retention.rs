//! How long the evidence of commits is kept: markers matter only until their call
//! returns, counters only while their connection lives. Calls purge the old rows now
//! and then, so the tables stay small without a background task of their own.

use std::time::Duration;

use super::CommitVerification;
use crate::tables::Tables;

/// Every this many commits of a `Db`, verification rows older than [`RETENTION`] are
/// purged.
const PURGE_EVERY: u64 = 10_000;

/// How long commit markers, and the counters of connections that stopped committing,
/// are kept: far longer than any call's deadline.
const RETENTION: Duration = Duration::from_secs(3600);

/// The purge due after a `Db`'s `commits`-th commit, by a call verified by
/// `verification`: the statement to run, if any.
pub(crate) fn purge_due(
    commits: u64,
    verification: CommitVerification,
    tables: &Tables,
) -> Option<String> {
    if commits % PURGE_EVERY != 0 {
        return None;
    }
    match verification {
        CommitVerification::MarkerRow => Some(tables.markers.purge(RETENTION)),
        CommitVerification::FencedCounter => Some(tables.counters.purge(RETENTION)),
        CommitVerification::TransactionId | CommitVerification::Off => None,
    }
}

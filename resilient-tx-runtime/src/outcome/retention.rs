//! How long the evidence of commits is kept: markers matter only until their call
//! returns, counters only while their connection lives. Calls purge the old rows now
//! and then, so the tables stay small without a background task of their own.
//!
//! A counter row is kept from the purge by its connection: a commit claims it (sets
//! its `updated_at`) when the row is new or was last claimed [`CLAIM_EVERY`] ago, and
//! the purge deletes only rows unclaimed for [`RETENTION`]. Between claims a commit
//! moves `seq` alone, which costs a third less WAL than moving the timestamp with it.
//! Like markers, a row must outlive the calls that may probe it: a call's deadline is
//! far shorter than `RETENTION - CLAIM_EVERY`.

use std::time::{Duration, Instant};

use super::CommitVerification;
use crate::tables::Tables;

/// Every this many commits of a `Db`, verification rows older than [`RETENTION`] are
/// purged.
const PURGE_EVERY: u64 = 10_000;

/// How long commit markers, and the counters of connections that stopped committing,
/// are kept: far longer than any call's deadline.
const RETENTION: Duration = Duration::from_secs(3600);

/// A connection claims its counter row again after this long: well within
/// [`RETENTION`], so a live connection's row is never old enough to purge.
const CLAIM_EVERY: Duration = Duration::from_secs(600);

/// Whether the next commit of a connection that last claimed its counter row at
/// `claimed_at` (`None`: it has no row yet) must claim it again at `now`.
pub(crate) fn needs_claim(claimed_at: Option<Instant>, now: Instant) -> bool {
    claimed_at.is_none_or(|at| now.saturating_duration_since(at) >= CLAIM_EVERY)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_without_a_row_claims_one() {
        assert!(needs_claim(None, Instant::now()));
    }

    #[test]
    fn a_recent_claim_lets_commits_move_the_counter_alone() {
        let at = Instant::now();
        assert!(!needs_claim(Some(at), at));
        assert!(!needs_claim(
            Some(at),
            at + CLAIM_EVERY - Duration::from_millis(1)
        ));
    }

    #[test]
    fn an_old_claim_is_renewed_long_before_the_purge() {
        let at = Instant::now();
        assert!(needs_claim(Some(at), at + CLAIM_EVERY));
        assert!(needs_claim(Some(at), at + RETENTION));
        assert!(CLAIM_EVERY * 4 <= RETENTION);
    }
}

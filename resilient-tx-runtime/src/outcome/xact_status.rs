//! Commit verification by transaction status ([`CommitVerification::TransactionId`]).
//!
//! BEGIN's simple query ends with `SELECT pg_current_xact_id()`: the transaction's
//! 64-bit id `X`, known to the client before COMMIT is ever sent, at the cost of one
//! function call in a query that is sent anyway. Before its first such BEGIN, a
//! connection notes where it runs: the backend's pid and the server's *history*
//! ([`crate::connection::Backend`]).
//!
//! After a lost COMMIT reply, a fresh connection reads the server's history again and
//! `pg_xact_status(X)`:
//!
//! * **Same history**: nothing since BEGIN could have handed `X` out again (ids are
//!   reused only when a recovery loses the WAL that assigned them, and every recovery
//!   changes the history: a restart the start time, a promotion the timeline, a crash
//!   recovery the point it ended at, which lies past the checkpoint the previous one
//!   wrote). The status is the truth: `committed` → the call succeeds; `aborted` →
//!   it retries; `in progress` → the original backend is still there. If it is idle
//!   in its transaction (the client went silent before COMMIT reached the server),
//!   after a short grace it is terminated (matched by pid, transaction id *and* that
//!   state, so no other session and no COMMIT is touched), and the status then read
//!   is final. If it is executing COMMIT (slow, or waiting for a synchronous standby)
//!   it is left alone: ending it there would commit locally what a standby may not
//!   have, and report that as settled. It is waited for until the call's deadline,
//!   then the call gets `CommitUnknown`.
//! * **Another history of the same cluster** (restart, crash, failover since BEGIN):
//!   if our commit survived, its record carried `X` into the new history and the
//!   status says `committed`. So anything else (`aborted`, `in progress` — no backend
//!   of ours survived —, or an id "in the future") means it did not commit: retry.
//!   But `committed` may also be another transaction that got `X` after the WAL that
//!   assigned it was lost, so it proves nothing: `CommitUnknown`.
//! * **Another cluster**: nothing can be said: `CommitUnknown`.

use std::time::Duration;

use tokio::time::Instant;

#[cfg(doc)]
use super::CommitVerification;
use super::{Probes, Unsettled, Verdict};
use crate::connection::{Backend, HISTORY_NOW, ServerHistory, first_row, history_now};
use crate::error::TxError;
use crate::pool::Session;

/// How long an original transaction still open on the server is waited for before
/// its backend is terminated: long enough for a COMMIT that is merely slow.
const ORPHAN_GRACE: Duration = Duration::from_secs(1);

/// How often a COMMIT still running on the server is looked at again.
const COMMIT_POLL: Duration = Duration::from_millis(100);

/// How long terminating the original backend may wait for it to exit.
const TERMINATE_WAIT_MS: u32 = 1000;

/// A transaction as verification finds it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XactIdentity {
    xid: u64,
    backend: Backend,
}

impl XactIdentity {
    pub(crate) fn new(xid: u64, backend: Backend) -> XactIdentity {
        XactIdentity { xid, backend }
    }

    /// The transaction's 64-bit id.
    pub(crate) fn xid(&self) -> u64 {
        self.xid
    }
}

/// `pg_xact_status` of the transaction, as the server that answers now sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Committed,
    Aborted,
    InProgress,
    /// The id was never handed out on this server.
    Future,
    /// Too old for the server to remember.
    Forgotten,
}

/// One look at the server: its history, and the transaction's status there; `None`
/// for a standby (only the primary's word counts) or an answer of unexpected shape.
async fn look(
    session: &mut Session<'_>,
    xid: u64,
    bound: Duration,
) -> Result<Option<(ServerHistory, Status)>, TxError> {
    let messages = session.simple_query(HISTORY_NOW, bound).await?;
    let Some(history) = history_now(&messages) else {
        return Ok(None);
    };
    // `pg_xact_status` fails for an id not handed out yet; comparing with a fresh id
    // first keeps that answer in-band (an error would cost the session). The fresh
    // id costs a commit record, on the rare path after a lost COMMIT reply only.
    // The id is our own number, never user input.
    let sql = format!(
        "SELECT CASE WHEN '{xid}'::xid8 >= pg_current_xact_id() THEN 'future' \
         ELSE coalesce(pg_xact_status('{xid}'::xid8), 'forgotten') END"
    );
    let messages = session.simple_query(&sql, bound).await?;
    let status = match first_row(&messages).and_then(|row| row.get(0)) {
        Some("committed") => Status::Committed,
        Some("aborted") => Status::Aborted,
        Some("in progress") => Status::InProgress,
        Some("future") => Status::Future,
        Some("forgotten") => Status::Forgotten,
        _ => return Ok(None),
    };
    Ok(Some((history, status)))
}

/// What a look means for the original transaction (`None`: look again).
fn judge(identity: &XactIdentity, history: &ServerHistory, status: Status) -> Option<Verdict> {
    let original = &identity.backend.history;
    if history.system_identifier != original.system_identifier {
        return Some(Verdict::Unknown(Unsettled::OtherCluster));
    }
    if history == original {
        return match status {
            Status::Committed => Some(Verdict::Committed),
            Status::Aborted => Some(Verdict::NotCommitted),
            Status::InProgress => None,
            // Neither can happen within one history; trust nothing then.
            Status::Future | Status::Forgotten => Some(Verdict::Unknown(Unsettled::Contradiction)),
        };
    }
    match status {
        Status::Aborted | Status::InProgress | Status::Future => Some(Verdict::NotCommitted),
        Status::Committed | Status::Forgotten => Some(Verdict::Unknown(Unsettled::IdMayBeReused)),
    }
}

/// Settles an ambiguous COMMIT by the transaction's status, retrying until the
/// deadline.
pub(crate) async fn verify(mut probes: Probes<'_>, identity: &XactIdentity) -> Verdict {
    let mut open_since: Option<Instant> = None;
    // The original backend was seen still in its transaction but not idle: executing
    // its COMMIT.
    let mut committing = false;
    while let Some((mut session, remaining)) = probes.next().await {
        let (history, status) = match look(&mut session, identity.xid, remaining).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                probes.failed();
                continue;
            }
            Err(error) => {
                tracing::info!(function = probes.name(), error = %error,
                    "commit verification failed; trying again");
                probes.failed();
                continue;
            }
        };
        if let Some(verdict) = judge(identity, &history, status) {
            return verdict;
        }
        // Still open on the server. Give a slow COMMIT its grace, then end the orphan
        // if it is idle in its transaction, so that its status becomes final.
        let since = *open_since.get_or_insert_with(Instant::now);
        if since.elapsed() < ORPHAN_GRACE {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let terminate = format!(
            "SELECT pg_terminate_backend(pid, {TERMINATE_WAIT_MS}) FROM pg_stat_activity \
             WHERE pid = {} AND backend_xid = '{}'::xid \
             AND state IN ('idle in transaction', 'idle in transaction (aborted)')",
            identity.backend.pid,
            identity.xid & u64::from(u32::MAX),
        );
        match session.simple_query(&terminate, remaining).await {
            Ok(messages) if first_row(&messages).is_some() => {
                committing = false;
                tracing::info!(
                    function = probes.name(),
                    pid = identity.backend.pid,
                    "ended the orphaned transaction of a lost connection"
                );
            }
            Ok(_) => {
                // Not idle: its COMMIT is running (or it just ended, which the next
                // look tells). Never cut a COMMIT short; look again in a while.
                committing = true;
                tokio::time::sleep(COMMIT_POLL.min(remaining)).await;
            }
            Err(error) => {
                tracing::info!(error = %error, "could not end the orphaned transaction")
            }
        }
    }
    Verdict::Unknown(if committing {
        Unsettled::StillCommitting
    } else {
        Unsettled::NoAnswer
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(start: &str, timeline: &str, recovered_to: Option<&str>) -> ServerHistory {
        ServerHistory {
            system_identifier: "7310".into(),
            postmaster_start: start.into(),
            timeline: timeline.into(),
            recovered_to: recovered_to.map(Into::into),
        }
    }

    fn identity() -> XactIdentity {
        XactIdentity::new(
            42,
            Backend {
                pid: 7,
                history: history("t0", "00000001", None),
            },
        )
    }

    #[test]
    fn within_one_history_the_status_is_the_truth() {
        let same = history("t0", "00000001", None);
        assert_eq!(
            judge(&identity(), &same, Status::Committed),
            Some(Verdict::Committed)
        );
        assert_eq!(
            judge(&identity(), &same, Status::Aborted),
            Some(Verdict::NotCommitted)
        );
        assert_eq!(judge(&identity(), &same, Status::InProgress), None);
        assert_eq!(
            judge(&identity(), &same, Status::Future),
            Some(Verdict::Unknown(Unsettled::Contradiction))
        );
    }

    #[test]
    fn after_a_restart_crash_or_failover_only_not_committed_is_proven() {
        for other in [
            history("t1", "00000001", None),
            history("t0", "00000001", Some("0/1AF8F210")),
            history("t0", "00000002", None),
        ] {
            assert_eq!(
                judge(&identity(), &other, Status::Committed),
                Some(Verdict::Unknown(Unsettled::IdMayBeReused))
            );
            for status in [Status::Aborted, Status::InProgress, Status::Future] {
                assert_eq!(
                    judge(&identity(), &other, status),
                    Some(Verdict::NotCommitted),
                    "{other:?} {status:?}"
                );
            }
        }
    }

    #[test]
    fn another_cluster_proves_nothing() {
        let mut other = history("t0", "00000001", None);
        other.system_identifier = "9999".into();
        assert_eq!(
            judge(&identity(), &other, Status::Aborted),
            Some(Verdict::Unknown(Unsettled::OtherCluster))
        );
    }
}

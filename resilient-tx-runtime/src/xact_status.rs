//! Commit verification by transaction status ([`CommitVerification::TransactionId`]).
//!
//! BEGIN's simple query ends with `SELECT pg_current_xact_id()`: the transaction's
//! 64-bit id `X`, known to the client before COMMIT is ever sent, at the cost of one
//! function call in a query that is sent anyway. Before its first such BEGIN, a
//! connection notes where it runs: the backend's pid and the server's *history* — system identifier,
//! postmaster start time, timeline, and where its last crash recovery ended (none of
//! them can change while the connection lives: a primary's backend dies with any
//! restart, crash or promotion).
//!
//! After a lost COMMIT reply, a fresh connection reads the server's history again and
//! `pg_xact_status(X)`:
//!
//! * **Same history**: nothing since BEGIN could have handed `X` out again (ids are
//!   reused only when a recovery loses the WAL that assigned them, and every recovery
//!   changes the history: a restart the start time, a promotion the timeline, a crash
//!   recovery the point it ended at, which lies past the checkpoint the previous one
//!   wrote). The status is the truth: `committed` → the call succeeds; `aborted` →
//!   it retries; `in progress` → the original backend is still there (the client went
//!   silent before the server noticed): after a short grace it is terminated
//!   (matched by pid *and* transaction id, so no other session is touched), and the
//!   status then read is final.
//! * **Another history of the same cluster** (restart, crash, failover since BEGIN):
//!   if our commit survived, its record carried `X` into the new history and the
//!   status says `committed`. So anything else (`aborted`, `in progress` — no backend
//!   of ours survived —, or an id "in the future") means it did not commit: retry.
//!   But `committed` may also be another transaction that got `X` after the WAL that
//!   assigned it was lost, so it proves nothing: `CommitUnknown`.
//! * **Another cluster**: nothing can be said: `CommitUnknown`.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::call::Call;
use crate::classify::cause_of;
#[cfg(doc)]
use crate::verification::CommitVerification;
use crate::verification::{Probes, Unsettled, Verdict};

/// Ends BEGIN's simple query: the transaction's id.
pub(crate) const NOTE_XID: &str = "SELECT pg_current_xact_id()";

/// A server's history, as columns (its timeline cannot be read during recovery,
/// where no transaction id is handed out and no verification can run anyway).
macro_rules! history_columns {
    () => {
        "pg_is_in_recovery()::text, (pg_control_system()).system_identifier::text, \
         pg_postmaster_start_time()::text, \
         CASE WHEN pg_is_in_recovery() THEN '' \
              ELSE substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8) END, \
         pg_last_wal_replay_lsn()::text"
    };
}

/// Read once per connection, before its first BEGIN that notes an id.
pub(crate) const NOTE_BACKEND: &str =
    concat!("SELECT pg_backend_pid()::text, ", history_columns!());

/// The history of the server a verifying connection reached.
const HISTORY_NOW: &str = concat!("SELECT ", history_columns!());

/// How long an original transaction still open on the server is waited for before
/// its backend is terminated: long enough for a COMMIT that is merely slow.
const ORPHAN_GRACE: Duration = Duration::from_secs(1);

/// How long terminating the original backend may wait for it to exit.
const TERMINATE_WAIT_MS: u32 = 1000;

/// The stretch of a server's history in which transaction ids cannot repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerHistory {
    system_identifier: String,
    postmaster_start: String,
    timeline: String,
    /// Where the last crash recovery of this postmaster ended, if any.
    recovered_to: Option<String>,
}

/// The server backend a connection talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    pid: i32,
    history: ServerHistory,
}

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

/// The first row of a simple query's reply.
fn first_row(messages: &[SimpleQueryMessage]) -> Option<&SimpleQueryRow> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    })
}

/// Reads [`history_columns`] from `row`, starting at column `at`; `None` for a server
/// in recovery.
fn history_at(row: &SimpleQueryRow, at: usize) -> Option<ServerHistory> {
    if row.get(at)? != "false" {
        return None;
    }
    Some(ServerHistory {
        system_identifier: row.get(at + 1)?.to_owned(),
        postmaster_start: row.get(at + 2)?.to_owned(),
        timeline: row.get(at + 3)?.to_owned(),
        recovered_to: row.get(at + 4).map(str::to_owned),
    })
}

/// Reads [`NOTE_BACKEND`]'s reply; `None` for a standby (whose transactions cannot
/// get an id anyway).
pub(crate) async fn note_backend(
    client: &Client,
) -> Result<Option<Backend>, tokio_postgres::Error> {
    let messages = client.simple_query(NOTE_BACKEND).await?;
    Ok(first_row(&messages).and_then(|row| {
        Some(Backend {
            pid: row.get(0)?.parse().ok()?,
            history: history_at(row, 1)?,
        })
    }))
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

/// One look at the server: its history, and the transaction's status there.
async fn look(
    client: &Client,
    xid: u64,
) -> Result<Option<(ServerHistory, Status)>, tokio_postgres::Error> {
    let messages = client.simple_query(HISTORY_NOW).await?;
    // A standby: only the primary's word counts.
    let Some(history) = first_row(&messages).and_then(|row| history_at(row, 0)) else {
        return Ok(None);
    };
    // The id is our own number, never user input.
    let status = match client
        .simple_query(&format!("SELECT pg_xact_status('{xid}'::xid8)"))
        .await
    {
        Ok(messages) => match first_row(&messages).map(|row| row.get(0)) {
            Some(Some("committed")) => Status::Committed,
            Some(Some("aborted")) => Status::Aborted,
            Some(Some("in progress")) => Status::InProgress,
            Some(None) => Status::Forgotten,
            _ => return Ok(None),
        },
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) => {
            Status::Future
        }
        Err(e) => return Err(e),
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

impl Call<'_> {
    /// Settles an ambiguous COMMIT by the transaction's status, retrying until the
    /// deadline.
    pub(crate) async fn verify_by_xact_status(&self, identity: &XactIdentity) -> Verdict {
        let mut open_since: Option<Instant> = None;
        let mut probes = Probes::new(self);
        while let Some((mut conn, remaining)) = probes.next().await {
            let (history, status) = match tokio::time::timeout(
                remaining,
                look(&conn.client, identity.xid),
            )
            .await
            {
                Ok(Ok(Some(found))) => found,
                Ok(Ok(None)) | Err(_) => {
                    probes.failed(&mut conn);
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %cause_of(&e), "commit verification failed; trying again");
                    probes.failed(&mut conn);
                    continue;
                }
            };
            if let Some(verdict) = judge(identity, &history, status) {
                return verdict;
            }
            // Still open on the server: the original backend has not noticed its
            // client is gone. Give a slow COMMIT its grace, then end the orphan so
            // that its status becomes final.
            let since = *open_since.get_or_insert_with(Instant::now);
            if since.elapsed() < ORPHAN_GRACE {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let terminate = format!(
                "SELECT pg_terminate_backend(pid, {TERMINATE_WAIT_MS}) FROM pg_stat_activity \
                 WHERE pid = {} AND backend_xid = '{}'::xid",
                identity.backend.pid,
                identity.xid & u64::from(u32::MAX),
            );
            match conn.client.simple_query(&terminate).await {
                Ok(_) => tracing::info!(
                    function = self.name(),
                    pid = identity.backend.pid,
                    "ended the orphaned transaction of a lost connection"
                ),
                Err(e) => {
                    tracing::info!(error = %cause_of(&e), "could not end the orphaned transaction")
                }
            }
        }
        Verdict::Unknown(Unsettled::NoAnswer)
    }
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

    #[test]
    fn the_backend_is_its_pid_and_the_history_columns() {
        assert!(NOTE_BACKEND.starts_with("SELECT pg_backend_pid()::text, pg_is_in_recovery()"));
        assert_eq!(
            NOTE_BACKEND.matches("::text").count(),
            HISTORY_NOW.matches("::text").count() + 1
        );
    }
}

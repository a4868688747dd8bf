//! Automatic commit verification: how a call without an idempotency key, not marked
//! `idempotent`, learns whether a COMMIT whose reply was lost took effect, so that it
//! returns the body's result when it did and runs again when it did not, instead of
//! guessing. Two methods, chosen per [`Db`](crate::Db) with
//! [`DbBuilder::commit_verification`](crate::DbBuilder::commit_verification):
//!
//! * by a marker row ([`crate::marker`], the default): settles every ambiguous
//!   COMMIT, across crashes and failovers, for one more row written per transaction
//!   that wrote;
//! * by transaction status ([`crate::xact_status`]): needs no table and ends an
//!   orphaned transaction at once, but cannot settle a COMMIT that survived a crash
//!   or failover of the server at that very moment.

use std::time::Duration;

use crate::call::Call;
use crate::marker::new_marker;
use crate::pool::Pooled;
use crate::xact_status::XactIdentity;
use tokio::time::Instant;

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

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The original transaction committed.
    Committed,
    /// It did not, and now cannot.
    NotCommitted,
    /// No answer before the deadline, or none that can be trusted.
    Unknown(Unsettled),
}

/// Why a verification could not settle a COMMIT: said in the `CommitUnknown` error,
/// since what a person can do about it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsettled {
    /// No probe got an answer before the call's deadline.
    NoAnswer,
    /// The server restarted, crashed or failed over since BEGIN and says the id
    /// committed (or no longer knows it); ids can be handed out again after a
    /// recovery, so it may be another transaction's.
    IdMayBeReused,
    /// The server that answers is not the cluster the transaction ran on.
    OtherCluster,
    /// The server contradicts its own history (an id it never handed out, or forgot).
    Contradiction,
}

impl Unsettled {
    fn sentence(self) -> &'static str {
        match self {
            Unsettled::NoAnswer => {
                "commit verification got no answer from the database before the call's deadline"
            }
            Unsettled::IdMayBeReused => {
                "the database restarted or failed over since the transaction began, and \
                 since then its transaction id may belong to another transaction, so its \
                 status proves nothing"
            }
            Unsettled::OtherCluster => {
                "commit verification reached another database cluster than the one the \
                 transaction ran on"
            }
            Unsettled::Contradiction => {
                "the database's answer to commit verification contradicts its own history"
            }
        }
    }
}

/// What an attempt leaves behind to verify its COMMIT with.
#[derive(Debug, Clone)]
pub(crate) enum Evidence {
    /// The transaction's id and where it ran.
    Xact(XactIdentity),
    /// The marker inserted with it.
    Marker(String),
}

impl Evidence {
    /// How a person settles the outcome later, when the evidence still can: the check
    /// verification would have made (see "Settling `CommitUnknown` by hand" in the
    /// guide).
    fn hand_check(&self, why: Unsettled, marker_table: &str) -> Option<String> {
        match (self, why) {
            (Evidence::Marker(marker), _) => {
                Some(format!("its commit marker is '{marker}' in {marker_table}"))
            }
            (Evidence::Xact(identity), Unsettled::NoAnswer) => Some(format!(
                "its transaction id is {}: pg_xact_status('{}') tells, on the server it \
                 ran on, as long as that server has not restarted or failed over",
                identity.xid(),
                identity.xid()
            )),
            (Evidence::Xact(_), _) => None,
        }
    }

    /// The sentence a `CommitUnknown` ends with after verification could not settle
    /// it: why, and how to settle it later.
    pub(crate) fn unsettled(&self, why: Unsettled, marker_table: &str) -> String {
        match self.hand_check(why, marker_table) {
            Some(check) => format!("{} ({check})", why.sentence()),
            None => why.sentence().to_owned(),
        }
    }
}

impl CommitVerification {
    /// The marker for the next COMMIT, when this method writes one.
    pub(crate) fn marker(self) -> Option<String> {
        (self == CommitVerification::MarkerRow).then(new_marker)
    }
}

impl Call<'_> {
    /// Settles an ambiguous COMMIT by what the attempt left behind.
    pub(crate) async fn verify_commit(&self, evidence: &Evidence) -> Verdict {
        match evidence {
            Evidence::Xact(identity) => self.verify_by_xact_status(identity).await,
            Evidence::Marker(marker) => self.verify_by_marker(marker).await,
        }
    }
}

/// The connections a verification probes with, until the call's deadline. After a
/// failed probe (or no connection) the next comes after a pause, doubling up to a
/// second.
pub(crate) struct Probes<'c, 'db> {
    call: &'c Call<'db>,
    pause: Duration,
    failed: bool,
}

impl<'c, 'db> Probes<'c, 'db> {
    pub(crate) fn new(call: &'c Call<'db>) -> Self {
        Probes {
            call,
            pause: Duration::from_millis(50),
            failed: false,
        }
    }

    /// The next connection and the time left; `None` once the deadline has passed.
    pub(crate) async fn next(&mut self) -> Option<(Pooled<'db>, Duration)> {
        let db = self.call.db();
        loop {
            if self.failed {
                let left = self
                    .call
                    .deadline()
                    .saturating_duration_since(Instant::now());
                tokio::time::sleep(self.pause.min(left)).await;
                self.pause = (self.pause * 2).min(Duration::from_secs(1));
            }
            let remaining = self
                .call
                .deadline()
                .saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            match db.pool().acquire(remaining.min(db.pool_timeout())).await {
                Ok(conn) => {
                    self.failed = false;
                    return Some((conn, remaining));
                }
                Err(_) => self.failed = true,
            }
        }
    }

    /// The probe on the last connection failed; that connection is not for the pool
    /// (a failed probe may leave its transaction aborted, a timed-out one a request in
    /// flight).
    pub(crate) fn failed(&mut self, conn: &mut Pooled<'db>) {
        conn.broken = true;
        self.failed = true;
    }
}

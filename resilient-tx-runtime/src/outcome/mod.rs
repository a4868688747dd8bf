//! Automatic commit verification: how a call without an idempotency key, not marked
//! `idempotent`, learns whether a COMMIT whose reply was lost took effect, so that it
//! returns the body's result when it did and runs again when it did not, instead of
//! guessing. Two methods, chosen per [`Db`](crate::Db) with
//! [`DbBuilder::commit_verification`](crate::DbBuilder::commit_verification):
//!
//! * by a fenced per-connection counter ([`counter`], the default): settles every
//!   ambiguous COMMIT, across crashes and failovers, for a rewrite of one row per
//!   connection with each transaction that wrote;
//! * by a marker row ([`marker`]): settles the same, for one more row written (and
//!   later purged) per transaction that wrote;
//! * by transaction status ([`xact_status`]): needs no table and ends an orphaned
//!   transaction at once, but cannot settle a COMMIT that survived a crash or failover
//!   of the server at that very moment.
//!
//! What a call hands this module is narrow ([`Probes`]: a pool, a deadline, a name),
//! never the call or the `Db`.

mod counter;
mod marker;
mod method;
mod probes;
mod retention;
mod xact_status;

pub use method::CommitVerification;
pub(crate) use probes::Probes;
pub(crate) use retention::purge_due;
pub(crate) use xact_status::XactIdentity;

use std::time::Instant;

use crate::tables::Tables;
use crate::tx::{CommitMark, Tx};

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
    /// The transaction's COMMIT was still running on the server at the deadline (slow,
    /// or waiting for a synchronous standby); it was left to finish.
    StillCommitting,
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
            Unsettled::StillCommitting => {
                "the transaction's COMMIT was still running on the database at the call's \
                 deadline (waiting for a synchronous standby?), and ending it there could \
                 commit it without the standby"
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
    /// The connection's commit counter row and the value it expected there; `claim`:
    /// the commit also claims the row (creates it, or keeps it from the purge).
    Counter { id: i64, expected: i64, claim: bool },
}

impl Evidence {
    /// What the next COMMIT of `tx` will leave behind for `verification` to settle a
    /// lost reply with; `None` when there is nothing to verify by.
    pub(crate) fn for_commit(verification: CommitVerification, tx: &Tx<'_>) -> Option<Evidence> {
        match verification {
            CommitVerification::FencedCounter => {
                let counter = tx.commit_counter();
                Some(Evidence::Counter {
                    id: counter.id,
                    expected: counter.committed,
                    claim: retention::needs_claim(counter.claimed_at, Instant::now()),
                })
            }
            CommitVerification::MarkerRow => Some(Evidence::Marker(marker::new_marker())),
            CommitVerification::TransactionId => tx
                .noted_xact()
                .map(|(xid, backend)| Evidence::Xact(XactIdentity::new(xid, backend))),
            CommitVerification::Off => None,
        }
    }

    /// The statement that travels with COMMIT to leave this evidence, if it needs one.
    /// `may_notify`: the transaction may have an effect before it has an id (a queued
    /// NOTIFY), so the mark must not wait for one.
    pub(crate) fn mark<'a>(
        &'a self,
        tables: &'a Tables,
        may_notify: bool,
    ) -> Option<CommitMark<'a>> {
        match self {
            Evidence::Marker(marker) => Some(CommitMark::Marker {
                sql: match may_notify {
                    true => &tables.markers.insert_always,
                    false => &tables.markers.insert,
                },
                marker,
            }),
            Evidence::Counter { claim, .. } => {
                let counters = &tables.counters;
                Some(CommitMark::Counter {
                    sql: match (claim, may_notify) {
                        (true, true) => &counters.claim_always,
                        (true, false) => &counters.claim,
                        (false, true) => &counters.cas_always,
                        (false, false) => &counters.cas,
                    },
                    claim: *claim,
                })
            }
            Evidence::Xact(_) => None,
        }
    }

    /// How a person settles the outcome later, when the evidence still can: the check
    /// verification would have made (see "Settling `CommitUnknown` by hand" in the
    /// guide).
    fn hand_check(&self, why: Unsettled, tables: &Tables) -> Option<String> {
        match (self, why) {
            (Evidence::Marker(marker), _) => Some(format!(
                "its commit marker is '{marker}' in {}",
                tables.markers.name()
            )),
            (Evidence::Counter { id, expected, .. }, _) => Some(format!(
                "its connection's commit counter is the row id = {id} of {}: seq = {} means \
                 applied, {expected} means not",
                tables.counters.name(),
                expected + 1
            )),
            (Evidence::Xact(identity), Unsettled::NoAnswer | Unsettled::StillCommitting) => {
                Some(format!(
                    "its transaction id is {}: pg_xact_status('{}') tells, on the server it \
                 ran on, as long as that server has not restarted or failed over",
                    identity.xid(),
                    identity.xid()
                ))
            }
            (Evidence::Xact(_), _) => None,
        }
    }

    /// The sentence a `CommitUnknown` ends with after verification could not settle
    /// it: why, and how to settle it later.
    pub(crate) fn unsettled(&self, why: Unsettled, tables: &Tables) -> String {
        match self.hand_check(why, tables) {
            Some(check) => format!("{} ({check})", why.sentence()),
            None => why.sentence().to_owned(),
        }
    }
}

/// Settles an ambiguous COMMIT by what the attempt left behind, probing on fresh
/// connections until the deadline `probes` carries.
pub(crate) async fn verify(probes: Probes<'_>, evidence: &Evidence, tables: &Tables) -> Verdict {
    match evidence {
        Evidence::Xact(identity) => xact_status::verify(probes, identity).await,
        Evidence::Marker(marker) => marker::verify(probes, &tables.markers, marker).await,
        Evidence::Counter { id, expected, .. } => {
            counter::verify(probes, &tables.counters, *id, *expected).await
        }
    }
}

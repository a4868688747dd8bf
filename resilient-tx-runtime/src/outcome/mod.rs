//! Automatic commit verification: how a call without an idempotency key, not marked
//! `idempotent`, learns whether a COMMIT whose reply was lost took effect, so that it
//! returns the body's result when it did and runs again when it did not, instead of
//! guessing. Two methods, chosen per [`Db`](crate::Db) with
//! [`DbBuilder::commit_verification`](crate::DbBuilder::commit_verification):
//!
//! * by a marker row ([`marker`], the default): settles every ambiguous COMMIT,
//!   across crashes and failovers, for one more row written per transaction that
//!   wrote;
//! * by transaction status ([`xact_status`]): needs no table and ends an orphaned
//!   transaction at once, but cannot settle a COMMIT that survived a crash or failover
//!   of the server at that very moment.
//!
//! What a call hands this module is narrow ([`Probes`]: a pool, a deadline, a name),
//! never the call or the `Db`.

mod marker;
mod method;
mod probes;
mod xact_status;

pub use method::CommitVerification;
pub(crate) use probes::Probes;
pub(crate) use xact_status::XactIdentity;

use crate::tables::MarkerTable;

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
    pub(crate) fn unsettled(&self, why: Unsettled, marker_table: &str) -> String {
        match self.hand_check(why, marker_table) {
            Some(check) => format!("{} ({check})", why.sentence()),
            None => why.sentence().to_owned(),
        }
    }
}

/// Settles an ambiguous COMMIT by what the attempt left behind, probing on fresh
/// connections until the deadline `probes` carries.
pub(crate) async fn verify(
    probes: Probes<'_>,
    evidence: &Evidence,
    markers: &MarkerTable,
) -> Verdict {
    match evidence {
        Evidence::Xact(identity) => xact_status::verify(probes, identity).await,
        Evidence::Marker(marker) => marker::verify(probes, markers, marker).await,
    }
}

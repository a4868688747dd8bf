//! Commit verification by a marker row
//! ([`CommitVerification::MarkerRow`](super::CommitVerification::MarkerRow)): the
//! transaction inserts a random marker just before COMMIT. If the connection dies
//! while COMMIT is in flight, a fresh connection settles the outcome by inserting the
//! same marker:
//!
//! * the insert conflicts with the original's marker: the original transaction
//!   committed → the call succeeds;
//! * the insert succeeds (or finds a marker an earlier probe wrote, flagged as such):
//!   the original did not commit, and never can, since its own marker insert (which
//!   precedes its COMMIT) would now conflict → the call retries;
//! * the insert waits: the original transaction is still open; it is waited for (its
//!   row lock decides) until the call's deadline, then the call gets `CommitUnknown`.
//!
//! This holds across any number of restarts and failovers: what counts is whether the
//! marker is on the server that answers now. The price is one more row written per
//! transaction that wrote anything; a transaction that only read writes no marker (it
//! has nothing to apply twice) and is run again after a lost COMMIT.

use std::time::Duration;

use super::{Probes, Unsettled, Verdict};
use crate::connection::first_row;
use crate::tables::MarkerTable;

/// One probe waits at most this long for the original transaction's row lock.
const PROBE_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// A fresh marker: 48 bits of milliseconds since the epoch, then 80 random bits.
/// Time-ordered ids land at the right edge of the primary key's B-tree, which is far
/// cheaper per insert than random positions all over it.
pub(crate) fn new_marker() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    format!("{:032x}", ((millis & ((1u128 << 48) - 1)) << 80) | random)
}

/// Settles an ambiguous COMMIT by its marker, retrying probes until the deadline.
pub(crate) async fn verify(mut probes: Probes<'_>, table: &MarkerTable, marker: &str) -> Verdict {
    while let Some((mut session, remaining)) = probes.next().await {
        let sql = table.probe(marker, PROBE_LOCK_TIMEOUT.min(remaining));
        match session.simple_query(&sql, remaining).await {
            Ok(messages) => match first_row(&messages).and_then(|row| row.get(0)) {
                // `by_probe`: true when the marker there is a probe's own.
                Some("t") => return Verdict::NotCommitted,
                Some(_) => return Verdict::Committed,
                // The row was just inserted or found: it cannot be missing.
                None => probes.failed(),
            },
            Err(error) => {
                tracing::info!(function = probes.name(), error = %error,
                    "commit verification probe failed; trying again");
                probes.failed();
            }
        }
    }
    Verdict::Unknown(Unsettled::NoAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_hex_unique_and_ordered_by_time() {
        let (a, b) = (new_marker(), new_marker());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        std::thread::sleep(Duration::from_millis(2));
        let later = new_marker();
        assert!(later > a, "{later} sorts after {a}");
    }
}

//! Commit verification by a marker row ([`CommitVerification::MarkerRow`]): the
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

use tokio_postgres::SimpleQueryMessage;

use crate::call::Call;
use crate::db::Db;
use crate::error::TxError;
#[cfg(doc)]
use crate::verification::CommitVerification;
use crate::verification::{Probes, Unsettled, Verdict};

/// Where markers live unless the builder says otherwise.
pub(crate) const DEFAULT_MARKER_TABLE: &str = "resilient_tx.commit_markers";

/// One probe waits at most this long for the original transaction's row lock.
const PROBE_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The marker table's SQL.
#[derive(Debug, Clone)]
pub(crate) struct MarkerTable {
    name: String,
    pub(crate) create: String,
    /// The statement a transaction sends just before COMMIT, with the marker as `$1`.
    pub(crate) insert: String,
    purge: String,
}

impl MarkerTable {
    /// The table's qualified name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn new(name: &str) -> MarkerTable {
        let schema = name
            .split_once('.')
            .map(|(schema, _)| format!("CREATE SCHEMA IF NOT EXISTS {schema};"))
            .unwrap_or_default();
        let index = name.replace('.', "_");
        MarkerTable {
            name: name.to_owned(),
            create: format!(
                "{schema}
                 CREATE TABLE IF NOT EXISTS {name} (
                     id uuid PRIMARY KEY,
                     by_probe boolean NOT NULL DEFAULT false,
                     created_at timestamptz NOT NULL DEFAULT now());
                 CREATE INDEX IF NOT EXISTS {index}_created_at ON {name} (created_at);"
            ),
            // Only a transaction that wrote something (and so has an id) is marked: one
            // that only read has nothing to apply twice, and a marker would turn its
            // COMMIT from free into a WAL write and flush. A lost COMMIT of such a
            // transaction finds no marker and is simply run again.
            insert: format!(
                "INSERT INTO {name} (id) SELECT ($1::text)::uuid \
                 WHERE pg_current_xact_id_if_assigned() IS NOT NULL"
            ),
            purge: format!(
                "DELETE FROM {name} WHERE created_at < now() - ($1::int8 * interval '1 millisecond')"
            ),
        }
    }

    /// The probe: insert the same marker, flagged as the probe's, if absent, in a
    /// transaction whose lock wait is bounded; then read whose marker is there. The
    /// flag matters when a probe's own reply is lost: the next probe must not mistake
    /// the marker the first one wrote for the original transaction's.
    fn probe(&self, marker: &str, lock_timeout: Duration) -> String {
        let name = &self.name;
        format!(
            "BEGIN; SET LOCAL lock_timeout = {}; \
             INSERT INTO {name} (id, by_probe) VALUES ('{marker}'::uuid, true) ON CONFLICT DO NOTHING; \
             SELECT by_probe FROM {name} WHERE id = '{marker}'::uuid; COMMIT",
            lock_timeout.as_millis().max(1),
        )
    }
}

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

impl Db {
    /// Deletes commit markers older than `older_than` (they matter only until the call
    /// that wrote them has returned); returns how many. Calls purge markers older than
    /// an hour by themselves from time to time.
    pub async fn purge_commit_markers(&self, older_than: Duration) -> Result<u64, TxError> {
        self.migrate().await?;
        let sql = self.marker_table().purge.clone();
        let millis = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        self.purge(&sql, millis).await
    }
}

impl Call<'_> {
    /// Settles an ambiguous COMMIT by its marker, retrying probes until the deadline.
    pub(crate) async fn verify_by_marker(&self, marker: &str) -> Verdict {
        let table = self.db().marker_table();
        let mut probes = Probes::new(self);
        while let Some((mut conn, remaining)) = probes.next().await {
            let sql = table.probe(marker, PROBE_LOCK_TIMEOUT.min(remaining));
            match tokio::time::timeout(remaining, conn.client.simple_query(&sql)).await {
                Ok(Ok(messages)) => {
                    let by_probe = messages.iter().find_map(|m| match m {
                        SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
                        _ => None,
                    });
                    match by_probe {
                        Some(false) => return Verdict::Committed,
                        Some(true) => return Verdict::NotCommitted,
                        // The row was just inserted or found: it cannot be missing.
                        None => probes.failed(&mut conn),
                    }
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %crate::classify::cause_of(&e), "commit verification probe failed; trying again");
                    probes.failed(&mut conn);
                }
                Err(_) => probes.failed(&mut conn),
            }
        }
        Verdict::Unknown(Unsettled::NoAnswer)
    }
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

    #[test]
    fn probe_inserts_the_same_marker_with_a_bounded_lock_wait() {
        let table = MarkerTable::new("resilient_tx.commit_markers");
        let probe = table.probe("ab12", Duration::from_millis(1500));
        assert!(probe.contains("SET LOCAL lock_timeout = 1500"));
        assert!(probe.contains("VALUES ('ab12'::uuid, true) ON CONFLICT DO NOTHING"));
        assert!(
            probe.contains(
                "SELECT by_probe FROM resilient_tx.commit_markers WHERE id = 'ab12'::uuid"
            )
        );
        assert_eq!(
            table.insert,
            "INSERT INTO resilient_tx.commit_markers (id) SELECT ($1::text)::uuid \
             WHERE pg_current_xact_id_if_assigned() IS NOT NULL"
        );
    }
}

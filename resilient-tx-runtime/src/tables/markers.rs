//! [`MarkerTable`]: the SQL of the commit marker table, for one table name.

use std::time::Duration;

use super::presence::check_sql;
use super::readiness::TableSpec;

/// The marker table's SQL.
#[derive(Debug, Clone)]
pub(crate) struct MarkerTable {
    name: String,
    pub(crate) spec: TableSpec,
    /// The statement a transaction sends just before COMMIT, with the marker as `$1`.
    pub(crate) insert: String,
    /// [`MarkerTable::insert`] for a transaction that may have an effect without an id
    /// yet (a NOTIFY is queued, not written, until COMMIT): it always marks.
    pub(crate) insert_always: String,
}

impl MarkerTable {
    /// `name` is `schema.table` or `table`; it was validated as identifiers.
    pub(crate) fn new(name: &str) -> MarkerTable {
        let create_schema = super::create_schema(name);
        let index = name.replace('.', "_");
        MarkerTable {
            name: name.to_owned(),
            spec: TableSpec {
                name: name.to_owned(),
                what: "commit marker table",
                consequence: "commit verification by marker row is off: an ambiguous COMMIT \
                              of a call without an idempotency key (and not `idempotent`) \
                              fails with CommitUnknown",
                check: check_sql(name, None, &["SELECT", "INSERT"]),
                create: format!(
                    "{create_schema}
                     CREATE TABLE IF NOT EXISTS {name} (
                         id uuid PRIMARY KEY,
                         by_probe boolean NOT NULL DEFAULT false,
                         created_at timestamptz NOT NULL DEFAULT now());
                     CREATE INDEX IF NOT EXISTS {index}_created_at ON {name} (created_at);"
                ),
                column: None,
            },
            // Only a transaction that wrote something (and so has an id) is marked: one
            // that only read has nothing to apply twice, and a marker would turn its
            // COMMIT from free into a WAL write and flush. A lost COMMIT of such a
            // transaction finds no marker and is simply run again.
            insert: format!(
                "INSERT INTO {name} (id) SELECT ($1::text)::uuid \
                 WHERE pg_current_xact_id_if_assigned() IS NOT NULL"
            ),
            insert_always: format!("INSERT INTO {name} (id) VALUES (($1::text)::uuid)"),
        }
    }

    /// The table's qualified name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The probe of commit verification: insert the same marker, flagged as the
    /// probe's, if absent, in a transaction whose lock wait is bounded; then read whose
    /// marker is there. The flag matters when a probe's own reply is lost: the next
    /// probe must not mistake the marker the first one wrote for the original
    /// transaction's.
    pub(crate) fn probe(&self, marker: &str, lock_timeout: Duration) -> String {
        let name = &self.name;
        format!(
            "BEGIN; SET LOCAL lock_timeout = {}; \
             INSERT INTO {name} (id, by_probe) VALUES ('{marker}'::uuid, true) ON CONFLICT DO NOTHING; \
             SELECT by_probe FROM {name} WHERE id = '{marker}'::uuid; COMMIT",
            lock_timeout.as_millis().max(1),
        )
    }

    /// Deletes the markers written more than `older_than` ago.
    pub(crate) fn purge(&self, older_than: Duration) -> String {
        super::purge_sql(&self.name, older_than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

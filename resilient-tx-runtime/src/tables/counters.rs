//! [`CounterTable`]: the SQL of the commit counter table, for one table name: one row
//! per pooled connection, whose `seq` only the connection's own commits move.

use std::time::Duration;

use super::presence::check_sql;
use super::readiness::TableSpec;

/// The `seq` a probe writes into a row whose connection's COMMIT it found not
/// applied. Connections count up from 0, so no transaction ever expects it: the
/// original's compare-and-set, delivered late, fails against it.
pub(crate) const FENCED: i64 = -1;

/// The counter table's SQL.
#[derive(Debug, Clone)]
pub(crate) struct CounterTable {
    name: String,
    pub(crate) spec: TableSpec,
    /// The compare-and-set sent with COMMIT by a connection whose row exists: `$1` the
    /// connection's id, `$2` the value it last committed, `$3` the next. Moves the
    /// counter only in a transaction that wrote something (has an id); one that did and
    /// finds another value, or no row, aborts with a division by zero, so its COMMIT
    /// becomes a ROLLBACK. Returns one row: how many rows it moved (0 for a transaction
    /// that wrote nothing, which needs no evidence).
    pub(crate) cas: String,
    /// [`CounterTable::cas`] for a transaction that may have an effect without an id
    /// yet (a NOTIFY is queued, not written, until COMMIT): it always moves the counter.
    pub(crate) cas_always: String,
    /// [`CounterTable::cas`] that also claims the row: creates it (a connection's first
    /// commit), or moves it and sets `updated_at`, which keeps it from the purge.
    pub(crate) claim: String,
    /// [`CounterTable::claim`] whatever the transaction wrote, as `cas_always`.
    pub(crate) claim_always: String,
}

impl CounterTable {
    /// `name` is `schema.table` or `table`; it was validated as identifiers.
    pub(crate) fn new(name: &str) -> CounterTable {
        let create_schema = super::create_schema(name);
        // A row is rewritten on every commit of its connection and never grows. Half of
        // each page is kept free when rows are added, so every page has room for the new
        // versions of its rows: each update is HOT (no index entry, little WAL) and the
        // table stays one row per connection. Not lower: the server prunes a page's old
        // versions once it is fuller than the fillfactor, and each prune is WAL too
        // (with 30, about 3 bytes more a commit than with 50).
        let create = format!(
            "{create_schema}
             CREATE TABLE IF NOT EXISTS {name} (
                 id bigint PRIMARY KEY,
                 seq bigint NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now())
             WITH (fillfactor = 50);"
        );
        const WROTE: &str = "pg_current_xact_id_if_assigned() IS NOT NULL";
        // Both end the same way: a row that says how many rows moved, or a division by
        // zero where a transaction with an id moved none.
        let verdict = format!(
            "SELECT count(*), 1 / (count(*) + CASE WHEN {WROTE} THEN 0 ELSE 1 END) FROM moved"
        );
        // The everyday statement: a plain UPDATE of one column, a HOT update that logs
        // about 80 bytes of WAL. Neither a row lock of its own nor a new timestamp.
        let cas = |condition: &str| {
            format!(
                "WITH moved AS (
                     UPDATE {name} SET seq = $3::int8
                     WHERE id = $1::int8 AND seq = $2::int8{condition}
                     RETURNING 1)
                 {verdict}"
            )
        };
        // An upsert, so that a connection's first commit creates its row and a later one
        // refreshes `updated_at` now and then. It logs a row lock besides the update
        // (about 60 bytes more), which is why it is not the everyday statement. The purge
        // goes by `updated_at`: the CAS's own clock, not its transaction's start, so that
        // a long transaction's row never looks idle.
        let claim = |condition: &str| {
            format!(
                "WITH moved AS (
                     INSERT INTO {name} AS c (id, seq) SELECT $1::int8, $3::int8{condition}
                     ON CONFLICT (id) DO UPDATE SET seq = $3::int8, updated_at = clock_timestamp()
                         WHERE c.seq = $2::int8
                     RETURNING 1)
                 {verdict}"
            )
        };
        CounterTable {
            name: name.to_owned(),
            spec: TableSpec {
                name: name.to_owned(),
                what: "commit counter table",
                consequence: "commit verification by fenced counter is off: an ambiguous \
                              COMMIT of a call without an idempotency key (and not \
                              `idempotent`) fails with CommitUnknown",
                check: check_sql(name, None, &["SELECT", "INSERT", "UPDATE"]),
                create,
                column: None,
            },
            cas: cas(&format!(" AND {WROTE}")),
            cas_always: cas(""),
            claim: claim(&format!(" WHERE {WROTE}")),
            claim_always: claim(""),
        }
    }

    /// The table's qualified name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The probe of commit verification for connection `id`, whose COMMIT of
    /// `expected → expected + 1` went unanswered: one transaction that takes the row's
    /// lock (inserting a fenced row if there is none, so that an original insert still
    /// in flight is waited for too), reads `seq` as the original left it, and fences the
    /// row if the original did not move it. Its lock wait is bounded; the `SELECT` is
    /// the answer.
    pub(crate) fn probe(&self, id: i64, expected: i64, lock_timeout: Duration) -> String {
        let name = &self.name;
        format!(
            "BEGIN; SET LOCAL lock_timeout = {}; \
             INSERT INTO {name} (id, seq) VALUES ({id}, {FENCED}) ON CONFLICT (id) DO NOTHING; \
             SELECT seq FROM {name} WHERE id = {id} FOR UPDATE; \
             UPDATE {name} SET seq = {FENCED}, updated_at = now() WHERE id = {id} AND seq = {expected}; \
             COMMIT",
            lock_timeout.as_millis().max(1),
        )
    }

    /// Deletes the rows not claimed for `older_than`: most belong to connections that
    /// are gone. A live connection claims its row again long before that; one whose row
    /// was deleted anyway finds out at its next compare-and-set, which then aborts.
    pub(crate) fn purge(&self, older_than: Duration) -> String {
        let millis = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        format!(
            "DELETE FROM {} WHERE updated_at < now() - {millis} * interval '1 millisecond'",
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compare_and_set_moves_only_from_the_expected_value() {
        let table = CounterTable::new("resilient_tx.commit_counters");
        assert!(
            table
                .cas
                .contains("UPDATE resilient_tx.commit_counters SET seq = $3::int8\n")
        );
        assert!(table.cas.contains(
            "WHERE id = $1::int8 AND seq = $2::int8 AND pg_current_xact_id_if_assigned() IS NOT NULL\n"
        ));
        assert!(
            table
                .cas_always
                .contains("WHERE id = $1::int8 AND seq = $2::int8\n")
        );
        assert!(
            !table.cas.contains("updated_at"),
            "the everyday CAS keeps its timestamp"
        );
        assert!(table.claim.contains("WHERE c.seq = $2::int8"));
        assert!(table.claim.contains("updated_at = clock_timestamp()"));
        assert!(table.claim.contains(
            "SELECT $1::int8, $3::int8 WHERE pg_current_xact_id_if_assigned() IS NOT NULL\n"
        ));
        assert!(table.claim_always.contains("SELECT $1::int8, $3::int8\n"));
        for sql in [
            &table.cas,
            &table.cas_always,
            &table.claim,
            &table.claim_always,
        ] {
            assert!(sql.contains("1 / (count(*)"), "{sql}");
        }
        assert!(table.spec.create.contains("fillfactor = 50"));
    }

    #[test]
    fn the_probe_waits_for_the_row_reads_it_and_fences_an_unmoved_one() {
        let table = CounterTable::new("c");
        let probe = table.probe(7, 41, Duration::from_millis(1500));
        let steps: Vec<&str> = probe.split("; ").collect();
        assert_eq!(steps[1], "SET LOCAL lock_timeout = 1500");
        assert_eq!(
            steps[2],
            "INSERT INTO c (id, seq) VALUES (7, -1) ON CONFLICT (id) DO NOTHING"
        );
        assert_eq!(steps[3], "SELECT seq FROM c WHERE id = 7 FOR UPDATE");
        assert_eq!(
            steps[4],
            "UPDATE c SET seq = -1, updated_at = now() WHERE id = 7 AND seq = 41"
        );
    }
}

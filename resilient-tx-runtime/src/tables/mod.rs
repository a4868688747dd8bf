//! The runtime's own tables: the idempotency keys ([`KeyTable`]), the commit
//! counters ([`CounterTable`]) and the commit markers ([`MarkerTable`]). This module
//! owns their names and validation, the SQL that reads and writes them, whether each
//! can be used ([`readiness`]: looked up once per `Db`, created only where missing and
//! allowed, [`presence`] for the look-up itself) and their purge.

use std::time::Duration;

use crate::error::TxError;
use crate::pool::Pool;

mod counters;
mod keys;
mod markers;
mod presence;
mod readiness;

pub(crate) use counters::{CounterTable, FENCED};
pub(crate) use keys::KeyTable;
pub(crate) use markers::MarkerTable;
pub(crate) use readiness::Shape;

use readiness::Readiness;

/// Where keys live unless the builder says otherwise.
pub(crate) const DEFAULT_KEY_TABLE: &str = "resilient_tx.idempotency_keys";

/// Where markers live unless the builder says otherwise.
pub(crate) const DEFAULT_MARKER_TABLE: &str = "resilient_tx.commit_markers";

/// Where commit counters live unless the builder says otherwise.
pub(crate) const DEFAULT_COUNTER_TABLE: &str = "resilient_tx.commit_counters";

/// The runtime's tables of one `Db`, and whether each can be used.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) keys: KeyTable,
    pub(crate) markers: MarkerTable,
    pub(crate) counters: CounterTable,
    keys_ready: Readiness,
    markers_ready: Readiness,
    counters_ready: Readiness,
}

impl Tables {
    /// The tables under the configured names; a name that is not a plain identifier
    /// is a `Config` error that says which setting it came from.
    pub(crate) fn new(keys: &str, markers: &str, counters: &str) -> Result<Tables, TxError> {
        validate(keys, "idempotency table")?;
        validate(markers, "commit marker table")?;
        validate(counters, "commit counter table")?;
        Ok(Tables {
            keys: KeyTable::new(keys),
            markers: MarkerTable::new(markers),
            counters: CounterTable::new(counters),
            keys_ready: Readiness::default(),
            markers_ready: Readiness::default(),
            counters_ready: Readiness::default(),
        })
    }

    /// Whether keyed calls can use the idempotency table, and in which shape (an
    /// older one has no fingerprints), within `bound`; creates or upgrades it when
    /// needed and allowed. Looked up once per `Db`; a table that cannot be used is
    /// looked up again after [`readiness::RECHECK`].
    pub(crate) async fn ensure_keys(&self, pool: &Pool, bound: Duration) -> Result<Shape, TxError> {
        self.keys_ready.ensure(&self.keys.spec, pool, bound).await
    }

    /// Whether commit verification can use the marker table, within `bound`; creates
    /// it when missing and allowed. Remembered like [`Tables::ensure_keys`].
    pub(crate) async fn ensure_markers(&self, pool: &Pool, bound: Duration) -> Result<(), TxError> {
        self.markers_ready
            .ensure(&self.markers.spec, pool, bound)
            .await
            .map(|_| ())
    }

    /// Whether commit verification can use the counter table, within `bound`;
    /// creates it when missing and allowed. Remembered like [`Tables::ensure_keys`].
    pub(crate) async fn ensure_counters(
        &self,
        pool: &Pool,
        bound: Duration,
    ) -> Result<(), TxError> {
        self.counters_ready
            .ensure(&self.counters.spec, pool, bound)
            .await
            .map(|_| ())
    }

    /// Creates every table, or brings it to this version's shape, now; fails with a
    /// sentence naming what is missing when the role may not.
    pub(crate) async fn migrate(&self, pool: &Pool, bound: Duration) -> Result<(), TxError> {
        self.keys_ready
            .migrate(&self.keys.spec, pool, bound)
            .await?;
        self.counters_ready
            .migrate(&self.counters.spec, pool, bound)
            .await?;
        self.markers_ready
            .migrate(&self.markers.spec, pool, bound)
            .await
    }
}

/// Runs one purge statement in its own implicit transaction; returns how many rows it
/// deleted. Purges are idempotent, so a lost connection is simply tried again, a few
/// times.
pub(crate) async fn purge(pool: &Pool, sql: &str, bound: Duration) -> Result<u64, TxError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut session = pool.session(bound).await?;
        match session.simple_query(sql, bound).await {
            Ok(messages) => {
                return Ok(messages
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                        _ => None,
                    })
                    .unwrap_or(0));
            }
            Err(error) => {
                if tries >= 3 || !error.is_transient() {
                    return Err(error);
                }
            }
        }
    }
}

/// `DELETE` of the rows of `table` created more than `older_than` ago.
fn purge_sql(table: &str, older_than: Duration) -> String {
    let millis = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    format!("DELETE FROM {table} WHERE created_at < now() - {millis} * interval '1 millisecond'")
}

/// Checks that a configured name is `identifier` or `identifier.identifier`: it is
/// written into SQL as it is.
fn validate(name: &str, what: &str) -> Result<(), TxError> {
    let simple = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !part.starts_with(|c: char| c.is_ascii_digit())
    };
    let valid = match name.split_once('.') {
        Some((schema, table)) => simple(schema) && simple(table),
        None => simple(name),
    };
    if valid {
        Ok(())
    } else {
        Err(TxError::config(format!(
            "invalid {what} name {name:?}: use lowercase identifiers, as schema.table or table"
        )))
    }
}

/// `CREATE SCHEMA IF NOT EXISTS` for a qualified name, nothing for a bare one.
fn create_schema(name: &str) -> String {
    name.split_once('.')
        .map(|(schema, _)| format!("CREATE SCHEMA IF NOT EXISTS {schema};"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(validate("resilient_tx.idempotency_keys", "idempotency table").is_ok());
        assert!(validate("keys", "idempotency table").is_ok());
        for bad in ["", "a.b.c", "Keys", "x; DROP TABLE y", "1abc", "a."] {
            assert!(validate(bad, "idempotency table").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_name_names_the_setting_it_came_from() {
        let error = Tables::new("ok", "Bad-Name", "ok2").expect_err("invalid marker table");
        assert!(
            error.message().contains("invalid commit marker table name"),
            "{}",
            error.message()
        );
    }

    /// The SQL the guide prints for least-privilege deployments is the SQL the
    /// runtime runs, statement by statement (whitespace aside).
    #[test]
    fn the_guide_prints_the_ddl_the_runtime_runs() {
        let guide = include_str!("../../../resilient-tx/docs/guide.md");
        let flat = |sql: &str| sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let guide = flat(guide);
        let tables = Tables::new(
            DEFAULT_KEY_TABLE,
            DEFAULT_MARKER_TABLE,
            DEFAULT_COUNTER_TABLE,
        )
        .expect("default names");
        let mut ddl = vec![
            tables.keys.spec.create.clone(),
            tables.counters.spec.create.clone(),
            tables.markers.spec.create.clone(),
        ];
        ddl.extend(tables.keys.spec.column.iter().map(|c| c.add.clone()));
        for sql in &ddl {
            for statement in sql.split(';').map(flat).filter(|s| !s.is_empty()) {
                assert!(
                    guide.contains(&format!("{statement};")),
                    "the guide lacks: {statement};"
                );
            }
        }
    }

    #[test]
    fn purges_delete_by_age_in_milliseconds() {
        assert_eq!(
            purge_sql("k", Duration::from_secs(2)),
            "DELETE FROM k WHERE created_at < now() - 2000 * interval '1 millisecond'"
        );
    }
}

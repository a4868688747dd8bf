//! The runtime's own tables: the idempotency keys ([`KeyTable`]), the commit
//! counters ([`CounterTable`]) and the commit markers ([`MarkerTable`]). This module owns their names and validation, the SQL that
//! reads and writes them, their creation (once per `Db`, each table on its own) and
//! their purge.

use std::time::Duration;

use tokio::sync::OnceCell;

use crate::error::TxError;
use crate::pool::Pool;

mod counters;
mod keys;
mod markers;

pub(crate) use counters::{CounterTable, FENCED};
pub(crate) use keys::KeyTable;
pub(crate) use markers::MarkerTable;

/// Where keys live unless the builder says otherwise.
pub(crate) const DEFAULT_KEY_TABLE: &str = "resilient_tx.idempotency_keys";

/// Where markers live unless the builder says otherwise.
pub(crate) const DEFAULT_MARKER_TABLE: &str = "resilient_tx.commit_markers";

/// Where commit counters live unless the builder says otherwise.
pub(crate) const DEFAULT_COUNTER_TABLE: &str = "resilient_tx.commit_counters";

/// The runtime's tables of one `Db`, and whether each is known to exist.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) keys: KeyTable,
    pub(crate) markers: MarkerTable,
    pub(crate) counters: CounterTable,
    keys_ready: OnceCell<()>,
    markers_ready: OnceCell<()>,
    counters_ready: OnceCell<()>,
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
            keys_ready: OnceCell::new(),
            markers_ready: OnceCell::new(),
            counters_ready: OnceCell::new(),
        })
    }

    /// Creates the idempotency table if it does not exist, once per `Db`.
    pub(crate) async fn ensure_keys(&self, pool: &Pool, bound: Duration) -> Result<(), TxError> {
        self.keys_ready
            .get_or_try_init(|| create(pool, &self.keys.create, bound))
            .await
            .map(|_| ())
    }

    /// Creates the commit marker table if it does not exist, once per `Db`.
    pub(crate) async fn ensure_markers(&self, pool: &Pool, bound: Duration) -> Result<(), TxError> {
        self.markers_ready
            .get_or_try_init(|| create(pool, &self.markers.create, bound))
            .await
            .map(|_| ())
    }

    /// Creates the commit counter table if it does not exist, once per `Db`.
    pub(crate) async fn ensure_counters(
        &self,
        pool: &Pool,
        bound: Duration,
    ) -> Result<(), TxError> {
        self.counters_ready
            .get_or_try_init(|| create(pool, &self.counters.create, bound))
            .await
            .map(|_| ())
    }
}

/// Runs one table's DDL. Two processes creating the tables at once: one of them sees a
/// unique violation on the catalog, and the next try finds them created.
async fn create(pool: &Pool, sql: &str, bound: Duration) -> Result<(), TxError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut session = pool.session(bound).await?;
        match session.batch_execute(sql, bound).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                let concurrent = error.sqlstate().is_some_and(|s| s.code() == "23505");
                if tries >= 3 || !(concurrent || error.is_transient()) {
                    return Err(error);
                }
            }
        }
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

    #[test]
    fn purges_delete_by_age_in_milliseconds() {
        assert_eq!(
            purge_sql("k", Duration::from_secs(2)),
            "DELETE FROM k WHERE created_at < now() - 2000 * interval '1 millisecond'"
        );
    }
}

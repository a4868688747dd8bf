//! Idempotency keys: a call with a key takes effect once per key. The key is claimed
//! and the body's result stored in the same transaction as the body, so a retry after
//! an ambiguous COMMIT, or a client retrying the whole request, finds the stored result
//! instead of running the body again.

use std::ops::ControlFlow;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::Call;
use crate::classify::{Failure, Phase, to_tx_error};
use crate::db::Db;
use crate::error::{AsTxError, TxError};
use crate::tx::Tx;

/// Where keys live unless the builder says otherwise.
pub(crate) const DEFAULT_TABLE: &str = "resilient_tx.idempotency_keys";

/// How a keyed attempt starts: run the body, or return what a committed call with the
/// same key stored.
#[doc(hidden)]
#[derive(Debug)]
// Built once per attempt and matched at once: boxing the transaction would cost an
// allocation per keyed attempt for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Begin<'db, T> {
    /// The key is claimed by this attempt: run the body.
    Run(Tx<'db>),
    /// A call with this key already committed this result.
    Stored(T),
}

/// The idempotency table's SQL, for one table name.
#[derive(Debug, Clone)]
pub(crate) struct KeyTable {
    create: String,
    claim: String,
    stored: String,
    store: String,
    purge: String,
}

impl KeyTable {
    /// `name` is `schema.table` or `table`; it was validated as identifiers.
    pub(crate) fn new(name: &str) -> KeyTable {
        let schema = name.split_once('.').map(|(schema, _)| schema);
        let create_schema = schema
            .map(|s| format!("CREATE SCHEMA IF NOT EXISTS {s};"))
            .unwrap_or_default();
        let index = name.replace('.', "_");
        KeyTable {
            create: format!(
                "{create_schema}
                 CREATE TABLE IF NOT EXISTS {name} (
                     scope text NOT NULL,
                     key text NOT NULL,
                     result jsonb,
                     created_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (scope, key));
                 CREATE INDEX IF NOT EXISTS {index}_created_at ON {name} (created_at);"
            ),
            claim: format!(
                "INSERT INTO {name} (scope, key) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true"
            ),
            stored: format!("SELECT result::text FROM {name} WHERE scope = $1 AND key = $2"),
            store: format!(
                "UPDATE {name} SET result = ($3::text)::jsonb WHERE scope = $1 AND key = $2"
            ),
            purge: format!(
                "DELETE FROM {name} WHERE created_at < now() - ($1::int8 * interval '1 millisecond')"
            ),
        }
    }

    /// Checks that a configured name is `identifier` or `identifier.identifier`.
    pub(crate) fn validate(name: &str) -> Result<(), TxError> {
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
                "invalid idempotency table name {name:?}: use lowercase identifiers, as schema.table or table"
            )))
        }
    }
}

impl Db {
    /// Creates the idempotency and commit-marker tables if they do not exist. Calls
    /// do this on first use; call it at start-up if you prefer explicit DDL.
    pub async fn migrate(&self) -> Result<(), TxError> {
        self.idempotency_ready()
            .get_or_try_init(|| async {
                let sql = format!(
                    "{}\n{}",
                    self.key_table().create,
                    self.marker_table().create
                );
                let mut tries = 0;
                loop {
                    tries += 1;
                    let mut conn = self.pool().acquire(self.pool_timeout()).await?;
                    match conn.client.batch_execute(&sql).await {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            conn.broken = true;
                            let error = to_tx_error(e, Phase::Statement);
                            // Two processes creating the tables at once: one of them
                            // sees a unique violation on the catalog; the next try
                            // finds them created.
                            let concurrent = error.sqlstate().is_some_and(|s| s.code() == "23505");
                            if tries >= 3 || !(concurrent || error.is_transient()) {
                                return Err(error);
                            }
                        }
                    }
                }
            })
            .await
            .map(|_| ())
    }

    /// Deletes stored idempotency keys older than `older_than`; returns how many.
    pub async fn purge_idempotency_keys(&self, older_than: Duration) -> Result<u64, TxError> {
        self.migrate().await?;
        let sql = self.key_table().purge.clone();
        let millis = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        self.purge(&sql, millis).await
    }
}

impl Db {
    /// Runs one purge statement in its own implicit transaction. Purges are
    /// idempotent, so a lost connection is simply tried again, a few times.
    pub(crate) async fn purge(&self, sql: &str, millis: i64) -> Result<u64, TxError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut conn = self.pool().acquire(self.pool_timeout()).await?;
            match conn.client.execute(sql, &[&millis]).await {
                Ok(n) => return Ok(n),
                Err(e) => {
                    let error = to_tx_error(e, Phase::Statement);
                    if error.failure().discards_connection() {
                        conn.broken = true;
                    }
                    if tries >= 3 || !error.is_transient() {
                        return Err(error);
                    }
                }
            }
        }
    }
}

impl<'db> Call<'db> {
    /// Makes this a keyed call: it takes effect once per `key` within this function.
    pub fn with_idempotency_key(mut self, key: impl std::fmt::Display) -> Self {
        self.set_key(key.to_string());
        self
    }

    /// Starts an attempt of a keyed call: claims the key, or returns the result a
    /// committed call with the same key stored.
    pub async fn begin_keyed<T: DeserializeOwned>(&mut self) -> Result<Begin<'db, T>, TxError> {
        self.db().migrate().await?;
        loop {
            let mut tx = self.begin().await?;
            match self.claim::<T>(&mut tx).await {
                Ok(None) => return Ok(Begin::Run(tx)),
                Ok(Some(stored)) => {
                    tx.rollback();
                    self.returned_stored();
                    return Ok(Begin::Stored(stored));
                }
                Err(error) => {
                    if let ControlFlow::Break(Err(error)) =
                        self.end::<(), TxError>(tx, Err(error)).await
                    {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Ends an attempt of a keyed call: stores the result with the key, then commits.
    pub async fn end_keyed<T, E>(
        &mut self,
        mut tx: Tx<'db>,
        result: Result<T, E>,
    ) -> ControlFlow<Result<T, E>>
    where
        T: Serialize,
        E: From<TxError> + AsTxError,
    {
        let result = match result {
            Ok(value) => match self.store(&mut tx, &value).await {
                Ok(()) => Ok(value),
                Err(error) => Err(E::from(error)),
            },
            Err(error) => Err(error),
        };
        self.end(tx, result).await
    }

    async fn claim<T: DeserializeOwned>(&self, tx: &mut Tx<'db>) -> Result<Option<T>, TxError> {
        let table = self.db().key_table();
        let (scope, key) = (self.name(), self.key().unwrap_or_default());
        // A concurrent call with the same key blocks on this insert until the first
        // one commits (then this sees its row) or rolls back (then this claims it).
        if tx
            .query_opt(table.claim.as_str(), &[&scope, &key])
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let row = tx.query_one(table.stored.as_str(), &[&scope, &key]).await?;
        let json: Option<String> = row.get(0);
        let json = json.unwrap_or_else(|| "null".to_owned());
        serde_json::from_str(&json).map(Some).map_err(|e| {
            TxError::new(
                Failure::Database,
                format!(
                    "the result stored for idempotency key {key:?} of {scope} does not match the \
                     function's result type: {e}"
                ),
            )
        })
    }

    async fn store<T: Serialize>(&self, tx: &mut Tx<'db>, value: &T) -> Result<(), TxError> {
        let json = serde_json::to_string(value).map_err(|e| {
            TxError::new(
                Failure::Database,
                format!("the result could not be stored with its idempotency key: {e}"),
            )
        })?;
        let table = self.db().key_table();
        let (scope, key) = (self.name(), self.key().unwrap_or_default());
        tx.execute(table.store.as_str(), &[&scope, &key, &json])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(KeyTable::validate("resilient_tx.idempotency_keys").is_ok());
        assert!(KeyTable::validate("keys").is_ok());
        for bad in ["", "a.b.c", "Keys", "x; DROP TABLE y", "1abc", "a."] {
            assert!(KeyTable::validate(bad).is_err(), "{bad:?}");
        }
    }
}

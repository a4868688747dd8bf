//! [`KeyTable`]: the SQL of the idempotency key table, for one table name.

use std::time::Duration;

/// The idempotency table's SQL, for one table name.
#[derive(Debug, Clone)]
pub(crate) struct KeyTable {
    name: String,
    pub(crate) create: String,
    /// Claims `($1 scope, $2 key)`; returns a row when this transaction claimed it.
    pub(crate) claim: String,
    /// The result stored for `($1 scope, $2 key)`, as JSON text.
    pub(crate) stored: String,
    /// Stores `$3` (JSON text) as the result of `($1 scope, $2 key)`.
    pub(crate) store: String,
}

impl KeyTable {
    /// `name` is `schema.table` or `table`; it was validated as identifiers.
    pub(crate) fn new(name: &str) -> KeyTable {
        let create_schema = super::create_schema(name);
        let index = name.replace('.', "_");
        KeyTable {
            name: name.to_owned(),
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
        }
    }

    /// Deletes the keys stored more than `older_than` ago.
    pub(crate) fn purge(&self, older_than: Duration) -> String {
        super::purge_sql(&self.name, older_than)
    }
}

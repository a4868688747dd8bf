//! [`KeyTable`]: the SQL of the idempotency key table, for one table name.

use std::time::Duration;

use super::presence::check_sql;
use super::readiness::{AddedColumn, Shape, TableSpec};

/// The idempotency table's SQL, for one table name.
#[derive(Debug, Clone)]
pub(crate) struct KeyTable {
    pub(crate) spec: TableSpec,
    /// Claims `($1 scope, $2 key, $3 fingerprint)`; returns a row when this
    /// transaction claimed it.
    claim: String,
    /// [`KeyTable::claim`] for a table without the fingerprint column.
    claim_older: String,
    /// The result stored for `($1 scope, $2 key)`, as JSON text, and its fingerprint.
    stored: String,
    /// [`KeyTable::stored`] for a table without the fingerprint column.
    stored_older: String,
    /// Stores `$3` (JSON text) as the result of `($1 scope, $2 key)`.
    pub(crate) store: String,
}

impl KeyTable {
    /// `name` is `schema.table` or `table`; it was validated as identifiers.
    pub(crate) fn new(name: &str) -> KeyTable {
        let create_schema = super::create_schema(name);
        let index = name.replace('.', "_");
        KeyTable {
            spec: TableSpec {
                name: name.to_owned(),
                what: "idempotency table",
                consequence: "calls with an idempotency key fail until it exists",
                check: check_sql(name, Some("fingerprint"), &["SELECT", "INSERT", "UPDATE"]),
                create: format!(
                    "{create_schema}
                     CREATE TABLE IF NOT EXISTS {name} (
                         scope text NOT NULL,
                         key text NOT NULL,
                         result jsonb,
                         fingerprint text,
                         created_at timestamptz NOT NULL DEFAULT now(),
                         PRIMARY KEY (scope, key));
                     CREATE INDEX IF NOT EXISTS {index}_created_at ON {name} (created_at);"
                ),
                column: Some(AddedColumn {
                    add: format!("ALTER TABLE {name} ADD COLUMN IF NOT EXISTS fingerprint text;"),
                    without: "keys work, but a key used again with other arguments returns \
                              the first call's result instead of failing with KeyReused",
                }),
            },
            claim: format!(
                "INSERT INTO {name} (scope, key, fingerprint) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING RETURNING true"
            ),
            claim_older: format!(
                "INSERT INTO {name} (scope, key) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true"
            ),
            stored: format!(
                "SELECT result::text, fingerprint FROM {name} WHERE scope = $1 AND key = $2"
            ),
            stored_older: format!(
                "SELECT result::text, NULL::text FROM {name} WHERE scope = $1 AND key = $2"
            ),
            store: format!(
                "UPDATE {name} SET result = ($3::text)::jsonb WHERE scope = $1 AND key = $2"
            ),
        }
    }

    /// The claim for a table of `shape`: with the fingerprint as `$3`, or without it.
    pub(crate) fn claim(&self, shape: Shape) -> &str {
        match shape {
            Shape::Current => &self.claim,
            Shape::Older => &self.claim_older,
        }
    }

    /// The stored result and fingerprint (`NULL` in an older table) of a key.
    pub(crate) fn stored(&self, shape: Shape) -> &str {
        match shape {
            Shape::Current => &self.stored,
            Shape::Older => &self.stored_older,
        }
    }

    /// Deletes the keys stored more than `older_than` ago.
    pub(crate) fn purge(&self, older_than: Duration) -> String {
        super::purge_sql(&self.spec.name, older_than)
    }
}

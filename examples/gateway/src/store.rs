//! The registry's database code. Every transaction is a `#[retriable_tx]` function:
//! the runtime retries conflicts and lost connections, reconnects after restarts and
//! failovers, and never re-runs a body whose COMMIT outcome is unknown unless the
//! function says that is safe (`idempotent`) or carries an idempotency key.
//!
//! Each generated function takes the [`Db`] where the source says `tx: &mut Tx<'_>`:
//! `store::get_server(&db, 7)`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use resilient_tx::tokio_postgres::Row;
use resilient_tx::{AsTxError, Db, Tx, TxError, retriable_tx};

use crate::model::{NewServer, Server, ServerPatch};

/// The schema. The advisory lock serialises gateways that start together, so their
/// `CREATE ... IF NOT EXISTS` cannot race on the catalog (which fails with 23505).
/// `client_min_messages` keeps "already exists, skipping" notices out of the logs.
const SCHEMA: &str = "
    SET LOCAL client_min_messages = warning;
    SELECT pg_advisory_xact_lock(1734439013);
    CREATE TABLE IF NOT EXISTS servers (
        id bigserial PRIMARY KEY,
        name text UNIQUE NOT NULL,
        url text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
";

/// The columns every query returns, in [`server_from_row`]'s order. Timestamps are
/// formatted by the server as RFC 3339 in UTC, which keeps the API's JSON stable
/// without a date-time crate.
macro_rules! server_columns {
    () => {
        "id, name, url, \
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    };
}

/// Why a store call failed: the database (classified by the runtime), or an outcome
/// of the registry's own rules.
#[derive(Debug)]
pub enum StoreError {
    /// The database failed, after the runtime's retries where retrying made sense.
    Db(TxError),
    /// No server has the requested id. The transaction is rolled back and not retried.
    NotFound,
    /// A row did not have the shape the code expects (a schema changed underneath).
    Decode(String),
}

impl From<TxError> for StoreError {
    fn from(error: TxError) -> Self {
        StoreError::Db(error)
    }
}

/// Lets the runtime tell database failures (classified, maybe retried) from the
/// registry's own outcomes (returned at once).
impl AsTxError for StoreError {
    fn as_tx_error(&self) -> Option<&TxError> {
        match self {
            StoreError::Db(error) => Some(error),
            StoreError::NotFound | StoreError::Decode(_) => None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Db(error) => write!(f, "{error}"),
            StoreError::NotFound => f.write_str("no server has this id"),
            StoreError::Decode(message) => write!(f, "unexpected row: {message}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Db(error) => Some(error),
            StoreError::NotFound | StoreError::Decode(_) => None,
        }
    }
}

fn server_from_row(row: &Row) -> Result<Server, StoreError> {
    let decode = |e: resilient_tx::tokio_postgres::Error| StoreError::Decode(e.to_string());
    Ok(Server {
        id: row.try_get(0).map_err(decode)?,
        name: row.try_get(1).map_err(decode)?,
        url: row.try_get(2).map_err(decode)?,
        created_at: row.try_get(3).map_err(decode)?,
        updated_at: row.try_get(4).map_err(decode)?,
    })
}

/// Creates the `servers` table if it does not exist yet.
#[retriable_tx(retries = 3)]
pub async fn migrate(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.batch_execute(SCHEMA).await
}

/// Every server, or only the one named `name`, ordered by id.
#[retriable_tx(read_only)]
pub async fn list_servers(tx: &mut Tx<'_>, name: Option<&str>) -> Result<Vec<Server>, StoreError> {
    let rows = tx
        .query(
            concat!(
                "SELECT ",
                server_columns!(),
                " FROM servers WHERE $1::text IS NULL OR name = $1 ORDER BY id"
            ),
            &[&name],
        )
        .await?;
    rows.iter().map(server_from_row).collect()
}

/// The server with id `id`.
#[retriable_tx(read_only)]
pub async fn get_server(tx: &mut Tx<'_>, id: i64) -> Result<Server, StoreError> {
    let row = tx
        .query_opt(
            concat!("SELECT ", server_columns!(), " FROM servers WHERE id = $1"),
            &[&id],
        )
        .await?;
    server_from_row(&row.ok_or(StoreError::NotFound)?)
}

async fn insert(tx: &mut Tx<'_>, new: &NewServer) -> Result<Server, StoreError> {
    let row = tx
        .query_one(
            concat!(
                "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING ",
                server_columns!()
            ),
            &[&new.name, &new.url],
        )
        .await?;
    server_from_row(&row)
}

/// Registers a server. A lost connection while COMMIT was in flight surfaces as
/// `CommitUnknown`: without a key the runtime cannot tell whether the row landed, and
/// re-running could register it twice. Clients that need certainty use
/// [`create_server_once`].
#[retriable_tx]
pub async fn create_server(tx: &mut Tx<'_>, new: &NewServer) -> Result<Server, StoreError> {
    insert(tx, new).await
}

/// Registers a server at most once per `key`: the result is stored with the key in the
/// same transaction, so a retry (by the runtime after an unknown COMMIT outcome, or by
/// the client repeating the request) returns the first result instead of inserting
/// again. Keys are shared by all clients of this gateway (it has one token).
#[retriable_tx(idempotency_key = key)]
pub async fn create_server_once(
    tx: &mut Tx<'_>,
    key: &str,
    new: &NewServer,
) -> Result<Server, StoreError> {
    // The attribute consumes `key` before the body runs; the body itself has no use
    // for it, which the compiler would otherwise flag.
    let _ = key;
    insert(tx, new).await
}

/// Changes the fields `patch` carries. Marked `idempotent`: setting the same values
/// twice changes nothing but `updated_at`, so an unknown COMMIT outcome is resolved by
/// running it again.
#[retriable_tx(idempotent)]
pub async fn update_server(
    tx: &mut Tx<'_>,
    id: i64,
    patch: &ServerPatch,
) -> Result<Server, StoreError> {
    let row = tx
        .query_opt(
            concat!(
                "UPDATE servers SET name = COALESCE($2, name), url = COALESCE($3, url), \
                 updated_at = now() WHERE id = $1 RETURNING ",
                server_columns!()
            ),
            &[&id, &patch.name, &patch.url],
        )
        .await?;
    server_from_row(&row.ok_or(StoreError::NotFound)?)
}

/// Removes the server with id `id`. Not `idempotent`: a re-run after a COMMIT that did
/// land would answer "not found" for a delete that succeeded.
#[retriable_tx]
pub async fn delete_server(tx: &mut Tx<'_>, id: i64) -> Result<(), StoreError> {
    match tx
        .execute("DELETE FROM servers WHERE id = $1", &[&id])
        .await?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// Whether the schema is known to exist. The gateway starts while its database is
/// down, so the migration cannot be a start-up step that must succeed; instead every
/// request makes sure of it until one migration has succeeded, after which this is a
/// single atomic load.
#[derive(Debug, Default)]
pub struct Schema {
    ready: AtomicBool,
}

impl Schema {
    /// Whether a migration has succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Runs the migrations unless one has already succeeded. Concurrent callers each
    /// run their own (the advisory lock makes that safe) instead of queueing behind
    /// one another, so during an outage every request fails within its own deadline.
    pub async fn ensure(&self, db: &Db) -> Result<(), TxError> {
        if self.is_ready() {
            return Ok(());
        }
        migrate(db).await?;
        // The idempotency table would otherwise be created by the first keyed call.
        db.migrate().await?;
        if self.mark_ready() {
            tracing::info!("database schema is ready");
        }
        Ok(())
    }

    /// Records that a migration succeeded; `true` the first time.
    pub(crate) fn mark_ready(&self) -> bool {
        !self.ready.swap(true, Ordering::AcqRel)
    }
}

//! Routes that exist only for the resilience suite, under `/api/test/`: the suite adds
//! them to every gateway it starts with [`gateway::serve_with`], so they sit behind the
//! same bearer token as the rest of `/api` and share its `Db`, error answers and
//! `Consistency` handling. They work on a table of their own, `gateway_test_accounts`,
//! never on the registry's data.
//!
//! | method | path | what it does |
//! |---|---|---|
//! | PUT | `/api/test/accounts` `[{"id","balance"}]` | replaces every test account (200, the accounts) |
//! | GET | `/api/test/accounts` | every account, in one read-only transaction (replica unless `Consistency: strong`) |
//! | POST | `/api/test/transfer` `{"from","to","amount","pause_ms"?,"label"?}` | debits `from`, pauses, credits `to`, in one transaction: two requests in opposite directions deadlock (TX-01); a cut between the two updates must leave nothing partial (TX-03); a reader must never see the sum change (FO-02) |
//! | POST | `/api/test/sleep` `{"seconds","steps"?,"lock_account"?}` | a long transaction: adds 1 to `lock_account` (holding its row lock), then `steps` times `pg_sleep(seconds)` (CP-01, CP-02, TX-02) |
//! | POST | `/api/test/servers` `{"name","url"}`, `Idempotency-Key` required | creates a server in the registry like a keyed `POST /api/servers`, made with `replicated = "2s"`: 201 once a standby has the commit, 503 `not_replicated` (with `Retry-After`) when none confirmed it in time, whose repetition with the same key returns the stored server once one does (FO-01 and FO-03 under asynchronous replication) |
//!
//! The database code is `#[retriable_tx]` like the rest of the gateway's, so the
//! routes show what the runtime does with deadlocks, timeouts and cut connections.
//! `label` is stored by each update (`"<label>:debit"`, `"<label>:credit"`), which lets a
//! fault proxy recognise one statement by its parameters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use gateway::AppState;
use gateway::errors::{ApiError, ErrorBody, ErrorDetail};
use gateway::model::{NewServer, Server};
use gateway::store::StoreError;
use resilient_tx::tokio_postgres::Row;
use resilient_tx::{AsTxError, Db, ErrorKind, Tx, TxError, retriable_tx};
use serde::{Deserialize, Serialize};

/// `POST` here creates a server like `POST /api/servers` with an `Idempotency-Key`,
/// but returns only once a standby has the commit (`replicated`).
pub const REPLICATED_SERVERS: &str = "/api/test/servers";

/// The test routes, relative to `/api`, for [`gateway::serve_with`]. Each call makes a
/// router of its own, for one gateway (one database).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/test/accounts", get(list_accounts).put(replace_accounts))
        .route("/test/transfer", post(transfer))
        .route("/test/sleep", post(sleep))
        .route("/test/servers", post(create_replicated))
        .layer(Extension(Arc::new(TestTable::default())))
}

/// Whether the test table has been created on this gateway's database.
#[derive(Debug, Default)]
struct TestTable {
    ready: AtomicBool,
}

/// Query of the accounts read.
#[derive(Debug, Deserialize)]
struct ReadQuery {
    /// `strong` reads from the primary.
    consistency: Option<String>,
}

/// The test table.
const SCHEMA: &str = "
    SET LOCAL client_min_messages = warning;
    SELECT pg_advisory_xact_lock(1734439014);
    CREATE TABLE IF NOT EXISTS gateway_test_accounts (
        id bigint PRIMARY KEY,
        balance bigint NOT NULL,
        last_transfer text
    );
";

/// Longest a transfer may pause between its two updates, and a sleep may last.
const MAX_PAUSE_SECONDS: f64 = 60.0;

/// One test account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Chosen by the caller.
    pub id: i64,
    /// Any amount, negative included.
    pub balance: i64,
}

/// Body of `POST /api/test/transfer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Account debited first.
    pub from: i64,
    /// Account credited second.
    pub to: i64,
    /// Amount moved.
    pub amount: i64,
    /// Pause between the two updates, holding the first row's lock.
    #[serde(default)]
    pub pause_ms: u64,
    /// Stored by both updates (`<label>:debit`, `<label>:credit`).
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_label() -> String {
    "transfer".to_owned()
}

/// Answer of a transfer: both accounts after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transferred {
    /// The debited account.
    pub from: Account,
    /// The credited account.
    pub to: Account,
}

/// Body of `POST /api/test/sleep`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// Length of each `pg_sleep`.
    pub seconds: f64,
    /// How many `pg_sleep` statements, one after the other (default 1).
    #[serde(default = "one")]
    pub steps: u32,
    /// Account whose row is updated (and locked) first.
    #[serde(default)]
    pub lock_account: Option<i64>,
}

fn one() -> u32 {
    1
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// Creates the test table once per gateway (per database, as a gateway has one).
async fn ensure(state: &AppState, table: &TestTable) -> Result<(), ApiError> {
    state.ensure_schema().await?;
    if table.ready.load(Ordering::Acquire) {
        return Ok(());
    }
    migrate(state.db()).await.map_err(ApiError::from)?;
    table.ready.store(true, Ordering::Release);
    Ok(())
}

#[retriable_tx(retries = 3)]
async fn migrate(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.batch_execute(SCHEMA).await
}

fn account_from_row(row: &Row) -> Result<Account, StoreError> {
    let decode = |e: resilient_tx::tokio_postgres::Error| StoreError::Decode(e.to_string());
    Ok(Account {
        id: row.try_get(0).map_err(decode)?,
        balance: row.try_get(1).map_err(decode)?,
    })
}

/// Every account, ordered by id, in one snapshot.
#[retriable_tx(read_only)]
pub async fn accounts(tx: &mut Tx<'_>) -> Result<Vec<Account>, StoreError> {
    let rows = tx
        .query(
            "SELECT id, balance FROM gateway_test_accounts ORDER BY id",
            &[],
        )
        .await?;
    rows.iter().map(account_from_row).collect()
}

/// Replaces every account; running it twice gives the same table.
#[retriable_tx(idempotent)]
pub async fn set_accounts(tx: &mut Tx<'_>, accounts: &[Account]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM gateway_test_accounts", &[]).await?;
    for account in accounts {
        tx.execute(
            "INSERT INTO gateway_test_accounts (id, balance) VALUES ($1, $2)",
            &[&account.id, &account.balance],
        )
        .await?;
    }
    Ok(())
}

/// Debits, pauses, credits: two updates in one transaction, in the caller's order.
#[retriable_tx]
pub async fn move_amount(tx: &mut Tx<'_>, t: &Transfer) -> Result<Transferred, StoreError> {
    let debit_label = format!("{}:debit", t.label);
    let credit_label = format!("{}:credit", t.label);
    let from = tx
        .query_opt(
            "UPDATE gateway_test_accounts SET balance = balance - $2, last_transfer = $3 \
             WHERE id = $1 RETURNING id, balance",
            &[&t.from, &t.amount, &debit_label],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    if t.pause_ms > 0 {
        let seconds = t.pause_ms as f64 / 1000.0;
        tx.execute("SELECT pg_sleep($1::float8)", &[&seconds])
            .await?;
    }
    let to = tx
        .query_opt(
            "UPDATE gateway_test_accounts SET balance = balance + $2, last_transfer = $3 \
             WHERE id = $1 RETURNING id, balance",
            &[&t.to, &t.amount, &credit_label],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(Transferred {
        from: account_from_row(&from)?,
        to: account_from_row(&to)?,
    })
}

/// A long transaction: locks `lock_account` (adding 1 to it), then sleeps.
#[retriable_tx]
pub async fn hold(
    tx: &mut Tx<'_>,
    seconds: f64,
    steps: u32,
    lock_account: Option<i64>,
) -> Result<(), StoreError> {
    if let Some(id) = lock_account {
        let updated = tx
            .execute(
                "UPDATE gateway_test_accounts SET balance = balance + 1 WHERE id = $1",
                &[&id],
            )
            .await?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
    }
    for _ in 0..steps {
        tx.execute("SELECT pg_sleep($1::float8)", &[&seconds])
            .await?;
    }
    Ok(())
}

async fn list_accounts(
    State(state): State<AppState>,
    Extension(table): Extension<Arc<TestTable>>,
    headers: HeaderMap,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<Vec<Account>>, ApiError> {
    let Query(query) = query?;
    let db: Db = state.reader(&headers, query.consistency.as_deref())?;
    ensure(&state, &table).await?;
    Ok(Json(accounts(&db).await?))
}

async fn replace_accounts(
    State(state): State<AppState>,
    Extension(table): Extension<Arc<TestTable>>,
    body: Result<Json<Vec<Account>>, JsonRejection>,
) -> Result<Json<Vec<Account>>, ApiError> {
    let Json(mut new) = body?;
    new.sort_by_key(|a| a.id);
    if new.windows(2).any(|w| w[0].id == w[1].id) {
        return Err(invalid("account ids must be unique"));
    }
    ensure(&state, &table).await?;
    set_accounts(state.db(), &new).await?;
    Ok(Json(new))
}

async fn transfer(
    State(state): State<AppState>,
    Extension(table): Extension<Arc<TestTable>>,
    body: Result<Json<Transfer>, JsonRejection>,
) -> Result<Json<Transferred>, ApiError> {
    let Json(t) = body?;
    if t.from == t.to {
        return Err(invalid("from and to must differ"));
    }
    if t.pause_ms as f64 / 1000.0 > MAX_PAUSE_SECONDS {
        return Err(invalid("pause_ms is at most 60000"));
    }
    if t.label.is_empty() || t.label.len() > 100 {
        return Err(invalid("label must be 1 to 100 bytes"));
    }
    ensure(&state, &table).await?;
    Ok(Json(move_amount(state.db(), &t).await?))
}

async fn sleep(
    State(state): State<AppState>,
    Extension(table): Extension<Arc<TestTable>>,
    body: Result<Json<Sleep>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(s) = body?;
    if !(0.0..=MAX_PAUSE_SECONDS).contains(&s.seconds) || s.steps == 0 || s.steps > 100 {
        return Err(invalid(
            "seconds must be within 0..=60 and steps within 1..=100",
        ));
    }
    ensure(&state, &table).await?;
    hold(state.db(), s.seconds, s.steps, s.lock_account).await?;
    Ok(Json(
        serde_json::json!({ "slept_seconds": s.seconds * f64::from(s.steps) }),
    ))
}

/// Registers a server once per `key`, like the gateway's keyed create, and returns
/// once a standby has flushed the commit (or `NotReplicated` after 2 s).
#[retriable_tx(idempotency_key = key, replicated = "2s")]
pub async fn create_server_replicated(
    tx: &mut Tx<'_>,
    key: &str,
    new: &NewServer,
) -> Result<Server, StoreError> {
    let _ = key;
    let row = tx
        .query_one(
            "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id, name, url, \
             created_at::text, updated_at::text",
            &[&new.name, &new.url],
        )
        .await?;
    let decode = |e: resilient_tx::tokio_postgres::Error| StoreError::Decode(e.to_string());
    Ok(Server {
        id: row.try_get(0).map_err(decode)?,
        name: row.try_get(1).map_err(decode)?,
        url: row.try_get(2).map_err(decode)?,
        created_at: row.try_get(3).map_err(decode)?,
        updated_at: row.try_get(4).map_err(decode)?,
    })
}

/// The answer to a create no standby confirmed in time: 503 `not_replicated`, to be
/// repeated with the same key.
fn not_replicated(error: &TxError) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "not_replicated",
            message: &format!(
                "the server was created, but no standby confirmed it in time; repeat the \
                 request with the same Idempotency-Key to learn when one has ({error})"
            ),
            retryable: true,
        },
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

async fn create_replicated(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewServer>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    new.validate()?;
    let key = headers
        .get(gateway::IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("this route needs an Idempotency-Key header"))?
        .to_owned();
    state.ensure_schema().await?;
    match create_server_replicated(state.db(), &key, &new).await {
        Ok(server) => Ok((StatusCode::CREATED, Json(server)).into_response()),
        Err(error) => match error.as_tx_error() {
            Some(e) if e.kind() == ErrorKind::NotReplicated => Ok(not_replicated(e)),
            _ => Err(ApiError::from(error)),
        },
    }
}

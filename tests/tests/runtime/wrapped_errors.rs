//! Error types that wrap a `TxError` (`Box<dyn Error + Send + Sync>`, `anyhow::Error`
//! with the `anyhow` feature): the runtime still finds the database error inside, so
//! a serialization failure is retried and a unique violation returns at once.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use resilient_tx::tokio_postgres::error::SqlState;
use resilient_tx::{AsTxError, Db, ErrorKind, Tx, TxError, retriable_tx};
use tokio::sync::Barrier;

use crate::common::{cluster, db, exec, scalar};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An application error whose source is the database error, as a boxed body may
/// return it.
#[derive(Debug)]
struct Saving(TxError);

impl std::fmt::Display for Saving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("saving the counter failed")
    }
}

impl std::error::Error for Saving {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The lost-update race of `conflicts.rs` (read, wait for the other call on the first
/// run, write), with a boxed error; the write's error is wrapped in `Saving` first.
#[retriable_tx(retries = 10, isolation = serializable)]
async fn increment_boxed(
    tx: &mut Tx<'_>,
    barrier: &Barrier,
    first_run: &AtomicBool,
) -> Result<i32, BoxError> {
    let row = tx
        .query_one("SELECT n FROM counter WHERE id = 1", &[])
        .await?;
    let n: i32 = row.get(0);
    if first_run.swap(false, Ordering::SeqCst) {
        barrier.wait().await;
    }
    tx.execute("UPDATE counter SET n = $1 WHERE id = 1", &[&(n + 1)])
        .await
        .map_err(Saving)?;
    Ok(n + 1)
}

/// The same race with `anyhow::Result`, the errors under a context.
#[retriable_tx(retries = 10, isolation = serializable)]
async fn increment_anyhow(
    tx: &mut Tx<'_>,
    barrier: &Barrier,
    first_run: &AtomicBool,
) -> anyhow::Result<i32> {
    let row = tx
        .query_one("SELECT n FROM counter WHERE id = 1", &[])
        .await
        .context("reading the counter")?;
    let n: i32 = row.get(0);
    if first_run.swap(false, Ordering::SeqCst) {
        barrier.wait().await;
    }
    tx.execute("UPDATE counter SET n = $1 WHERE id = 1", &[&(n + 1)])
        .await
        .context("saving the counter")?;
    Ok(n + 1)
}

#[retriable_tx(retries = 5)]
async fn insert_boxed(tx: &mut Tx<'_>, id: i32) -> Result<u64, BoxError> {
    Ok(tx
        .execute("INSERT INTO items(id) VALUES ($1)", &[&id])
        .await?)
}

#[retriable_tx(retries = 5)]
async fn insert_anyhow(tx: &mut Tx<'_>, id: i32) -> anyhow::Result<u64> {
    tx.execute("INSERT INTO items(id) VALUES ($1)", &[&id])
        .await
        .with_context(|| format!("inserting item {id}"))
}

/// A server with the counter both races update, and a `Db` on it.
async fn counter() -> (resilient_tx_testkit::PgCluster, Db) {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE counter(id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0)",
    )
    .await;
    let db = db(&cluster.url()).await;
    (cluster, db)
}

/// A server with item 1 already stored, and a `Db` on it.
async fn items() -> (resilient_tx_testkit::PgCluster, Db) {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE items(id int PRIMARY KEY); INSERT INTO items VALUES (1)",
    )
    .await;
    let db = db(&cluster.url()).await;
    (cluster, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxed_serialization_failure_is_retried_and_both_calls_succeed() {
    let (cluster, db) = counter().await;
    let barrier = Barrier::new(2);
    let (first_a, first_b) = (AtomicBool::new(true), AtomicBool::new(true));

    let (a, b) = tokio::join!(
        increment_boxed(&db, &barrier, &first_a),
        increment_boxed(&db, &barrier, &first_b)
    );

    let mut results = [a.expect("call a"), b.expect("call b")];
    results.sort();
    assert_eq!(results, [1, 2], "each call saw the other's committed write");
    assert_eq!(scalar(&cluster, "SELECT n::int8 FROM counter").await, 2);
    let metrics = db.metrics();
    assert!(
        metrics.retries_conflict >= 1,
        "the 40001 inside the box was retried: {metrics:?}"
    );
    assert_eq!(metrics.commits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyhow_serialization_failure_is_retried_and_both_calls_succeed() {
    let (cluster, db) = counter().await;
    let barrier = Barrier::new(2);
    let (first_a, first_b) = (AtomicBool::new(true), AtomicBool::new(true));

    let (a, b) = tokio::join!(
        increment_anyhow(&db, &barrier, &first_a),
        increment_anyhow(&db, &barrier, &first_b)
    );

    let mut results = [a.expect("call a"), b.expect("call b")];
    results.sort();
    assert_eq!(results, [1, 2], "each call saw the other's committed write");
    assert_eq!(scalar(&cluster, "SELECT n::int8 FROM counter").await, 2);
    let metrics = db.metrics();
    assert!(
        metrics.retries_conflict >= 1,
        "the 40001 under the context was retried: {metrics:?}"
    );
    assert_eq!(metrics.commits, 2);
}

#[tokio::test]
async fn boxed_unique_violation_returns_at_once_as_database() {
    let (_cluster, db) = items().await;

    let error = insert_boxed(&db, 1).await.expect_err("item 1 exists");

    // What the runtime classifies by.
    let tx_error = error.as_tx_error().expect("the box holds the TxError");
    assert_eq!(tx_error.kind(), ErrorKind::Database, "{tx_error}");
    assert_eq!(tx_error.sqlstate(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(tx_error.attempts(), 1, "{tx_error}");
    let metrics = db.metrics();
    assert_eq!((metrics.calls, metrics.attempts), (1, 1), "{metrics:?}");
    assert_eq!(metrics.retries(), 0, "{metrics:?}");
}

#[tokio::test]
async fn anyhow_unique_violation_returns_at_once_as_database() {
    let (_cluster, db) = items().await;

    let error = insert_anyhow(&db, 1).await.expect_err("item 1 exists");

    assert!(
        error.to_string().contains("inserting item 1"),
        "the caller gets its own error back, context and all: {error:#}"
    );
    let tx_error = error.as_tx_error().expect("the TxError under the context");
    assert_eq!(tx_error.kind(), ErrorKind::Database, "{tx_error}");
    assert_eq!(tx_error.sqlstate(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(tx_error.attempts(), 1, "{tx_error}");
    let metrics = db.metrics();
    assert_eq!((metrics.calls, metrics.attempts), (1, 1), "{metrics:?}");
    assert_eq!(metrics.retries(), 0, "{metrics:?}");
}

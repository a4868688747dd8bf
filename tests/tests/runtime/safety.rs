//! What must not be retried, and what must never be committed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{AsTxError, Db, ErrorKind, Tx, TxError, retriable_tx};

use crate::common::{cluster, db, exec, scalar, with_app_name};

#[retriable_tx]
async fn insert_item(tx: &mut Tx<'_>, id: i32) -> Result<(), TxError> {
    tx.execute("INSERT INTO items(id) VALUES ($1)", &[&id])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_violation_returns_database_error_after_one_attempt() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE items(id int PRIMARY KEY); INSERT INTO items VALUES (1)",
    )
    .await;
    let db = db(&cluster.url()).await;

    let error = insert_item(&db, 1).await.expect_err("duplicate key");

    assert_eq!(error.kind(), ErrorKind::Database);
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.sqlstate().map(|s| s.code()), Some("23505"));
    assert!(!error.is_transient());
    assert!(error.to_string().contains("duplicate key"), "{error}");
}

#[derive(Debug)]
enum AppError {
    Db(TxError),
    Rejected,
}

impl From<TxError> for AppError {
    fn from(e: TxError) -> Self {
        AppError::Db(e)
    }
}

impl AsTxError for AppError {
    fn as_tx_error(&self) -> Option<&TxError> {
        match self {
            AppError::Db(e) => Some(e),
            AppError::Rejected => None,
        }
    }
}

#[retriable_tx]
async fn insert_then_reject(tx: &mut Tx<'_>, runs: &AtomicU32) -> Result<(), AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO items(id) VALUES (7)", &[]).await?;
    Err(AppError::Rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_error_is_returned_unretried_and_rolled_back() {
    let cluster = cluster().await;
    exec(&cluster, "CREATE TABLE items(id int PRIMARY KEY)").await;
    let db = db(&cluster.url()).await;
    let runs = AtomicU32::new(0);

    let error = insert_then_reject(&db, &runs)
        .await
        .expect_err("the body rejects");

    assert!(matches!(error, AppError::Rejected), "{error:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM items").await,
        0,
        "rolled back"
    );
}

#[retriable_tx]
async fn swallow_an_error(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("INSERT INTO items(id) VALUES (1)", &[]).await?;
    let swallowed = tx.execute("SELECT 1 / 0", &[]).await;
    assert!(swallowed.is_err());
    tx.execute("INSERT INTO items(id) VALUES (2)", &[])
        .await
        .ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swallowed_statement_error_fails_the_call_and_commits_nothing() {
    let cluster = cluster().await;
    exec(&cluster, "CREATE TABLE items(id int PRIMARY KEY)").await;
    let db = db(&cluster.url()).await;

    let error = swallow_an_error(&db)
        .await
        .expect_err("COMMIT must not report success");

    assert_eq!(error.kind(), ErrorKind::Database);
    assert_eq!(
        error.sqlstate().map(|s| s.code()),
        Some("22012"),
        "the swallowed error: {error}"
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM items").await,
        0,
        "nothing committed"
    );
}

#[retriable_tx(timeout = "300ms")]
async fn sleep_in_the_database(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("INSERT INTO items(id) VALUES (1)", &[]).await?;
    tx.execute("SELECT pg_sleep(5)", &[]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_returns_timeout_and_leaves_the_connection_clean() {
    let cluster = cluster().await;
    exec(&cluster, "CREATE TABLE items(id int PRIMARY KEY)").await;
    let db = Db::builder(&with_app_name(&cluster.url(), "sleeper"))
        .max_size(1)
        .build()
        .await
        .expect("config");

    let started = Instant::now();
    let error = sleep_in_the_database(&db).await.expect_err("timeout");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert_eq!(error.sqlstate().map(|s| s.code()), Some("57014"));
    assert_eq!(error.attempts(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The one pooled connection is reused, outside any transaction, holding no locks.
    insert_item(&db, 2).await.expect("the connection is clean");
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM items").await,
        1,
        "only the later insert"
    );
    assert_eq!(
        scalar(
            &cluster,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sleeper' \
             AND state <> 'idle'"
        )
        .await,
        0,
        "no transaction left open"
    );
    assert_eq!(
        scalar(
            &cluster,
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE a.application_name = 'sleeper' AND l.locktype = 'relation'"
        )
        .await,
        0,
        "no locks left"
    );
}

#[retriable_tx(timeout = "10s")]
async fn hold_a_connection(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("SELECT pg_sleep(3)", &[]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_gives_pool_exhausted_near_the_pool_timeout() {
    let cluster = cluster().await;
    let db = Db::builder(&cluster.url())
        .max_size(2)
        .pool_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("config");
    let holders = tokio::spawn({
        let db = db.clone();
        async move { tokio::join!(hold_a_connection(&db), hold_a_connection(&db)) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let error = hold_a_connection(&db)
        .await
        .expect_err("no connection free");
    let elapsed = started.elapsed();

    assert_eq!(error.kind(), ErrorKind::PoolExhausted, "{error}");
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_millis(2500),
        "near the 1s pool timeout: {elapsed:?}"
    );
    assert!(error.to_string().contains("in use"), "{error}");
    let (a, b) = holders.await.expect("holders");
    a.expect("holder a");
    b.expect("holder b");
    assert_eq!(db.pool_status().in_use, 0, "no connection leaked");
}

#[retriable_tx(read_only)]
async fn write_in_a_read_only_call(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("INSERT INTO items(id) VALUES (1)", &[]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_read_only_call_is_a_database_error_not_an_outage() {
    let cluster = cluster().await;
    exec(&cluster, "CREATE TABLE items(id int PRIMARY KEY)").await;
    let db = db(&cluster.url()).await;

    let error = write_in_a_read_only_call(&db).await.expect_err("READ ONLY");

    assert_eq!(error.kind(), ErrorKind::Database, "{error}");
    assert_eq!(error.sqlstate().map(|s| s.code()), Some("25006"));
    assert_eq!(
        error.attempts(),
        1,
        "not retried as if the server were demoted"
    );
    assert_eq!(
        db.metrics().connections_discarded,
        0,
        "the connection is fine"
    );
}

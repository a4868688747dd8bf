//! Serialization failures and deadlocks are retried until both calls succeed.

use std::sync::atomic::{AtomicBool, Ordering};

use resilient_tx::{Tx, TxError, retriable_tx};
use tokio::sync::Barrier;

use crate::common::{cluster, db, exec, scalar};

/// Reads the counter, waits (on its first run only) until the other call has read it
/// too, then writes it back incremented: a textbook lost-update race.
#[retriable_tx(retries = 10, isolation = serializable)]
async fn increment(
    tx: &mut Tx<'_>,
    barrier: &Barrier,
    first_run: &AtomicBool,
) -> Result<i32, TxError> {
    let row = tx
        .query_one("SELECT n FROM counter WHERE id = 1", &[])
        .await?;
    let n: i32 = row.get(0);
    if first_run.swap(false, Ordering::SeqCst) {
        barrier.wait().await;
    }
    tx.execute("UPDATE counter SET n = $1 WHERE id = 1", &[&(n + 1)])
        .await?;
    Ok(n + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failure_is_retried_and_both_calls_succeed() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE counter(id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0)",
    )
    .await;
    let db = db(&cluster.url()).await;
    let barrier = Barrier::new(2);
    let (first_a, first_b) = (AtomicBool::new(true), AtomicBool::new(true));

    let (a, b) = tokio::join!(
        increment(&db, &barrier, &first_a),
        increment(&db, &barrier, &first_b)
    );

    let mut results = [a.expect("call a"), b.expect("call b")];
    results.sort();
    assert_eq!(results, [1, 2], "each call saw the other's committed write");
    assert_eq!(scalar(&cluster, "SELECT n::int8 FROM counter").await, 2);
    let metrics = db.metrics();
    assert!(
        metrics.retries_conflict >= 1,
        "a 40001 was retried: {metrics:?}"
    );
    assert_eq!(metrics.commits, 2);
}

/// Updates two rows in the given order, pausing (first run only) between them.
#[retriable_tx(retries = 10)]
async fn update_in_order(
    tx: &mut Tx<'_>,
    first: i32,
    second: i32,
    barrier: &Barrier,
    first_run: &AtomicBool,
) -> Result<(), TxError> {
    tx.execute(
        "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
        &[&first],
    )
    .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        barrier.wait().await;
    }
    tx.execute(
        "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
        &[&second],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_is_retried_and_both_calls_succeed() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE accounts(id int PRIMARY KEY, balance int); \
         INSERT INTO accounts VALUES (1, 0), (2, 0);",
    )
    .await;
    exec(&cluster, "ALTER SYSTEM SET deadlock_timeout = '200ms'").await;
    exec(&cluster, "SELECT pg_reload_conf()").await;
    let db = db(&cluster.url()).await;
    let barrier = Barrier::new(2);
    let (first_a, first_b) = (AtomicBool::new(true), AtomicBool::new(true));

    let (a, b) = tokio::join!(
        update_in_order(&db, 1, 2, &barrier, &first_a),
        update_in_order(&db, 2, 1, &barrier, &first_b)
    );

    a.expect("call a");
    b.expect("call b");
    assert_eq!(
        scalar(&cluster, "SELECT sum(balance)::int8 FROM accounts").await,
        4
    );
    assert_eq!(
        scalar(&cluster, "SELECT min(balance)::int8 FROM accounts").await,
        2
    );
    let metrics = db.metrics();
    assert!(
        metrics.retries_conflict >= 1,
        "a 40P01 was retried: {metrics:?}"
    );
    assert!(
        cluster.log_contents().contains("deadlock detected"),
        "the server saw a real deadlock"
    );
}

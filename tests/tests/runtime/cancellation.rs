//! A caller that stops waiting (a dropped future: axum drops a handler whose client
//! went away) at each point of a call: mid-statement, while COMMIT is in flight, while
//! verification probes, while waiting for a connection. The next caller on the same
//! pool must get a clean connection every time.

use std::time::{Duration, Instant};

use resilient_tx::{Db, Tx, TxError, retriable_tx};
use resilient_tx_testkit::PgCluster;

use crate::common::{cluster, exec, scalar, slow_commit_on, until_committing, with_app_name};

const SCHEMA: &str = "CREATE TABLE events(id serial PRIMARY KEY, note text)";

/// The backend the call ran on.
#[retriable_tx]
async fn backend_pid(tx: &mut Tx<'_>) -> Result<i32, TxError> {
    Ok(tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
}

/// Inserts an event whose COMMIT the `slow_commit` trigger makes slow.
#[retriable_tx(timeout = "1s", deadline = "20s")]
async fn add_event_slowly(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.batch_execute("SET LOCAL app.slow_commit = 'on'").await?;
    tx.execute("INSERT INTO events(note) VALUES ('slow')", &[])
        .await?;
    Ok(())
}

#[retriable_tx]
async fn add_slow_event_without_timeout(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.batch_execute("SET LOCAL app.slow_commit = 'on'").await?;
    tx.execute("INSERT INTO events(note) VALUES ('slow')", &[])
        .await?;
    Ok(())
}

#[retriable_tx]
async fn sleep_in_body(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("SELECT pg_sleep(5)", &[]).await?;
    Ok(())
}

async fn one_connection_db(url: &str) -> Db {
    Db::builder(url)
        .max_size(1)
        .pool_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("a valid configuration")
}

/// Sessions on the server sitting in an open transaction.
async fn open_transactions(cluster: &PgCluster, app: &str) -> i64 {
    scalar(
        cluster,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
             AND state LIKE 'idle in transaction%'"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_while_commit_is_in_flight_leaves_no_connection_behind() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    slow_commit_on(&cluster, "events", 2).await;
    let url = with_app_name(&cluster.url(), "dropped-commit");
    let db = one_connection_db(&url).await;
    let before = backend_pid(&db).await.expect("warm-up");

    tokio::select! {
        _ = add_slow_event_without_timeout(&db) => panic!("the COMMIT takes 2 s"),
        () = until_committing(&cluster, "dropped-commit") => {}
    }
    // The caller is gone while COMMIT runs: whatever its outcome, nobody learns it on
    // that connection, and the next caller must not queue behind it.
    let started = Instant::now();
    let after = backend_pid(&db).await.expect("the next call");
    assert_ne!(
        before, after,
        "the connection with COMMIT in flight was discarded"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the next call did not wait for the abandoned COMMIT: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_statement_leaves_no_open_transaction() {
    let cluster = cluster().await;
    let url = with_app_name(&cluster.url(), "dropped-statement");
    let db = one_connection_db(&url).await;
    backend_pid(&db).await.expect("warm-up");
    let dropped = tokio::time::timeout(Duration::from_millis(500), sleep_in_body(&db)).await;
    assert!(dropped.is_err(), "the body sleeps for 5 s");
    let started = Instant::now();
    backend_pid(&db).await.expect("the next call");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not behind the abandoned statement: {:?}",
        started.elapsed()
    );
    assert_eq!(open_transactions(&cluster, "dropped-statement").await, 0);
}

/// COMMIT is slow on the server (4 s) and its reply misses the attempt's 1.5 s
/// timer: verification by marker probes with an insert that waits for the original
/// transaction's row lock (at most 2 s, then the probe's query fails half-way, leaving
/// its transaction aborted). The caller goes away while the probe waits; the probe's
/// connection must not reach the next caller in that state (25P02).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_probe_leaves_no_aborted_transaction_behind() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    slow_commit_on(&cluster, "events", 4).await;
    let url = with_app_name(&cluster.url(), "dropped-probe");
    let db = Db::builder(&url)
        .max_size(2)
        .pool_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("a valid configuration");
    db.migrate().await.expect("runtime tables");

    let dropped = tokio::time::timeout(Duration::from_millis(2500), add_event_slowly(&db)).await;
    assert!(
        dropped.is_err(),
        "the caller gave up while verification probed"
    );
    // Past the probe's lock timeout: a probe left running would have failed by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..4 {
        backend_pid(&db)
            .await
            .expect("every connection the pool hands out is clean");
    }
    assert_eq!(open_transactions(&cluster, "dropped-probe").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_while_waiting_for_a_connection_is_no_longer_counted() {
    let cluster = cluster().await;
    let db = one_connection_db(&cluster.url()).await;
    let busy = sleep_in_body(&db);
    let waiting = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiter = tokio::time::timeout(Duration::from_millis(500), backend_pid(&db)).await;
        assert!(waiter.is_err(), "the only connection is busy");
    };
    tokio::select! {
        _ = busy => panic!("the body sleeps for 5 s"),
        () = waiting => {}
    }
    assert_eq!(db.pool_status().waiting, 0, "{:?}", db.pool_status());
    backend_pid(&db).await.expect("the pool serves again");
}

//! Idempotency keys, and what happens when the connection dies while COMMIT is in
//! flight: a keyed or `idempotent` call is resolved, any other gets `CommitUnknown`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use resilient_tx::{CommitVerification, ErrorKind, Tx, TxError, retriable_tx};

use crate::common::{cluster, db, exec, scalar, slow_commit_on, until_committing, with_app_name};

// The run counter is the test's instrument, not part of the request: an `AtomicU32`
// is `Serialize`, so without `key_fingerprint` its changing value would make a repeated
// key look like another request.
#[retriable_tx(idempotency_key = request_id, key_fingerprint = ())]
async fn create_order(tx: &mut Tx<'_>, request_id: &str, runs: &AtomicU32) -> Result<i32, TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    let row = tx
        .query_one(
            "INSERT INTO orders(note) VALUES ($1) RETURNING id",
            &[&request_id],
        )
        .await?;
    Ok(row.get(0))
}

#[retriable_tx(idempotency_key = request_id)]
async fn create_refund(tx: &mut Tx<'_>, request_id: &str) -> Result<i32, TxError> {
    let row = tx
        .query_one(
            "INSERT INTO orders(note) VALUES ('refund') RETURNING id",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_runs_the_body_once_and_returns_the_stored_result_after() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE orders(id serial PRIMARY KEY, note text)",
    )
    .await;
    let db = db(&cluster.url()).await;
    let runs = AtomicU32::new(0);

    let first = create_order(&db, "req-1", &runs).await.expect("first call");
    let again = create_order(&db, "req-1", &runs)
        .await
        .expect("client retry");
    let other = create_order(&db, "req-2", &runs)
        .await
        .expect("another key");

    assert_eq!(first, again, "the retry returns the first result");
    assert_ne!(first, other);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the body ran once per key");
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM orders").await, 2);
    assert_eq!(db.metrics().stored_results_returned, 1);

    // The same key in another function is another key.
    let refund = create_refund(&db, "req-1").await.expect("refund");
    assert_ne!(refund, first);
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM orders").await, 3);

    // Purging forgets keys older than the given age.
    assert_eq!(
        db.purge_idempotency_keys(Duration::from_secs(3600))
            .await
            .expect("purge"),
        0
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        db.purge_idempotency_keys(Duration::from_millis(10))
            .await
            .expect("purge"),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_with_one_key_apply_once_and_agree() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE orders(id serial PRIMARY KEY, note text)",
    )
    .await;
    let db = db(&cluster.url()).await;
    db.migrate().await.expect("explicit migration");
    let runs = AtomicU32::new(0);

    let calls: Vec<_> = (0..8)
        .map(|_| create_order(&db, "same-key", &runs))
        .collect();
    let results: Vec<i32> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every call succeeds"))
        .collect();

    assert!(
        results.iter().all(|id| *id == results[0]),
        "all got the same result: {results:?}"
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM orders").await,
        1,
        "applied once"
    );
}

/// Makes COMMIT take seconds (a deferred trigger sleeps) when the transaction sets
/// `app.slow_commit`, so the test can kill the connection while COMMIT is in flight.
async fn slow_commit_schema(cluster: &resilient_tx_testkit::PgCluster) {
    exec(
        cluster,
        "CREATE TABLE payments(id serial PRIMARY KEY, note text)",
    )
    .await;
    slow_commit_on(cluster, "payments", 5).await;
}

/// Waits until the app's backend is executing COMMIT, then terminates it.
async fn kill_during_commit(cluster: &resilient_tx_testkit::PgCluster, app: &str) {
    until_committing(cluster, app).await;
    cluster.terminate_backends(app).await.expect("terminate");
}

/// What the three payment functions below do: insert a payment and, on the first
/// run only, make its COMMIT slow enough to be killed in flight.
async fn insert_payment(
    tx: &mut Tx<'_>,
    note: &str,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<i32, TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    let row = tx
        .query_one(
            "INSERT INTO payments(note) VALUES ($1) RETURNING id",
            &[&note],
        )
        .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        tx.batch_execute("SET LOCAL app.slow_commit = 'on'").await?;
    }
    Ok(row.get(0))
}

#[retriable_tx]
async fn pay(tx: &mut Tx<'_>, first_run: &AtomicBool, runs: &AtomicU32) -> Result<i32, TxError> {
    insert_payment(tx, "plain", first_run, runs).await
}

#[retriable_tx(idempotent)]
async fn pay_idempotent(
    tx: &mut Tx<'_>,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<i32, TxError> {
    insert_payment(tx, "idempotent", first_run, runs).await
}

// As for `create_order`: the counters are not part of the request.
#[retriable_tx(idempotency_key = key, key_fingerprint = ())]
async fn pay_keyed(
    tx: &mut Tx<'_>,
    key: &str,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<i32, TxError> {
    insert_payment(tx, key, first_run, runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_verification_a_lost_commit_is_commit_unknown_and_never_rerun() {
    let cluster = cluster().await;
    slow_commit_schema(&cluster).await;
    let db = resilient_tx::Db::builder(&with_app_name(&cluster.url(), "payer"))
        .commit_verification(CommitVerification::Off)
        .build()
        .await
        .expect("config");
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));

    let (result, ()) = tokio::join!(
        pay(&db, &first_run, &runs),
        kill_during_commit(&cluster, "payer")
    );

    let error = result.expect_err("the outcome is unknown");
    assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
    assert!(error.to_string().contains("may or may not"), "{error}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never re-run blindly");
    let metrics = db.metrics();
    assert_eq!(
        (metrics.ambiguous_commits, metrics.ambiguous_unresolved),
        (1, 1),
        "{metrics:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_is_verified_and_retried_once_found_not_applied() {
    let cluster = cluster().await;
    slow_commit_schema(&cluster).await;
    let db = db(&with_app_name(&cluster.url(), "payer")).await;
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));

    let (result, ()) = tokio::join!(
        pay(&db, &first_run, &runs),
        kill_during_commit(&cluster, "payer")
    );

    result.expect("verified not applied, then retried");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "re-run only after verification"
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM payments").await,
        1,
        "applied once"
    );
    let metrics = db.metrics();
    assert_eq!(
        (
            metrics.ambiguous_commits,
            metrics.ambiguous_verified_not_committed,
            metrics.ambiguous_unresolved
        ),
        (1, 1, 0),
        "{metrics:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_function_is_rerun_after_an_ambiguous_commit() {
    let cluster = cluster().await;
    slow_commit_schema(&cluster).await;
    let db = db(&with_app_name(&cluster.url(), "payer")).await;
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));

    let (result, ()) = tokio::join!(
        pay_idempotent(&db, &first_run, &runs),
        kill_during_commit(&cluster, "payer")
    );

    result.expect("re-run after the ambiguous commit");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(db.metrics().ambiguous_rerun_idempotent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_call_resolves_an_ambiguous_commit_and_applies_once() {
    let cluster = cluster().await;
    slow_commit_schema(&cluster).await;
    let db = db(&with_app_name(&cluster.url(), "payer")).await;
    db.migrate().await.expect("migrate");
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));

    let (result, ()) = tokio::join!(
        pay_keyed(&db, "pay-1", &first_run, &runs),
        kill_during_commit(&cluster, "payer")
    );

    let id = result.expect("resolved by the key");
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM payments").await,
        1,
        "applied exactly once"
    );
    let again = pay_keyed(&db, "pay-1", &first_run, &runs)
        .await
        .expect("client retry");
    assert_eq!(again, id);
    assert_eq!(db.metrics().ambiguous_checked_by_key, 1);
}

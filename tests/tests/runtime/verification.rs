//! Commit verification where the server, not only the connection, is in trouble: an
//! orphaned transaction left open behind a silent network, and a server that crashes
//! and recovers between a lost COMMIT reply and its verification.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{CommitVerification, Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{CutPoint, FaultProxy, PgCluster};

use crate::common::{cluster, exec, scalar};

const SCHEMA: &str = "CREATE TABLE events(id serial PRIMARY KEY, note text)";

/// A `Db` with one connection (so verification cannot borrow a sibling that
/// predates the trouble) and the given verification.
async fn single_connection_db(url: &str, verification: CommitVerification) -> Db {
    Db::builder(url)
        .max_size(1)
        .pool_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .commit_verification(verification)
        .build()
        .await
        .expect("a valid configuration")
}

/// Inserts an event; on the first run only, `fault` strikes the network before
/// the body returns (and so before COMMIT is sent).
#[retriable_tx(timeout = "1s", deadline = "30s", retries = 5)]
async fn add_event(
    tx: &mut Tx<'_>,
    fault: &(dyn Fn() + Sync),
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO events(note) VALUES ('e')", &[])
        .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        fault();
    }
    Ok(())
}

/// Sessions on the server that sit in an open transaction.
async fn open_transactions(cluster: &PgCluster) -> i64 {
    scalar(
        cluster,
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
    )
    .await
}

/// The network goes silent while COMMIT is on its way: the server never gets it, and
/// its backend, not knowing its client is gone, keeps the transaction open. The
/// client reaches the server by the second host of its URL; verification finds the
/// transaction still in progress, ends that orphan (and nothing else), sees it
/// aborted, and the call runs again: once applied, long before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_transaction_behind_a_silent_network_is_ended_then_retried() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        proxy.port(),
        cluster.port()
    );
    let db = single_connection_db(&url, CommitVerification::TransactionId).await;
    let bystander = cluster.admin().await.expect("bystander session");
    bystander
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("a bystander's open transaction");
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));

    let started = Instant::now();
    let result = add_event(&db, &|| proxy.blackhole(), &first_run, &runs).await;
    let elapsed = started.elapsed();

    result.expect("verified not applied, then retried on the reachable host");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "re-run once, after verification"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "settled long before the deadline: {elapsed:?}"
    );
    let metrics = db.metrics();
    assert_eq!(
        (
            metrics.ambiguous_verified_not_committed,
            metrics.ambiguous_unresolved
        ),
        (1, 0),
        "{metrics:?}"
    );
    assert_eq!(
        open_transactions(&cluster).await,
        1,
        "the orphan is gone; the bystander's transaction is not"
    );
    bystander
        .batch_execute("COMMIT")
        .await
        .expect("the bystander's session was left alone");
    // The held COMMIT reaches a backend that no longer exists.
    proxy.pass();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM events").await,
        1,
        "applied once"
    );
}

/// COMMIT reaches the server and commits; its reply is cut, and before anyone can
/// ask, the server crashes and recovers. Returns the call's result, how often the
/// body ran, the events stored and the `Db`.
async fn commit_then_crash(
    verification: CommitVerification,
    cut: CutPoint,
) -> (Result<(), TxError>, u32, i64, Db) {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let db = single_connection_db(&cluster.url_via(&proxy), verification).await;
    db.migrate().await.expect("runtime tables");
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    // No new connection until the crash is over: the live one carries COMMIT.
    let fault = || {
        proxy.refuse();
        proxy.cut_next(cut);
    };
    let call = add_event(&db, &fault, &first_run, &runs);
    let crash = async {
        while proxy.cuts().total() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster
            .restart_immediate()
            .await
            .expect("crash and recover");
        proxy.pass();
    };
    let (result, ()) = tokio::join!(call, crash);
    let events = scalar(&cluster, "SELECT count(*) FROM events").await;
    (result, runs.load(Ordering::SeqCst), events, db)
}

/// By transaction status, a COMMIT that survived a crash cannot be told from another
/// transaction that got the same id after recovery: the call says `CommitUnknown`
/// (and never runs the body again), it does not guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_status_a_commit_that_survived_a_crash_is_commit_unknown_never_a_guess() {
    let (result, runs, events, db) = commit_then_crash(
        CommitVerification::TransactionId,
        CutPoint::AfterCommitBeforeReply,
    )
    .await;
    let error = result.expect_err("the outcome cannot be proven");
    assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
    assert_eq!((runs, events), (1, 1), "committed once, never re-run");
    assert_eq!(db.metrics().ambiguous_unresolved, 1, "{:?}", db.metrics());
}

/// By transaction status, a COMMIT that never reached the server before the crash is
/// proven not applied (its id is aborted, or was never handed out again): retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_status_a_commit_lost_with_a_crash_is_proven_not_applied_and_retried() {
    let (result, runs, events, db) =
        commit_then_crash(CommitVerification::TransactionId, CutPoint::BeforeCommit).await;
    result.expect("verified not applied, then retried");
    assert_eq!((runs, events), (2, 1), "re-run once, applied once");
    assert_eq!(
        db.metrics().ambiguous_verified_not_committed,
        1,
        "{:?}",
        db.metrics()
    );
}

/// By marker row, the same crash is no obstacle: the marker is on the recovered
/// server, so the call succeeds without running the body again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_marker_row_a_commit_that_survived_a_crash_is_found() {
    let (result, runs, events, db) = commit_then_crash(
        CommitVerification::MarkerRow,
        CutPoint::AfterCommitBeforeReply,
    )
    .await;
    result.expect("the marker proves the commit");
    assert_eq!((runs, events), (1, 1), "committed once, never re-run");
    assert_eq!(
        db.metrics().ambiguous_verified_committed,
        1,
        "{:?}",
        db.metrics()
    );
}

/// Counts the events; on the first run only, `fault` strikes before COMMIT is sent.
#[retriable_tx(timeout = "1s", deadline = "30s", retries = 5)]
async fn count_events(
    tx: &mut Tx<'_>,
    fault: &(dyn Fn() + Sync),
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<i64, TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    let count = tx.query_one("SELECT count(*) FROM events", &[]).await?;
    if first_run.swap(false, Ordering::SeqCst) {
        fault();
    }
    Ok(count.get(0))
}

/// Marker rows of the original transactions (not of probes).
async fn original_markers(cluster: &PgCluster) -> i64 {
    scalar(
        cluster,
        "SELECT count(*) FROM resilient_tx.commit_markers WHERE NOT by_probe",
    )
    .await
}

/// By marker row, only a transaction that wrote is marked: one that only read leaves
/// no marker (its COMMIT stays free of any write), and when its COMMIT reply is lost
/// it is proven not to need one and simply runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_marker_row_a_transaction_that_only_read_is_not_marked_and_reruns_after_a_lost_commit() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let db = single_connection_db(&cluster.url_via(&proxy), CommitVerification::MarkerRow).await;
    db.migrate().await.expect("runtime tables");
    let no_fault = || {};

    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    add_event(&db, &no_fault, &first_run, &runs)
        .await
        .expect("a write");
    assert_eq!(original_markers(&cluster).await, 1, "a write is marked");
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    let count = count_events(&db, &no_fault, &first_run, &runs)
        .await
        .expect("a read");
    assert_eq!(count, 1);
    assert_eq!(original_markers(&cluster).await, 1, "a read is not marked");

    let cut_commit_reply = || proxy.cut_next(CutPoint::AfterCommitBeforeReply);
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    let count = count_events(&db, &cut_commit_reply, &first_run, &runs)
        .await
        .expect("run again after the lost reply");
    assert_eq!((count, runs.load(Ordering::SeqCst)), (1, 2));
    assert_eq!(proxy.cuts().total(), 1, "the COMMIT reply was cut");
    assert_eq!(
        db.metrics().ambiguous_verified_not_committed,
        1,
        "{:?}",
        db.metrics()
    );
    assert_eq!(
        original_markers(&cluster).await,
        1,
        "still only the write's"
    );
}

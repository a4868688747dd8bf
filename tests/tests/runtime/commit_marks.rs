//! What rides with COMMIT for the fenced counter and the marker row, at their edges:
//! a late delivery of the original's compare-and-set and COMMIT after the check fenced
//! the row, a counter row gone or moved under its connection, and a body whose only
//! effect is a notification.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use resilient_tx::{CommitVerification, Db, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{CutPoint, FaultProxy, PgCluster};

use crate::common::{cluster, exec, scalar};
use crate::verification::{SCHEMA, open_transactions, single_connection_db};

/// Inserts an event and keeps its transaction alive however long it sits idle (the
/// runtime would have the server end it soon after the attempt's timer); on the first
/// run only, `fault` strikes the network before COMMIT is sent.
#[retriable_tx(timeout = "1s", deadline = "30s", retries = 5)]
async fn add_event_held(
    tx: &mut Tx<'_>,
    fault: &(dyn Fn() + Sync),
    first_run: &AtomicBool,
) -> Result<(), TxError> {
    tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        .await?;
    tx.execute("INSERT INTO events(note) VALUES ('held')", &[])
        .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        fault();
    }
    Ok(())
}

/// The original's compare-and-set and COMMIT are held by a partition. Verification
/// (over the URL's second host) finds the counter unmoved, decides "not committed"
/// and fences the row; the call runs again. Then the partition heals and delivers the
/// held messages to the original's backend, still open: its compare-and-set meets the
/// fence, its late COMMIT commits nothing, and the body is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_counter_a_late_commit_after_the_fence_commits_nothing() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?application_name=held",
        proxy.port(),
        cluster.port()
    );
    let db = Db::builder(&url)
        .max_size(1)
        .connect_timeout(Duration::from_millis(500))
        .commit_verification(CommitVerification::FencedCounter)
        .build()
        .await
        .expect("config");
    let first_run = AtomicBool::new(false);
    // The first commit claims the connection's row, the second moves its counter the
    // everyday way (each statement is prepared at its first use, before COMMIT's flight).
    for seq in [1, 2] {
        add_event_held(&db, &|| (), &first_run)
            .await
            .expect("a commit through the proxy moves the connection's counter");
        let moved = format!("SELECT count(*) FROM resilient_tx.commit_counters WHERE seq = {seq}");
        assert_eq!(scalar(&cluster, &moved).await, 1);
    }

    first_run.store(true, Ordering::SeqCst);
    let fault = || proxy.blackhole();
    let heal_after_the_fence = async {
        for _ in 0..300 {
            let fenced = scalar(
                &cluster,
                "SELECT count(*) FROM resilient_tx.commit_counters WHERE seq = -1",
            )
            .await;
            if fenced > 0 {
                proxy.pass();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("verification never fenced the counter");
    };
    let (result, ()) = tokio::join!(
        add_event_held(&db, &fault, &first_run),
        heal_after_the_fence
    );
    result.expect("verified not committed, run again");

    // The held CAS and COMMIT reach the original backend, which ends its transaction.
    for _ in 0..200 {
        if open_transactions(&cluster).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        open_transactions(&cluster).await,
        0,
        "the late COMMIT arrived"
    );
    assert!(
        cluster.log_contents().contains("division by zero"),
        "the late compare-and-set ran, met the fence and aborted its transaction"
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM events").await,
        3,
        "the first two calls and the third, once: the late COMMIT committed nothing"
    );
    assert_eq!(
        scalar(
            &cluster,
            "SELECT count(*) FROM resilient_tx.commit_counters WHERE seq = -1"
        )
        .await,
        1,
        "the fence held against the late compare-and-set"
    );
    let metrics = db.metrics();
    assert_eq!(metrics.ambiguous_verified_not_committed, 1, "{metrics:?}");
}

#[retriable_tx(timeout = "2s", deadline = "30s")]
async fn add_note(tx: &mut Tx<'_>, note: &str) -> Result<(), TxError> {
    tx.execute("INSERT INTO events(note) VALUES ($1)", &[&note])
        .await?;
    Ok(())
}

/// The counter rows: how many, their highest `seq`, and how many still carry the
/// timestamp the test wrote.
async fn counter_rows(cluster: &PgCluster) -> (i64, i64, i64) {
    let admin = cluster.admin().await.expect("admin connection");
    let row = admin
        .query_one(
            "SELECT count(*), coalesce(max(seq), 0), \
                    count(*) FILTER (WHERE updated_at = '2000-01-01') \
             FROM resilient_tx.commit_counters",
            &[],
        )
        .await
        .expect("counter rows");
    (row.get(0), row.get(1), row.get(2))
}

/// Between claims a commit moves the counter alone and leaves the row's timestamp as
/// the claim set it (the cheap update). A row that went anyway (purged while its
/// connection lived) or holds an older value (a failover that lost commits) makes the
/// compare-and-set abort the transaction, which runs again on a fresh connection with
/// a row of its own: applied once, and no error for the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_counter_a_row_gone_or_moved_costs_a_retry_on_a_fresh_connection() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let db = single_connection_db(&cluster.url(), CommitVerification::FencedCounter).await;
    db.migrate().await.expect("runtime tables");
    add_note(&db, "claims")
        .await
        .expect("the first commit claims a row");
    exec(
        &cluster,
        "UPDATE resilient_tx.commit_counters SET updated_at = '2000-01-01'",
    )
    .await;
    add_note(&db, "moves")
        .await
        .expect("the next moves the counter");
    assert_eq!(
        counter_rows(&cluster).await,
        (1, 2, 1),
        "one row, moved twice, its timestamp left as it was"
    );

    exec(&cluster, "DELETE FROM resilient_tx.commit_counters").await;
    add_note(&db, "after a purge")
        .await
        .expect("run again on a fresh connection");
    exec(
        &cluster,
        "UPDATE resilient_tx.commit_counters SET seq = seq - 1",
    )
    .await;
    add_note(&db, "after a failover")
        .await
        .expect("run again on a fresh connection");

    assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 4);
    let metrics = db.metrics();
    assert_eq!(metrics.retries_conflict, 2, "{metrics:?}");
    assert_eq!(metrics.connections_opened, 3, "{metrics:?}");
    assert_eq!(metrics.commits, 4, "{metrics:?}");
    let (rows, _, _) = counter_rows(&cluster).await;
    assert_eq!(rows, 2, "the moved row, and the last connection's own");
}

#[retriable_tx(timeout = "2s", deadline = "30s")]
async fn notify_only(tx: &mut Tx<'_>, runs: &AtomicU32) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("SELECT pg_notify('jobs', 'ready')", &[]).await?;
    Ok(())
}

/// A body whose only effect is a notification gets its transaction id at COMMIT only,
/// after the mark that looks for one. It is marked anyway, so a lost COMMIT reply is
/// verified as committed and the notification is not sent twice.
async fn notify_only_is_marked(verification: CommitVerification) {
    let cluster = cluster().await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let db = single_connection_db(&cluster.url_via(&proxy), verification).await;
    db.migrate().await.expect("runtime tables");
    let runs = AtomicU32::new(0);
    notify_only(&db, &runs).await.expect("warm-up");
    proxy.cut_next(CutPoint::AfterCommitBeforeReply);
    notify_only(&db, &runs)
        .await
        .expect("verified as committed");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "not run again: one notification"
    );
    let metrics = db.metrics();
    assert_eq!(metrics.ambiguous_verified_committed, 1, "{metrics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_counter_a_body_that_only_notifies_is_verified_not_rerun() {
    notify_only_is_marked(CommitVerification::FencedCounter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_marker_row_a_body_that_only_notifies_is_verified_not_rerun() {
    notify_only_is_marked(CommitVerification::MarkerRow).await;
}

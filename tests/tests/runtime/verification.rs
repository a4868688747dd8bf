//! Commit verification where the server, not only the connection, is in trouble: an
//! orphaned transaction left open behind a silent network, a server that crashes
//! and recovers between a lost COMMIT reply and its verification, and a network that
//! stays silent until the call's deadline.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{CommitVerification, Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{CutPoint, FaultProxy, PgCluster};

use crate::common::{cluster, exec, scalar, slow_commit_on, until_committing, with_app_name};

pub(crate) const SCHEMA: &str = "CREATE TABLE events(id serial PRIMARY KEY, note text)";

/// A `Db` with one connection (so verification cannot borrow a sibling that
/// predates the trouble) and the given verification.
pub(crate) async fn single_connection_db(url: &str, verification: CommitVerification) -> Db {
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
pub(crate) async fn open_transactions(cluster: &PgCluster) -> i64 {
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
    assert!(
        error
            .to_string()
            .contains("restarted or failed over since the transaction began"),
        "the error says why the id cannot tell: {error}"
    );
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

/// Inserts an event; on the first run only, its COMMIT is slow.
#[retriable_tx(timeout = "2s", deadline = "6s", retries = 5)]
async fn add_event_slowly(
    tx: &mut Tx<'_>,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    if first_run.swap(false, Ordering::SeqCst) {
        tx.batch_execute("SET LOCAL app.slow_commit = 'on'").await?;
    }
    tx.execute("INSERT INTO events(note) VALUES ('e')", &[])
        .await?;
    Ok(())
}

/// The text after `label` in `message`, up to the first character `end` refuses.
fn named_in(message: &str, label: &str, end: impl Fn(char) -> bool) -> String {
    let (_, after) = message
        .split_once(label)
        .unwrap_or_else(|| panic!("the error names {label:?}: {message}"));
    after.chars().take_while(|c| !end(*c)).collect()
}

/// The network goes silent while the server is executing COMMIT: the COMMIT
/// completes, its reply is held, and no probe reaches the server until the call's
/// deadline. The call neither runs again nor claims success: `CommitUnknown` at its
/// deadline, not before and not long after, saying why and naming what settles the
/// outcome by hand. Returns that error; afterwards the network is healed and the same
/// `Db` has written a second event.
async fn silent_while_commit_runs(verification: CommitVerification) -> (TxError, PgCluster) {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    // A second: long enough for the network to go silent while the server runs it.
    slow_commit_on(&cluster, "events", 1).await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let url = with_app_name(&cluster.url_via(&proxy), "silenced");
    let db = single_connection_db(&url, verification).await;
    db.migrate().await.expect("runtime tables");
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));

    let started = Instant::now();
    let silence = async {
        until_committing(&cluster, "silenced").await;
        proxy.blackhole();
    };
    let (result, ()) = tokio::join!(add_event_slowly(&db, &first_run, &runs), silence);
    let elapsed = started.elapsed();
    eprintln!("{result:?} after {elapsed:?}");

    let error = result.expect_err("nothing can be known behind a silent network");
    assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
    assert!(
        error
            .to_string()
            .contains("got no answer from the database before the call's deadline"),
        "{error}"
    );
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(12)).contains(&elapsed),
        "verification kept trying until the 6 s deadline, then stopped: {elapsed:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never run again blindly");
    let metrics = db.metrics();
    assert_eq!(
        (metrics.ambiguous_commits, metrics.ambiguous_unresolved),
        (1, 1),
        "{metrics:?}"
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM events").await,
        1,
        "the COMMIT completed on the server"
    );

    proxy.pass();
    add_event_slowly(&db, &first_run, &runs)
        .await
        .expect("the healed network serves the same Db");
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM events").await,
        2,
        "one event per call that ran"
    );
    (error, cluster)
}

/// By marker row, the error names the marker, and the guide's check by hand ("Settling
/// `CommitUnknown` by hand") finds the original transaction's marker: applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_marker_row_a_silent_network_until_the_deadline_is_commit_unknown_with_the_marker() {
    let (error, cluster) = silent_while_commit_runs(CommitVerification::MarkerRow).await;
    let message = error.to_string();
    let marker = named_in(&message, "its commit marker is '", |c| c == '\'');
    assert_eq!(marker.len(), 32, "{message}");
    assert!(
        message.contains("in resilient_tx.commit_markers"),
        "{message}"
    );
    let admin = cluster.admin().await.expect("admin");
    let check = admin
        .simple_query(&format!(
            "BEGIN;
             INSERT INTO resilient_tx.commit_markers (id, by_probe)
                 VALUES ('{marker}', true) ON CONFLICT DO NOTHING;
             SELECT by_probe FROM resilient_tx.commit_markers WHERE id = '{marker}';
             COMMIT;"
        ))
        .await
        .expect("the check by hand");
    let by_probe = check.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(
        by_probe.as_deref(),
        Some("f"),
        "the original's marker: applied"
    );
}

/// By transaction status, the error names the transaction id, and `pg_xact_status`
/// of it, as the guide says, tells that it committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_status_a_silent_network_until_the_deadline_is_commit_unknown_with_the_id() {
    let (error, cluster) = silent_while_commit_runs(CommitVerification::TransactionId).await;
    let message = error.to_string();
    let xid = named_in(&message, "its transaction id is ", |c| !c.is_ascii_digit());
    assert!(!xid.is_empty(), "{message}");
    let admin = cluster.admin().await.expect("admin");
    let status: String = admin
        .query_one(&format!("SELECT pg_xact_status('{xid}')::text"), &[])
        .await
        .expect("pg_xact_status")
        .get(0);
    assert_eq!(status, "committed", "{message}");
}

#[retriable_tx(timeout = "1s", deadline = "6s")]
async fn add_event_once(tx: &mut Tx<'_>, runs: &AtomicU32) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO events(note) VALUES ('sync')", &[])
        .await?;
    Ok(())
}

/// Synchronous replication stalls (a standby is required and none is there): COMMIT
/// waits on the server, the client's timer gives up on it, and verification by
/// transaction status finds the transaction in progress. Ending that backend would
/// make the server report the COMMIT "committed locally" (applied, but not on any
/// standby, so a failover loses it) and the call would claim success. It is left to
/// finish instead: `CommitUnknown` at the deadline, the backend still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_status_a_commit_waiting_for_a_synchronous_standby_is_never_cut_short() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let url = with_app_name(&cluster.url(), "sync-stalled");
    let db = single_connection_db(&url, CommitVerification::TransactionId).await;
    let runs = AtomicU32::new(0);
    add_event_once(&db, &runs).await.expect("before the stall");
    cluster
        .alter_system("synchronous_standby_names", "nobody")
        .await
        .expect("require a standby");

    let started = Instant::now();
    let error = add_event_once(&db, &runs)
        .await
        .expect_err("nothing may be claimed while COMMIT waits for a standby");
    let elapsed = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
    assert!(
        error.to_string().contains("COMMIT was still running"),
        "the error says why: {error}"
    );
    assert!(
        elapsed >= Duration::from_secs(5),
        "it waited for the COMMIT until the 6 s deadline: {elapsed:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2, "never run again");
    let waiting = scalar(
        &cluster,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = 'sync-stalled' AND wait_event = 'SyncRep'",
    )
    .await;
    assert_eq!(waiting, 1, "the COMMIT was not cut short");

    cluster
        .alter_system_reset("synchronous_standby_names")
        .await
        .expect("release the standby requirement");
    add_event_once(&db, &runs).await.expect("after the stall");
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 3);
}

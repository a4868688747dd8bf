//! Failover to a promoted replica, and a primary that turns read-only under the pool.

use std::time::{Duration, Instant};

use resilient_tx::{CommitVerification, Db, Tx, TxError, retriable_tx};

use crate::common::{cluster, exec, scalar};

#[retriable_tx(deadline = "30s", retries = 30)]
async fn record(tx: &mut Tx<'_>, n: i32) -> Result<(), TxError> {
    tx.execute("INSERT INTO writes(n) VALUES ($1)", &[&n])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_promoted_replica_keeps_writing_and_keeps_earlier_writes() {
    let primary = cluster().await;
    exec(&primary, "CREATE TABLE writes(n int PRIMARY KEY)").await;
    let replica = primary.create_replica().await.expect("replica");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port(),
        replica.port()
    );
    let db = Db::builder(&url)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("config");
    for n in 0..20 {
        record(&db, n).await.expect("write before failover");
    }
    replica
        .wait_replay_catch_up(&primary)
        .await
        .expect("catch up");

    primary.stop_fast().await.expect("stop primary");
    replica.promote().await.expect("promote");
    let started = Instant::now();
    record(&db, 20).await.expect("first write after failover");
    println!(
        "time to first write after promotion: {:?}",
        started.elapsed()
    );

    assert_eq!(
        scalar(&replica, "SELECT count(*) FROM writes").await,
        21,
        "no acknowledged write lost"
    );
    let metrics = db.metrics();
    assert!(
        metrics.retries_connection + metrics.stale_connections_replaced >= 1,
        "{metrics:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_server_causes_a_reconnect_not_an_error() {
    let server = cluster().await;
    exec(&server, "CREATE TABLE writes(n int PRIMARY KEY)").await;
    let url = format!("{}?target_session_attrs=read-write", server.url());
    let db = Db::builder(&url).build().await.expect("config");
    record(&db, 1).await.expect("write while writable");

    // Every session, the pooled one included, turns read-only: what a demoted primary
    // looks like to a connection that outlived the demotion.
    exec(
        &server,
        "ALTER SYSTEM SET default_transaction_read_only = on",
    )
    .await;
    exec(&server, "SELECT pg_reload_conf()").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let healer = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let admin = server.admin().await.expect("admin");
        for sql in [
            "SET default_transaction_read_only = off",
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).await.expect("writable again");
        }
    };
    let (result, ()) = tokio::join!(record(&db, 2), healer);

    result.expect("the write lands once a writable server is reachable");
    assert_eq!(scalar(&server, "SELECT count(*) FROM writes").await, 2);
    let metrics = db.metrics();
    assert!(
        metrics.retries_read_only >= 1,
        "25006 was retried: {metrics:?}"
    );
}

/// Which kind of server answered, and how many writes it holds.
#[retriable_tx(read_only)]
async fn read_writes(tx: &mut Tx<'_>) -> Result<(bool, i64), TxError> {
    let row = tx
        .query_one(
            "SELECT pg_is_in_recovery(), (SELECT count(*) FROM writes)",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_go_to_the_replica_and_primary_only_reads_your_writes() {
    let primary = cluster().await;
    exec(&primary, "CREATE TABLE writes(n int PRIMARY KEY)").await;
    let replica = primary.create_replica().await.expect("replica");
    let db = Db::builder(&primary.url())
        .read_replica(replica.url())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("config");
    record(&db, 1).await.expect("write on the primary");
    replica
        .wait_replay_catch_up(&primary)
        .await
        .expect("catch up");

    let (on_standby, count) = read_writes(&db).await.expect("replica read");
    assert!(on_standby, "a read-only call is served by the replica");
    assert_eq!(count, 1, "it sees replayed writes");
    let (on_standby, _) = read_writes(&db.primary_only()).await.expect("primary read");
    assert!(!on_standby, "primary_only reads from the primary");
    assert!(db.replica_pool_status().is_some());

    replica.stop_fast().await.expect("stop the replica");
    let (on_standby, count) = read_writes(&db)
        .await
        .expect("reads fall back to the primary");
    assert!(!on_standby);
    assert_eq!(count, 1);
}

/// A standby listed first in the URL (no `target_session_attrs` to rule it out), with
/// each commit verification: the first statement that needs a writable server (the
/// id noted in BEGIN's query, or the body's insert) is refused with 25006, and the
/// call moves on to the primary and writes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_listed_first_is_passed_over_with_either_verification() {
    let primary = cluster().await;
    exec(&primary, "CREATE TABLE writes(n int PRIMARY KEY)").await;
    let replica = primary.create_replica().await.expect("replica");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        replica.port(),
        primary.port()
    );
    for (n, verification) in [
        CommitVerification::TransactionId,
        CommitVerification::MarkerRow,
    ]
    .into_iter()
    .enumerate()
    {
        let db = Db::builder(&url)
            .connect_timeout(Duration::from_secs(2))
            .commit_verification(verification)
            .build()
            .await
            .expect("config");
        record(&db, n as i32)
            .await
            .unwrap_or_else(|e| panic!("{verification:?}: {e}"));
        assert!(
            db.metrics().retries_read_only >= 1,
            "{verification:?}: the standby answered first: {:?}",
            db.metrics()
        );
    }
    assert_eq!(scalar(&primary, "SELECT count(*) FROM writes").await, 2);
}

#[retriable_tx(read_only, isolation = serializable)]
async fn serializable_read(tx: &mut Tx<'_>) -> Result<bool, TxError> {
    Ok(tx
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get(0))
}

/// A standby cannot run SERIALIZABLE: a read-only serializable call goes to the
/// primary even when a read replica serves the other reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serializable_read_with_a_replica_runs_on_the_primary() {
    let primary = cluster().await;
    let replica = primary.create_replica().await.expect("replica");
    let db = Db::builder(&primary.url())
        .read_replica(replica.url())
        .build()
        .await
        .expect("config");
    for _ in 0..3 {
        let in_recovery = serializable_read(&db).await.expect("a serializable read");
        assert!(!in_recovery, "served by the primary");
    }
}

#[retriable_tx(isolation = serializable, deadline = "2s")]
async fn lock_in_serializable(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("SELECT pg_advisory_lock(4242)", &[]).await?;
    Ok(())
}

/// BEGIN that fails (a standby refuses SERIALIZABLE) must not let the statement sent
/// in its flight run on its own: a session-level advisory lock taken by that statement
/// would outlive the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_runs_after_a_failed_begin() {
    let primary = cluster().await;
    let replica = primary.create_replica().await.expect("replica");
    let db = Db::builder(&replica.url())
        .max_size(1)
        .build()
        .await
        .expect("config");
    let error = lock_in_serializable(&db)
        .await
        .expect_err("a standby cannot run SERIALIZABLE");
    assert_eq!(
        error.kind(),
        resilient_tx::ErrorKind::Unavailable,
        "{error}"
    );
    assert!(
        error.to_string().contains("reached a standby"),
        "says why: {error}"
    );
    assert_eq!(
        scalar(
            &replica,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
        )
        .await,
        0,
        "the statement sent with BEGIN ran nothing"
    );
}

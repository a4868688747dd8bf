//! Failover to a promoted replica, and a primary that turns read-only under the pool.

use std::time::{Duration, Instant};

use resilient_tx::{Db, Tx, TxError, retriable_tx};

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

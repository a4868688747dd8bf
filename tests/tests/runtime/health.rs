//! `Db::health`: a busy pool whose database answers is healthy.

use std::time::{Duration, Instant};

use resilient_tx::{Db, ServerRole, Tx, TxError, retriable_tx};

use crate::common::cluster;

#[retriable_tx]
async fn hold_a_connection(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("SELECT pg_sleep(3)", &[]).await?;
    Ok(())
}

/// Every pooled connection is checked out by a slow call: the probe still gets an
/// answer from the database (on a connection of its own) within its bound, says it is
/// healthy and at capacity, and leaves the pool as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_whose_database_answers_is_healthy_and_saturated() {
    let cluster = cluster().await;
    let db = Db::builder(&cluster.url())
        .max_size(2)
        .health_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("config");
    let quiet = db.health().await;
    assert!(quiet.healthy && !quiet.saturated, "{quiet:?}");

    let busy = async {
        let (a, b) = tokio::join!(hold_a_connection(&db), hold_a_connection(&db));
        a.and(b).expect("slow calls");
    };
    let probe = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(db.pool_status().in_use, 2, "both connections are busy");
        let started = Instant::now();
        let health = db.health().await;
        (health, started.elapsed())
    };
    let ((), (health, took)) = tokio::join!(busy, probe);
    assert!(health.healthy, "busy is not down: {health:?}");
    assert!(health.saturated, "{health:?}");
    assert_eq!(health.role, Some(ServerRole::Primary));
    assert!(
        took < Duration::from_secs(2),
        "within the probe's bound: {took:?}"
    );
    assert!(db.pool_status().connections <= 2, "{:?}", db.pool_status());
}

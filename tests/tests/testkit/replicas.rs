//! Streaming replicas: following, promotion, and a switchover that demotes the
//! old primary.

use std::time::Instant;

use resilient_tx_testkit::{PgCluster, init_tracing};
use tokio::time::timeout;

use crate::common::{STEP, TestResult, bounded, count_rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_and_promotes() -> TestResult {
    init_tracing();
    bounded(async {
        let primary = PgCluster::start().await?;
        let on_primary = primary.admin().await?;
        on_primary
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .await?;

        let started = Instant::now();
        let replica = timeout(STEP, primary.create_replica()).await??;
        eprintln!("replica creation took {:?}", started.elapsed());
        assert_ne!(replica.port(), primary.port());
        assert!(replica.is_in_recovery().await?);
        assert!(!primary.is_in_recovery().await?);

        on_primary.batch_execute("INSERT INTO t VALUES (2)").await?;
        timeout(STEP, replica.wait_replay_catch_up(&primary)).await??;
        let on_replica = replica.admin().await?;
        assert_eq!(count_rows(&on_replica, "t").await?, 2);
        assert!(
            on_replica
                .batch_execute("INSERT INTO t VALUES (3)")
                .await
                .is_err(),
            "a standby must reject writes"
        );

        timeout(STEP, primary.kill()).await??;
        timeout(STEP, replica.promote()).await??;
        assert!(!replica.is_in_recovery().await?);
        let on_replica = replica.admin().await?;
        on_replica.batch_execute("INSERT INTO t VALUES (3)").await?;
        assert_eq!(count_rows(&on_replica, "t").await?, 3);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_demotes_old_primary() -> TestResult {
    init_tracing();
    bounded(async {
        let a = PgCluster::start().await?;
        a.admin()
            .await?
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .await?;
        let b = timeout(STEP, a.create_replica()).await??;
        timeout(STEP, b.wait_replay_catch_up(&a)).await??;

        // Clean switchover: stop the old primary first, so the standby has
        // everything it wrote, then promote.
        timeout(STEP, a.stop_fast()).await??;
        timeout(STEP, b.promote()).await??;
        b.admin()
            .await?
            .batch_execute("INSERT INTO t VALUES (2)")
            .await?;

        timeout(STEP, a.demote_to_standby_of(&b)).await??;
        assert!(a.is_in_recovery().await?);
        timeout(STEP, a.wait_replay_catch_up(&b)).await??;
        assert_eq!(count_rows(&a.admin().await?, "t").await?, 2);
        Ok(())
    })
    .await
}

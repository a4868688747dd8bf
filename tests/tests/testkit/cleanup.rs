//! Nothing outlives a cluster: dropping it, even in a panicking test, stops the
//! server and removes its files.

use resilient_tx_testkit::{PgCluster, init_tracing};

use crate::common::{TestResult, bounded, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_cluster_stops_the_server_and_removes_its_files() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let url = cluster.url();
        let dir = cluster.dir().to_path_buf();
        assert!(cluster.data_dir().starts_with(&dir));
        assert!(cluster.log_path().starts_with(&dir));
        let client = connect(&url).await?;
        drop(cluster);
        assert!(!dir.exists(), "the temporary directory must be removed");
        assert!(client.query_one("SELECT 1", &[]).await.is_err());
        assert!(connect(&url).await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_still_cleans_up() -> TestResult {
    init_tracing();
    bounded(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let doomed = tokio::spawn(async move {
            let cluster = PgCluster::start().await.expect("start a cluster");
            let _ = tx.send((cluster.dir().to_path_buf(), cluster.url()));
            panic!("deliberate panic: the kit must clean up when a test fails");
        });
        let err = doomed.await.expect_err("the task panics");
        assert!(err.is_panic());
        let (dir, url) = rx.await?;
        assert!(!dir.exists(), "the temporary directory must be removed");
        assert!(connect(&url).await.is_err(), "the server must be stopped");
        Ok(())
    })
    .await
}

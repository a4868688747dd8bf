//! The fault proxy's modes: pass, latency, blackhole, refuse, cutting every
//! connection, and an upstream that restarts.

use std::time::{Duration, Instant};

use resilient_tx_testkit::{FaultProxy, PgCluster, init_tracing};
use tokio::time::timeout;

use crate::common::{STEP, TestResult, bounded, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_pass_forwards() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let proxy = FaultProxy::start(cluster.socket_addr()).await?;
        assert_eq!(proxy.upstream(), cluster.socket_addr());
        assert_eq!(proxy.connection_count(), 0);

        let client = connect(&cluster.url_via(&proxy)).await?;
        // Large enough to span many chunks in both directions.
        let payload = "x".repeat(1_000_000);
        let echoed: String = client
            .query_one("SELECT $1::text", &[&payload])
            .await?
            .get(0);
        assert_eq!(echoed, payload);
        assert_eq!(proxy.connection_count(), 1);

        // The server sees the proxy's connection as a client of its own.
        let via_proxy: i64 = cluster
            .admin()
            .await?
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
                &[],
            )
            .await?
            .get(0);
        assert_eq!(via_proxy, 2, "the proxied client and the admin connection");

        drop(client);
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.connection_count() != 0 {
            assert!(
                Instant::now() < deadline,
                "a closed connection must leave the registry"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_latency_delays_round_trips() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let proxy = FaultProxy::start(cluster.socket_addr()).await?;
        let client = connect(&cluster.url_via(&proxy)).await?;
        client.query_one("SELECT 1", &[]).await?;

        let delay = Duration::from_millis(200);
        proxy.latency(delay);
        let started = Instant::now();
        client.query_one("SELECT 1", &[]).await?;
        let elapsed = started.elapsed();
        assert!(
            elapsed >= 2 * delay,
            "a round trip must take at least twice the one-way delay, took {elapsed:?}"
        );

        proxy.pass();
        // The best of a few round trips, so a loaded machine does not fail
        // the test: with the delay still applied, none could beat it.
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            client.query_one("SELECT 1", &[]).await?;
            best = best.min(started.elapsed());
        }
        assert!(
            best < delay,
            "pass() must remove the delay, best round trip {best:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_blackhole_hangs_until_healed() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let proxy = FaultProxy::start(cluster.socket_addr()).await?;
        let client = connect(&cluster.url_via(&proxy)).await?;
        client.query_one("SELECT 1", &[]).await?;

        proxy.blackhole();
        let frozen = tokio::spawn(async move {
            let result = client
                .query_one("SELECT 7", &[])
                .await
                .map(|r| r.get::<_, i32>(0));
            (client, result)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !frozen.is_finished(),
            "a query through a blackhole must hang"
        );

        // New connections are accepted, but their handshake goes nowhere.
        let url = cluster.url_via(&proxy);
        assert!(
            timeout(Duration::from_secs(1), connect(&url))
                .await
                .is_err(),
            "connecting through a blackhole must hang"
        );

        proxy.pass();
        let fresh = timeout(STEP, connect(&url)).await??;
        assert_eq!(fresh.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
        // The held query goes through once the network heals.
        let (_client, result) = timeout(STEP, frozen).await??;
        assert_eq!(result?, 7);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_all_resets_live_connections() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let proxy = FaultProxy::start(cluster.socket_addr()).await?;
        let url = cluster.url_via(&proxy);
        let first = connect(&url).await?;
        let second = cluster.connect("direct").await?;
        first.query_one("SELECT 1", &[]).await?;
        assert_eq!(proxy.connection_count(), 1);

        assert_eq!(proxy.cut_all().await, 1);
        assert_eq!(proxy.connection_count(), 0);
        assert!(
            first.query_one("SELECT 1", &[]).await.is_err(),
            "a cut connection's next query must fail"
        );
        // Only proxied connections are affected.
        second.query_one("SELECT 1", &[]).await?;

        // The server side was reset too: its backend goes away.
        let admin = cluster.admin().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let proxied: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND application_name = ''",
                    &[],
                )
                .await?
                .get(0);
            if proxied == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the server kept the cut backend");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // New connections still work.
        let again = connect(&url).await?;
        again.query_one("SELECT 1", &[]).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_refuse_rejects_new_connections_only() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let proxy = FaultProxy::start(cluster.socket_addr()).await?;
        let url = cluster.url_via(&proxy);
        let live = connect(&url).await?;

        proxy.refuse();
        assert!(timeout(STEP, connect(&url)).await?.is_err());
        live.query_one("SELECT 1", &[]).await?;

        proxy.pass();
        connect(&url).await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_survives_upstream_restart() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let proxy = FaultProxy::start(cluster.socket_addr()).await?;
        let url = cluster.url_via(&proxy);
        let client = connect(&url).await?;
        client.query_one("SELECT 1", &[]).await?;

        timeout(STEP, cluster.restart_fast()).await??;
        assert!(client.query_one("SELECT 1", &[]).await.is_err());
        connect(&url).await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    })
    .await
}

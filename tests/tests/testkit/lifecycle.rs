//! A cluster's life: start, settings, isolation, restarts, stops, crashes and
//! terminated backends.

use std::io;
use std::time::Instant;

use resilient_tx_testkit::{PgCluster, init_tracing};
use tokio::time::timeout;

use crate::common::{STEP, TestResult, bounded, connect, count_rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_query() -> TestResult {
    init_tracing();
    bounded(async {
        let started = Instant::now();
        let cluster = PgCluster::start().await?;
        eprintln!("cluster start took {:?}", started.elapsed());
        assert!(cluster.is_running());
        assert_ne!(cluster.port(), 5432);
        assert_eq!(
            cluster.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port())
        );

        let client = connect(&cluster.url()).await?;
        let row = client.query_one("SELECT 1 + 1, current_user", &[]).await?;
        assert_eq!(row.get::<_, i32>(0), 2);
        assert_eq!(row.get::<_, String>(1), "postgres");

        // The kit's settings are in force.
        let admin = cluster.admin().await?;
        for (name, expected) in [
            ("fsync", "off"),
            ("wal_level", "replica"),
            ("max_connections", "200"),
            ("listen_addresses", "127.0.0.1"),
        ] {
            let value: String = admin.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
            assert_eq!(value, expected, "setting {name}");
        }
        let socket_dir: String = admin
            .query_one("SHOW unix_socket_directories", &[])
            .await?
            .get(0);
        assert_eq!(socket_dir, cluster.socket_dir().display().to_string());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_settings_apply() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::builder()
            .setting("application_name", "it's configured")
            .conf_line("max_prepared_transactions = 7")
            .start()
            .await?;
        let client = connect(&cluster.url()).await?;
        let prepared: String = client
            .query_one("SHOW max_prepared_transactions", &[])
            .await?
            .get(0);
        assert_eq!(prepared, "7");
        let row = client
            .query_one("SELECT current_setting('application_name')", &[])
            .await?;
        // The driver sets no application_name, so the server default applies.
        assert_eq!(row.get::<_, String>(0), "it's configured");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_system_is_in_force_on_return() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let existing = cluster.connect("existing").await?;
        existing.query_one("SELECT 1", &[]).await?;

        cluster.alter_system("work_mem", "7MB").await?;
        let fresh = cluster.admin().await?;
        for client in [&existing, &fresh] {
            let value: String = client.query_one("SHOW work_mem", &[]).await?.get(0);
            assert_eq!(value, "7MB", "no session may see the old value");
        }

        cluster.alter_system_reset("work_mem").await?;
        let value: String = existing.query_one("SHOW work_mem", &[]).await?.get(0);
        assert_eq!(value, "4MB", "the reset restores the default");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_isolated() -> TestResult {
    init_tracing();
    bounded(async {
        let (a, b) = tokio::try_join!(PgCluster::start(), PgCluster::start())?;
        assert_ne!(a.port(), b.port());
        assert_ne!(a.data_dir(), b.data_dir());
        let a_client = a.admin().await?;
        a_client.batch_execute("CREATE TABLE only_in_a ()").await?;
        let b_client = b.admin().await?;
        let exists: bool = b_client
            .query_one("SELECT to_regclass('only_in_a') IS NOT NULL", &[])
            .await?
            .get(0);
        assert!(!exists);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_fast_keeps_data() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let port = cluster.port();
        let client = cluster.admin().await?;
        client
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)")
            .await?;

        timeout(STEP, cluster.restart_fast()).await??;
        assert!(cluster.is_running());
        assert_eq!(cluster.port(), port, "the port survives restarts");

        // The old connection died with the server.
        assert!(client.query_one("SELECT 1", &[]).await.is_err());
        let client = cluster.admin().await?;
        assert_eq!(count_rows(&client, "t").await?, 3);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_start_again() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        cluster
            .admin()
            .await?
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
            .await?;

        timeout(STEP, cluster.stop_fast()).await??;
        assert!(!cluster.is_running());
        assert!(
            connect(&cluster.url()).await.is_err(),
            "a stopped server must refuse connections"
        );
        // Stopping a stopped server is a no-op.
        cluster.stop_immediate().await?;

        timeout(STEP, cluster.start_again()).await??;
        assert!(cluster.is_running());
        let x: i32 = cluster
            .admin()
            .await?
            .query_one("SELECT x FROM t", &[])
            .await?
            .get(0);
        assert_eq!(x, 42);

        // Starting a running server is an error, not a second postmaster.
        let err = cluster
            .start_again()
            .await
            .expect_err("start_again on a running server");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(cluster.is_running());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_immediate_recovers() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let client = cluster.admin().await?;
        client
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
            .await?;
        timeout(STEP, cluster.restart_immediate()).await??;
        let client = cluster.admin().await?;
        assert_eq!(count_rows(&client, "t").await?, 1000);
        assert!(
            cluster
                .log_contents()
                .contains("database system was not properly shut down"),
            "an immediate stop must leave crash recovery to the next start"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_then_start_again_runs_crash_recovery() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let victim = connect(&cluster.url()).await?;
        victim
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 500)")
            .await?;
        // An uncommitted transaction at crash time must vanish.
        victim
            .batch_execute("BEGIN; INSERT INTO t SELECT generate_series(1, 500)")
            .await?;

        timeout(STEP, cluster.kill()).await??;
        assert!(!cluster.is_running());
        assert!(
            timeout(STEP, victim.query_one("SELECT 1", &[]))
                .await?
                .is_err(),
            "a client of a crashed server must get an error"
        );

        timeout(STEP, cluster.start_again()).await??;
        let client = cluster.admin().await?;
        assert_eq!(count_rows(&client, "t").await?, 500);
        assert!(
            cluster
                .log_contents()
                .contains("database system was interrupted"),
            "the start after kill() must run crash recovery"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_backends_by_application_name() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let victim = cluster.connect("victim").await?;
        let bystander = cluster.connect("bystander").await?;
        victim.query_one("SELECT 1", &[]).await?;

        assert_eq!(cluster.terminate_backends("victim").await?, 1);
        assert!(
            victim.query_one("SELECT 1", &[]).await.is_err(),
            "the terminated connection's next query must fail"
        );
        bystander.query_one("SELECT 1", &[]).await?;
        assert_eq!(cluster.terminate_backends("victim").await?, 0);

        let admin = cluster.admin().await?;
        assert_eq!(cluster.terminate_all_client_backends().await?, 1);
        assert!(bystander.query_one("SELECT 1", &[]).await.is_err());
        admin.query_one("SELECT 1", &[]).await?;
        Ok(())
    })
    .await
}

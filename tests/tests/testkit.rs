//! Self-tests of the test kit against real PostgreSQL servers: if these fail,
//! no integration suite built on the kit can be trusted.

use std::io;
use std::time::{Duration, Instant};

use resilient_tx_testkit::{
    CutCounts, CutPoint, CutRule, FaultProxy, PgCluster, RandomCuts, init_tracing,
};
use tokio::time::timeout;
use tokio_postgres::{Client, NoTls};

/// Upper bound for any single test step that should be quick.
const STEP: Duration = Duration::from_secs(60);

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Connects to `url`, spawning the connection task.
async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn count_rows(client: &Client, table: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0))
}

/// Runs `f` with an overall deadline, so a hanging kit fails instead of
/// blocking the run.
async fn bounded<F: std::future::Future<Output = TestResult>>(f: F) -> TestResult {
    timeout(Duration::from_secs(180), f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test exceeded 180 s"))?
}

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

/// A cluster with `t(n int)`, a proxy in front of it, and a client through it.
async fn cut_setup() -> Result<(PgCluster, FaultProxy, Client), Box<dyn std::error::Error>> {
    let cluster = PgCluster::start().await?;
    cluster
        .admin()
        .await?
        .batch_execute("CREATE TABLE t(n int)")
        .await?;
    let proxy = FaultProxy::start(cluster.socket_addr()).await?;
    let client = connect(&cluster.url_via(&proxy)).await?;
    Ok((cluster, proxy, client))
}

/// Rows of `t`, counted on a direct connection.
async fn rows_of_t(cluster: &PgCluster) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(count_rows(&cluster.admin().await?, "t").await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_before_statement_never_reaches_the_server() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;

        // A simple query.
        proxy.cut_next(CutPoint::BeforeStatement);
        assert_eq!(
            proxy.pending_cuts(),
            [CutRule::at(CutPoint::BeforeStatement)]
        );
        let error = client
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .expect_err("the connection is cut");
        eprintln!("the client saw: {error}");
        assert_eq!(rows_of_t(&cluster).await?, 0, "the server never saw it");
        assert!(proxy.pending_cuts().is_empty(), "one-shot");

        // The extended protocol: Bind, Execute, Sync of a prepared statement.
        let client = connect(&cluster.url_via(&proxy)).await?;
        let insert = client.prepare("INSERT INTO t VALUES ($1)").await?;
        proxy.cut_next(CutPoint::BeforeStatement);
        client
            .execute(&insert, &[&2])
            .await
            .expect_err("the connection is cut");
        assert_eq!(rows_of_t(&cluster).await?, 0, "the server never saw it");

        // Cutting is off again: a new connection works.
        let client = connect(&cluster.url_via(&proxy)).await?;
        client.execute("INSERT INTO t VALUES ($1)", &[&3]).await?;
        assert_eq!(rows_of_t(&cluster).await?, 1);
        assert_eq!(
            proxy.cuts(),
            CutCounts {
                before_statement: 2,
                ..CutCounts::default()
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_after_statement_executes_it_but_loses_the_reply() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;
        // Only the statement that mentions the table.
        proxy.cut_next_matching(CutPoint::AfterStatementBeforeReply, "INSERT INTO t");
        client.batch_execute("SELECT 1").await?;
        client.query_one("SELECT count(*) FROM t", &[]).await?;
        client
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .expect_err("the reply never arrives");
        assert_eq!(rows_of_t(&cluster).await?, 1, "the server executed it");
        assert_eq!(
            proxy.cuts(),
            CutCounts {
                after_statement: 1,
                ..CutCounts::default()
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_after_commit_commits_but_the_client_sees_an_error() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;

        // Armed before the transaction: BEGIN and INSERT are not COMMITs and
        // go through.
        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        client.batch_execute("BEGIN").await?;
        client.execute("INSERT INTO t VALUES (1)", &[]).await?;
        assert_eq!(rows_of_t(&cluster).await?, 0, "not committed yet");
        let error = client
            .batch_execute("COMMIT")
            .await
            .expect_err("the client never learns that COMMIT succeeded");
        eprintln!("the client saw: {error}");
        assert_eq!(rows_of_t(&cluster).await?, 1, "yet the row IS committed");

        // Pipelined, as the runtime sends a marker INSERT with its COMMIT:
        // replies to the statements before COMMIT still reach the client.
        let client = connect(&cluster.url_via(&proxy)).await?;
        let insert = client.prepare("INSERT INTO t VALUES ($1)").await?;
        client.batch_execute("BEGIN").await?;
        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        let (inserted, committed) = futures_util::future::join(
            client.execute(&insert, &[&2]),
            client.batch_execute("commit;"),
        )
        .await;
        assert_eq!(inserted?, 1, "the INSERT's reply went through");
        committed.expect_err("the COMMIT's did not");
        assert_eq!(rows_of_t(&cluster).await?, 2);
        assert_eq!(
            proxy.cuts(),
            CutCounts {
                after_commit: 2,
                ..CutCounts::default()
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_before_commit_rolls_back() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;
        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await?;
        proxy.cut_next(CutPoint::BeforeCommit);
        client
            .batch_execute("COMMIT")
            .await
            .expect_err("the connection is cut");
        assert_eq!(
            rows_of_t(&cluster).await?,
            0,
            "COMMIT never reached the server"
        );
        assert_eq!(proxy.cuts().before_commit, 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_frames_connections_that_sent_an_ssl_request() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    init_tracing();
    bounded(async {
        let (cluster, proxy, _client) = cut_setup().await?;
        // What a driver with sslmode=prefer and TLS support sends first.
        let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await?;
        stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await?;
        let mut answer = [0u8];
        stream.read_exact(&mut answer).await?;
        assert_eq!(answer[0], b'N', "the kit's servers run without TLS");
        let mut config: tokio_postgres::Config = cluster.url_via(&proxy).parse()?;
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, connection) = config.connect_raw(stream, NoTls).await?;
        tokio::spawn(connection);

        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await?;
        client
            .batch_execute("COMMIT")
            .await
            .expect_err("the reply is cut");
        assert_eq!(rows_of_t(&cluster).await?, 1);
        assert_eq!(proxy.cuts().after_commit, 1);
        Ok(())
    })
    .await
}

/// What happened to each of `rounds` transactions (`BEGIN`, `INSERT`,
/// `COMMIT`, each a simple query) run one after the other through a proxy
/// cutting at random, reconnecting after each failure.
async fn random_cut_run(
    cluster: &PgCluster,
    cuts: RandomCuts,
    rounds: i32,
) -> Result<(Vec<bool>, CutCounts, i64), Box<dyn std::error::Error>> {
    let admin = cluster.admin().await?;
    admin.batch_execute("TRUNCATE t").await?;
    let proxy = FaultProxy::start(cluster.socket_addr()).await?;
    let url = cluster.url_via(&proxy);
    proxy.cut_randomly(cuts);
    let mut client = connect(&url).await?;
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        let result = async {
            client.batch_execute("BEGIN").await?;
            client
                .batch_execute(&format!("INSERT INTO t VALUES ({round})"))
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        outcomes.push(result.is_ok());
        if result.is_err() {
            client = connect(&url).await?;
        }
    }
    proxy.stop_cutting();
    Ok((outcomes, proxy.cuts(), count_rows(&admin, "t").await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_random_cuts_are_exact_and_reproducible() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, _proxy, _client) = cut_setup().await?;
        let seed = 20_240_611;
        let cuts = RandomCuts::new(0.08, seed).commit_rate(0.25);
        let started = Instant::now();
        let (outcomes, counts, rows) = random_cut_run(&cluster, cuts, 300).await?;
        eprintln!("seed {seed}: {counts:?} in {:?}", started.elapsed());

        let succeeded = outcomes.iter().filter(|ok| **ok).count() as u64;
        let failed = outcomes.len() as u64 - succeeded;
        assert_eq!(
            failed,
            counts.total(),
            "every failure is a cut, every cut a failure"
        );
        assert!(
            counts.before_statement > 0 && counts.after_statement > 0,
            "{counts:?}"
        );
        assert!(
            counts.before_commit > 0 && counts.after_commit > 0,
            "{counts:?}"
        );
        assert_eq!(counts.after_without_reply, 0, "{counts:?}");
        // Exactly the transactions that succeeded and those whose COMMIT was
        // executed before the cut are in the table.
        assert_eq!(
            rows as u64,
            succeeded + counts.after_commit,
            "seed {seed}: {counts:?}"
        );

        // The same seed cuts the same statements.
        let (again, counts_again, _) = random_cut_run(&cluster, cuts, 300).await?;
        assert_eq!(again, outcomes, "seed {seed}");
        assert_eq!(counts_again, counts);
        Ok(())
    })
    .await
}

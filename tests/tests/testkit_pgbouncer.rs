//! Self-tests of the kit's PgBouncer: the process and its console, and the
//! transaction-mode behaviour the runtime depends on (unnamed statements are
//! safe, named prepared statements are not), against a real PgBouncer in
//! front of a real cluster.

use std::collections::BTreeSet;
use std::io;
use std::time::{Duration, Instant};

use resilient_tx_testkit::{PgBouncer, PgCluster, PoolMode, init_tracing};
use tokio::time::timeout;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Upper bound for any single test step that should be quick.
const STEP: Duration = Duration::from_secs(60);

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `f` with an overall deadline, so a hanging kit fails instead of
/// blocking the run.
async fn bounded<F: std::future::Future<Output = TestResult>>(f: F) -> TestResult {
    timeout(Duration::from_secs(180), f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test exceeded 180 s"))?
}

/// Connects to `url`, spawning the connection task.
async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The first value of the first row a simple query returns.
async fn simple_value(client: &Client, sql: &str) -> Result<String, Box<dyn std::error::Error>> {
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or_default().to_owned());
        }
    }
    Err(format!("{sql} returned no row").into())
}

/// The server backend that runs `client`'s next statement, asked with a
/// simple query (whose reply ends with ReadyForQuery: PgBouncer has
/// released the server when it returns).
async fn simple_backend_pid(client: &Client) -> Result<i32, Box<dyn std::error::Error>> {
    Ok(simple_value(client, "SELECT pg_backend_pid()")
        .await?
        .parse()?)
}

/// The server backend that runs `client`'s next statement, asked with an
/// unnamed statement.
async fn backend_pid(client: &Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client
        .query_typed("SELECT pg_backend_pid()", &[])
        .await?
        .first()
        .map(|row| row.get(0))
        .unwrap_or_default())
}

async fn bouncer(cluster: &PgCluster, pool_size: u32) -> io::Result<PgBouncer> {
    let started = Instant::now();
    let bouncer = PgBouncer::builder(cluster)
        .pool_mode(PoolMode::Transaction)
        .pool_size(pool_size)
        .start()
        .await?;
    eprintln!("PgBouncer start took {:?}", started.elapsed());
    Ok(bouncer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_forwards_and_its_console_answers() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let bouncer = bouncer(&cluster, 3).await?;
        assert!(![5432, 6432, cluster.port()].contains(&bouncer.port()));
        assert_eq!(
            bouncer.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", bouncer.port())
        );
        let pid = bouncer.pid().expect("a running PgBouncer has a pid");
        assert!(bouncer.is_running());
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
        assert_eq!(comm.trim(), "pgbouncer", "pid() is PgBouncer itself");

        let client = connect(&bouncer.url()).await?;
        let row = client
            .query_typed("SELECT $1::int4 + 1, current_user", &[(&41i32, Type::INT4)])
            .await?;
        assert_eq!(row[0].get::<_, i32>(0), 42);
        assert_eq!(row[0].get::<_, String>(1), "postgres");
        // The server sees PgBouncer's connection, not the client's.
        let server_pid = backend_pid(&client).await?;
        let admin = cluster.admin().await?;
        let app: String = admin
            .query_one(
                "SELECT backend_type FROM pg_stat_activity WHERE pid = $1",
                &[&server_pid],
            )
            .await?
            .get(0);
        assert_eq!(app, "client backend");

        let pools = bouncer.show("POOLS").await?;
        let pool = pools
            .iter()
            .find(|row| row.get("database") == Some("postgres"))
            .expect("a pool for database postgres");
        assert_eq!(pool.get("user"), Some("postgres"));
        assert_eq!(pool.get("pool_mode"), Some("transaction"));
        let servers = bouncer.show("SERVERS").await?;
        assert!(!servers.is_empty(), "a server connection is open");
        assert!(servers.len() <= 3);
        let config = bouncer.show("CONFIG").await?;
        let value = |key: &str| {
            config
                .iter()
                .find(|row| row.get("key") == Some(key))
                .and_then(|row| row.get("value"))
                .map(str::to_owned)
        };
        assert_eq!(value("default_pool_size").as_deref(), Some("3"));
        assert_eq!(value("server_reset_query").as_deref(), Some("DISCARD ALL"));
        assert_eq!(value("server_login_retry").as_deref(), Some("15"));

        let err = bouncer
            .show("POOLS; SHUTDOWN")
            .await
            .expect_err("one word only");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_options_apply_and_bad_ones_are_named() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        cluster
            .admin()
            .await?
            .batch_execute("CREATE ROLE app LOGIN; CREATE ROLE unlisted LOGIN")
            .await?;
        let bouncer = PgBouncer::builder(&cluster)
            .user("app")
            .setting("server_login_retry", "1")
            .setting("pool_mode", "session")
            .start()
            .await?;
        let app = connect(&format!(
            "postgres://app@127.0.0.1:{}/postgres",
            bouncer.port()
        ))
        .await?;
        assert_eq!(simple_value(&app, "SELECT current_user").await?, "app");
        let refused = connect(&format!(
            "postgres://unlisted@127.0.0.1:{}/postgres",
            bouncer.port()
        ))
        .await
        .expect_err("a role missing from the auth file is refused");
        let message = refused.as_db_error().map(|db| db.message().to_owned());
        assert_eq!(
            message.as_deref(),
            Some("\"trust\" authentication failed"),
            "{refused:?}"
        );

        let config = bouncer.show("CONFIG").await?;
        let value = |key: &str| {
            config
                .iter()
                .find(|row| row.get("key") == Some(key))
                .and_then(|row| row.get("value"))
                .map(str::to_owned)
        };
        assert_eq!(value("server_login_retry").as_deref(), Some("1"));
        assert_eq!(value("pool_mode").as_deref(), Some("session"));

        for (name, value) in [
            ("listen_port", "6432"),
            ("bad name", "1"),
            ("pool_mode", "session\nadmin_users = x"),
        ] {
            let err = PgBouncer::builder(&cluster)
                .setting(name, value)
                .start()
                .await
                .expect_err("a bad setting is refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}");
            assert!(err.to_string().contains(name), "{err}");
        }
        let err = PgBouncer::builder(&cluster)
            .pool_size(0)
            .start()
            .await
            .expect_err("pool size 0");
        assert!(err.to_string().contains("pool_size"), "{err}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_transaction_mode_runs_simple_and_unnamed_statements_on_any_server() -> TestResult
{
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        cluster
            .admin()
            .await?
            .batch_execute("CREATE TABLE t (i int)")
            .await?;
        let bouncer = bouncer(&cluster, 2).await?;
        let a = connect(&bouncer.url()).await?;
        let b = connect(&bouncer.url()).await?;

        let mut a_backends = BTreeSet::new();
        for i in 0..40i32 {
            // Every other round `b` holds a server connection in a
            // transaction, so `a` must run on the other one.
            let b_holds = i % 2 == 1;
            if b_holds {
                b.batch_execute("BEGIN").await?;
                b.query_typed("SELECT 1", &[]).await?;
            }
            assert_eq!(
                simple_value(&a, &format!("SELECT {i} * 2")).await?,
                (i * 2).to_string()
            );
            let row = a
                .query_typed("SELECT $1::int4 + 1, pg_backend_pid()", &[(&i, Type::INT4)])
                .await?;
            assert_eq!(row[0].get::<_, i32>(0), i + 1);
            a_backends.insert(row[0].get::<_, i32>(1));
            // A transaction of unnamed statements stays on one server.
            a.batch_execute("BEGIN").await?;
            let first = backend_pid(&a).await?;
            a.execute_typed("INSERT INTO t VALUES ($1)", &[(&i, Type::INT4)])
                .await?;
            assert_eq!(
                backend_pid(&a).await?,
                first,
                "a transaction keeps its server"
            );
            a.batch_execute("COMMIT").await?;
            if b_holds {
                b.batch_execute("COMMIT").await?;
            }
        }
        assert!(
            a_backends.len() >= 2,
            "the client's statements ran on several server connections: {a_backends:?}"
        );
        assert!(
            bouncer.show("SERVERS").await?.len() <= 2,
            "the pool size holds"
        );
        let count: i64 = cluster
            .admin()
            .await?
            .query_one("SELECT count(*) FROM t", &[])
            .await?
            .get(0);
        assert_eq!(count, 40);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_transaction_mode_loses_named_prepared_statements() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let bouncer = bouncer(&cluster, 2).await?;
        let a = connect(&bouncer.url()).await?;
        let b = connect(&bouncer.url()).await?;

        // `a` prepares a statement on a server connection. Simple queries end
        // on ReadyForQuery, so each also makes sure PgBouncer has released
        // the server of the statement before it (the extended protocol's
        // replies can reach the client before the server's ReadyForQuery).
        let first_server = simple_backend_pid(&a).await?;
        let statement = a.prepare("SELECT 1::int4").await?;
        assert_eq!(simple_backend_pid(&a).await?, first_server);
        // `b` takes that server for a transaction (PgBouncer hands out the
        // server released last)...
        b.batch_execute("BEGIN").await?;
        assert_eq!(simple_backend_pid(&b).await?, first_server);
        // ...so `a` runs on another server connection, where the statement
        // does not exist.
        let err = a
            .query(&statement, &[])
            .await
            .expect_err("the statement was prepared on another server connection");
        assert_eq!(
            err.code(),
            Some(&SqlState::INVALID_SQL_STATEMENT_NAME),
            "{err:?}"
        );
        assert_ne!(simple_backend_pid(&a).await?, first_server);
        assert_eq!(bouncer.show("SERVERS").await?.len(), 2);

        // Back on the server that has it, the same statement works: which
        // server a transaction gets decides, not the client.
        b.batch_execute("COMMIT").await?;
        let rows = a.query(&statement, &[]).await?;
        assert_eq!(rows[0].get::<_, i32>(0), 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_survives_a_restart_of_the_cluster() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let bouncer = bouncer(&cluster, 3).await?;
        let client = connect(&bouncer.url()).await?;
        let before = backend_pid(&client).await?;

        timeout(STEP, cluster.restart_fast()).await??;
        // PgBouncer saw its idle server connection close and opens a new
        // one: the client's connection to PgBouncer survives.
        let after = backend_pid(&client).await?;
        assert_ne!(before, after, "a new server connection after the restart");
        let fresh = connect(&bouncer.url()).await?;
        assert_eq!(simple_value(&fresh, "SELECT 'up'").await?, "up");
        assert!(bouncer.is_running());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_stop_restart_kill_and_drop() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::start().await?;
        let bouncer = bouncer(&cluster, 3).await?;
        let port = bouncer.port();
        let client = connect(&bouncer.url()).await?;
        client.simple_query("SELECT 1").await?;
        let first_pid = bouncer.pid().expect("pid");

        timeout(STEP, bouncer.stop()).await??;
        assert!(!bouncer.is_running());
        assert_eq!(bouncer.pid(), None);
        assert!(client.simple_query("SELECT 1").await.is_err());
        assert!(connect(&bouncer.url()).await.is_err(), "stopped: refused");
        bouncer.stop().await?; // no-op

        timeout(STEP, bouncer.start_again()).await??;
        let err = bouncer.start_again().await.expect_err("already running");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        timeout(STEP, bouncer.restart()).await??;
        assert_eq!(bouncer.port(), port, "the port survives restarts");
        assert_ne!(bouncer.pid(), Some(first_pid));
        let client = connect(&bouncer.url()).await?;
        client.simple_query("SELECT 1").await?;

        timeout(STEP, bouncer.kill()).await??;
        assert!(client.simple_query("SELECT 1").await.is_err());
        timeout(STEP, bouncer.start_again()).await??;
        connect(&bouncer.url())
            .await?
            .simple_query("SELECT 1")
            .await?;

        let pid = bouncer.pid().expect("pid");
        let dir = bouncer.dir().to_path_buf();
        let url = bouncer.url();
        drop(bouncer);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process gone"
        );
        assert!(!dir.exists(), "files removed");
        assert!(connect(&url).await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_is_cleaned_up_when_a_test_panics() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = std::sync::Arc::new(PgCluster::start().await?);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let doomed = tokio::spawn({
            let cluster = std::sync::Arc::clone(&cluster);
            async move {
                let bouncer = PgBouncer::start(&cluster).await.expect("start PgBouncer");
                let _ = tx.send((bouncer.pid(), bouncer.dir().to_path_buf()));
                panic!("deliberate panic: the kit must clean up when a test fails");
            }
        });
        assert!(doomed.await.expect_err("the task panics").is_panic());
        let (pid, dir) = rx.await?;
        let pid = pid.expect("it ran");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process gone"
        );
        assert!(!dir.exists(), "files removed");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_reaches_a_tls_only_cluster_over_tls() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PgCluster::builder().tls().start().await?;
        let bouncer = bouncer(&cluster, 2).await?;
        let client = connect(&bouncer.url()).await?;
        let ssl = simple_value(
            &client,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await?;
        assert_eq!(ssl, "t", "PgBouncer's server connection is encrypted");
        Ok(())
    })
    .await
}

//! TLS as a user meets it: a TLS-only server (pg_hba.conf refuses plain text over TCP)
//! reached with libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` in the URL.
//! Each mode encrypts as promised, a certificate problem is a `Config` error at once
//! that names it and the host, a refusal by pg_hba.conf is not retried, and restarts and
//! killed backends are survived over TLS as in plain text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{PgCluster, init_tracing};

use crate::common::{db, exec, scalar, with_app_name};

/// A certificate problem is known after one handshake: far less than the call's
/// deadline, generous for a loaded machine.
const FAILS_WITHIN: Duration = Duration::from_secs(5);

async fn tls_cluster() -> PgCluster {
    init_tracing();
    PgCluster::builder()
        .tls()
        .start()
        .await
        .expect("start a TLS-only PostgreSQL server")
}

/// The URL of `cluster`'s `postgres` database as `user`, at `host`, with `query`.
fn url(cluster: &PgCluster, user: &str, host: &str, query: &str) -> String {
    format!(
        "postgres://{user}@{host}:{}/postgres?{query}",
        cluster.port()
    )
}

/// `sslmode=verify-full` against the kit's CA.
fn verify_full(cluster: &PgCluster) -> String {
    let tls = cluster.tls().expect("a TLS-only cluster");
    format!(
        "sslmode=verify-full&sslrootcert={}",
        tls.ca_cert().display()
    )
}

/// Whether the body's own connection is encrypted, as the server sees it.
#[retriable_tx(deadline = "30s")]
async fn encrypted(tx: &mut Tx<'_>) -> Result<bool, TxError> {
    let row = tx
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Whether the body runs encrypted, and on a standby.
#[retriable_tx(read_only)]
async fn encrypted_where(tx: &mut Tx<'_>) -> Result<(bool, bool), TxError> {
    let row = tx
        .query_one(
            "SELECT ssl, pg_is_in_recovery() FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_the_default_prefer_connect_encrypted_to_a_tls_only_server() {
    let cluster = tls_cluster().await;
    for query in [
        "sslmode=require",
        "sslmode=prefer",
        "application_name=default-mode",
    ] {
        let db = db(&url(&cluster, "postgres", "127.0.0.1", query)).await;
        let ssl = encrypted(&db)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(ssl, "{query}: the connection is encrypted");
        assert_eq!(db.metrics().attempts, 1, "{query}: {:?}", db.metrics());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_accepts_the_host_name_and_the_ip_address() {
    let cluster = tls_cluster().await;
    for host in ["localhost", "127.0.0.1"] {
        let db = db(&url(&cluster, "postgres", host, &verify_full(&cluster))).await;
        let ssl = encrypted(&db)
            .await
            .unwrap_or_else(|e| panic!("verify-full at {host}: {e}"));
        assert!(ssl, "verify-full at {host}");
    }
}

/// Asserts the shape of a certificate error: `Config`, at once, one attempt, the host
/// and the problem named. Returns the message.
async fn certificate_error(db: &Db, host_port: &str, problem: &str) -> String {
    let started = Instant::now();
    let error = encrypted(db).await.expect_err("the certificate is refused");
    let elapsed = started.elapsed();
    let message = error.to_string();
    println!("{message} ({elapsed:?}, {} attempt)", error.attempts());
    assert_eq!(error.kind(), ErrorKind::Config, "{message}");
    assert!(!error.is_transient(), "{message}");
    assert_eq!(error.attempts(), 1, "not retried: {message}");
    assert!(
        elapsed < FAILS_WITHIN,
        "failed at once, not at the 30 s deadline: {elapsed:?}"
    );
    assert!(message.contains(host_port), "names {host_port}: {message}");
    assert!(message.contains(problem), "names the problem: {message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_is_a_config_error_at_once_naming_the_host_and_the_problem() {
    let cluster = tls_cluster().await;
    let untrusted = cluster.tls().expect("TLS").untrusted_ca_cert().to_owned();
    let query = format!("sslmode=verify-full&sslrootcert={}", untrusted.display());
    let db = db(&url(&cluster, "postgres", "127.0.0.1", &query)).await;
    // Every call, not only the first: a call that starts right after another's failed
    // connect must not wait out the pool timeout before it says so.
    for _ in 0..5 {
        let message = certificate_error(
            &db,
            &format!("127.0.0.1:{}", cluster.port()),
            "the server's certificate was not issued by a CA in sslrootcert",
        )
        .await;
        assert!(
            message.contains(&untrusted.display().to_string()),
            "names the CA file: {message}"
        );
    }
    assert_eq!(db.metrics().connections_opened, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_the_certificate_does_not_name_is_a_config_error_at_once() {
    let cluster = tls_cluster().await;
    // The name is verified, the address is connected to: as with libpq's hostaddr.
    let query = format!("hostaddr=127.0.0.1&{}", verify_full(&cluster));
    let db = db(&url(&cluster, "postgres", "db.example.test", &query)).await;
    certificate_error(
        &db,
        &format!("db.example.test:{}", cluster.port()),
        "not valid for host name 'db.example.test' (it names: localhost, 127.0.0.1)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_against_a_tls_only_server_is_refused_at_once_in_a_sentence() {
    let cluster = tls_cluster().await;
    let db = db(&url(&cluster, "postgres", "127.0.0.1", "sslmode=disable")).await;
    let started = Instant::now();
    let error = encrypted(&db).await.expect_err("plain text is refused");
    let elapsed = started.elapsed();
    let message = error.to_string();
    println!("{message} ({elapsed:?}, {} attempt)", error.attempts());
    // pg_hba.conf's refusal (28000) is permanent: retrying until the deadline only
    // hides it.
    assert_eq!(error.kind(), ErrorKind::Database, "{message}");
    assert_eq!(error.sqlstate().map(|s| s.code()), Some("28000"));
    assert_eq!(error.attempts(), 1, "not retried: {message}");
    assert!(elapsed < FAILS_WITHIN, "at once: {elapsed:?}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{message}"
    );
    assert!(message.contains("refused the connection"), "{message}");
    assert!(message.contains("no encryption"), "says why: {message}");
    assert!(
        message.contains("use sslmode=verify-full"),
        "says what to change: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_is_a_config_error_at_once() {
    init_tracing();
    let cluster = PgCluster::start().await.expect("a plain-text server");
    let db = db(&url(&cluster, "postgres", "127.0.0.1", "sslmode=require")).await;
    let started = Instant::now();
    let error = encrypted(&db).await.expect_err("no TLS there");
    let elapsed = started.elapsed();
    let message = error.to_string();
    println!("{message} ({elapsed:?}, {} attempt)", error.attempts());
    assert_eq!(error.kind(), ErrorKind::Config, "{message}");
    assert_eq!(error.attempts(), 1, "{message}");
    assert!(elapsed < FAILS_WITHIN, "at once: {elapsed:?}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{message}"
    );
    assert!(
        message.contains("does not accept TLS, and sslmode=require requires it"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_certificate_role_connects_with_its_certificate_and_not_without() {
    let cluster = tls_cluster().await;
    let tls = cluster.tls().expect("TLS");
    let role = tls.client_cert_role();
    let with_cert = format!(
        "{}&sslcert={}&sslkey={}",
        verify_full(&cluster),
        tls.client_cert().display(),
        tls.client_key().display()
    );
    let db_with = db(&url(&cluster, role, "localhost", &with_cert)).await;
    assert!(
        encrypted(&db_with)
            .await
            .expect("logs in with its certificate")
    );

    let db_without = db(&url(&cluster, role, "localhost", &verify_full(&cluster))).await;
    let started = Instant::now();
    let error = encrypted(&db_without)
        .await
        .expect_err("the role needs its certificate");
    let message = error.to_string();
    println!("{message} ({:?})", started.elapsed());
    assert_eq!(error.kind(), ErrorKind::Database, "{message}");
    assert_eq!(error.attempts(), 1, "not retried: {message}");
    assert!(started.elapsed() < FAILS_WITHIN);
    assert!(message.contains("certificate"), "{message}");
}

/// Adds one to the counter and records this call's key.
#[retriable_tx(retries = 30, deadline = "30s")]
async fn count_once(tx: &mut Tx<'_>, key: &str) -> Result<(), TxError> {
    tx.execute("UPDATE counter SET n = n + 1", &[]).await?;
    tx.execute("INSERT INTO calls(key) VALUES ($1)", &[&key])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_writers_over_tls_survive_a_restart_and_terminated_backends() {
    const WRITERS: usize = 4;
    const APP: &str = "tls-writers";
    let cluster = tls_cluster().await;
    exec(
        &cluster,
        "CREATE TABLE counter(n int8 NOT NULL); INSERT INTO counter VALUES (0);
         CREATE TABLE calls(key text NOT NULL)",
    )
    .await;
    let url = with_app_name(
        &url(&cluster, "postgres", "localhost", &verify_full(&cluster)),
        APP,
    );
    let db = Db::builder(&url)
        .max_size(WRITERS as u32)
        .pool_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("a valid configuration");
    let stop = Arc::new(AtomicBool::new(false));
    let (oks, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, stop, oks, errors) = (db.clone(), stop.clone(), oks.clone(), errors.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    match count_once(&db, &format!("w{w}-{seq}")).await {
                        Ok(()) => oks.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("writer {w}, call {seq}: {e}");
                            errors.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();

    let progress = |at_least: u64| {
        let oks = oks.clone();
        async move {
            let started = Instant::now();
            while oks.load(Ordering::SeqCst) < at_least {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the writers make progress"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    progress(20).await;
    cluster.restart_fast().await.expect("restart");
    let after_restart = oks.load(Ordering::SeqCst);
    progress(after_restart + 20).await;
    let killed = cluster.terminate_backends(APP).await.expect("terminate");
    assert!(killed >= 1, "the writers' backends were terminated");
    let after_kill = oks.load(Ordering::SeqCst);
    progress(after_kill + 20).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer task");
    }

    let (oks, errors) = (oks.load(Ordering::SeqCst), errors.load(Ordering::SeqCst));
    let metrics = db.metrics();
    println!("{oks} calls, {errors} errors, {metrics:?}");
    assert_eq!(errors, 0, "no error reached a caller");
    assert_eq!(scalar(&cluster, "SELECT n FROM counter").await, oks as i64);
    assert_eq!(
        scalar(&cluster, "SELECT count(DISTINCT key) FROM calls").await,
        oks as i64,
        "each Ok call applied once"
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM calls").await,
        oks as i64
    );
    assert!(metrics.retries_connection >= 1, "{metrics:?}");
    // Every connection the writers ever used was encrypted: the ones left are.
    let admin = cluster.admin().await.expect("admin");
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE ssl) FROM pg_stat_ssl \
             JOIN pg_stat_activity USING (pid) WHERE application_name = $1",
            &[&APP],
        )
        .await
        .expect("pg_stat_ssl");
    let (connections, encrypted): (i64, i64) = (row.get(0), row.get(1));
    assert!(connections >= 1);
    assert_eq!(connections, encrypted, "every connection is encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_url_with_sslmode_serves_read_only_calls_over_tls() {
    let primary = tls_cluster().await;
    let replica = primary.create_replica().await.expect("a TLS-only replica");
    let db = Db::builder(&url(
        &primary,
        "postgres",
        "localhost",
        &verify_full(&primary),
    ))
    .read_replica(url(
        &replica,
        "postgres",
        "127.0.0.1",
        &verify_full(&replica),
    ))
    .pool_timeout(Duration::from_secs(5))
    .connect_timeout(Duration::from_secs(2))
    .build()
    .await
    .expect("a valid configuration");
    // Without the replica's TLS parameters its connects would be refused, and the
    // read would fall back to the primary (not in recovery).
    let (ssl, standby) = encrypted_where(&db).await.expect("read on the replica");
    assert!(ssl, "the replica connection is encrypted");
    assert!(standby, "served by the replica");
    let (ssl, standby) = encrypted_where(&db.primary_only())
        .await
        .expect("read on the primary");
    assert!(ssl && !standby, "primary_only reads the primary, encrypted");
}

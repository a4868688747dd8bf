//! Self-tests of the TLS-only cluster: `psql` (libpq, the reference for
//! `sslmode` semantics) against the server the kit configures, and every kit
//! helper on such a cluster, replicas included.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use resilient_tx_testkit::{CLIENT_CERT_ROLE, PgCluster, binaries, init_tracing};
use tokio::time::timeout;

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

/// Runs `sql` with `psql` on the connection string `conninfo`: `Ok(output)`
/// when psql succeeded, `Err(stderr)` when it could not connect or the
/// statement failed.
async fn psql(conninfo: &str, sql: &str) -> io::Result<Result<String, String>> {
    let mut cmd = binaries::tokio_pg_command("psql")?;
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ])
    .env("PGCONNECT_TIMEOUT", "10")
    // Only the connection string decides; nothing from the environment.
    .env_remove("PGSSLMODE")
    .env_remove("PGSSLROOTCERT")
    .env_remove("PGSSLCERT")
    .env_remove("PGSSLKEY")
    .kill_on_drop(true);
    let out = timeout(STEP, cmd.output())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "psql took over 60 s"))??;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    })
}

/// A libpq connection string for `cluster` on host `host`, with `extra`
/// options.
fn conninfo(cluster: &PgCluster, host: &str, user: &str, extra: &str) -> String {
    format!(
        "host={host} port={} user={user} dbname=postgres {extra}",
        cluster.port()
    )
}

const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

async fn tls_cluster() -> io::Result<PgCluster> {
    let started = Instant::now();
    let cluster = PgCluster::builder().tls().start().await?;
    eprintln!("TLS cluster start took {:?}", started.elapsed());
    Ok(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_encrypts_and_the_url_is_unchanged() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = tls_cluster().await?;
        assert_eq!(
            cluster.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port())
        );
        let url = format!("{}?sslmode=require", cluster.url());
        assert_eq!(psql(&url, SSL_IN_USE).await?, Ok("t".to_owned()));
        let info = conninfo(&cluster, "127.0.0.1", "postgres", "sslmode=require");
        assert_eq!(psql(&info, SSL_IN_USE).await?, Ok("t".to_owned()));
        // libpq's default, prefer, ends up encrypted too.
        let info = conninfo(&cluster, "127.0.0.1", "postgres", "");
        assert_eq!(psql(&info, SSL_IN_USE).await?, Ok("t".to_owned()));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_accepts_the_kit_ca_and_rejects_another() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = tls_cluster().await?;
        let tls = cluster.tls().expect("a TLS cluster has TLS files");
        let ca = tls.ca_cert().display().to_string();
        for host in ["localhost", "127.0.0.1"] {
            let info = conninfo(
                &cluster,
                host,
                "postgres",
                &format!("sslmode=verify-full sslrootcert={ca}"),
            );
            assert_eq!(
                psql(&info, SSL_IN_USE).await?,
                Ok("t".to_owned()),
                "verify-full with host {host}"
            );
        }

        let untrusted = tls.untrusted_ca_cert().display().to_string();
        for mode in ["verify-ca", "verify-full"] {
            let info = conninfo(
                &cluster,
                "localhost",
                "postgres",
                &format!("sslmode={mode} sslrootcert={untrusted}"),
            );
            let err = psql(&info, "SELECT 1")
                .await?
                .expect_err("an untrusted CA must fail verification");
            assert!(err.contains("certificate verify failed"), "{mode}: {err}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_plain_text_is_refused() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = tls_cluster().await?;
        let info = conninfo(&cluster, "127.0.0.1", "postgres", "sslmode=disable");
        let err = psql(&info, "SELECT 1")
            .await?
            .expect_err("plain text must be refused");
        assert!(
            err.contains("pg_hba.conf") && err.contains("no encryption"),
            "{err}"
        );
        // tokio-postgres without TLS is refused the same way.
        let refused = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
            .await
            .err()
            .expect("a plain-text tokio-postgres connect must fail");
        let db = refused.as_db_error().expect("the server refuses it");
        assert_eq!(
            db.code(),
            &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        );
        assert!(db.message().contains("no encryption"), "{}", db.message());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificate_role_needs_its_certificate() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = tls_cluster().await?;
        let tls = cluster.tls().expect("a TLS cluster has TLS files");
        assert_eq!(tls.client_cert_role(), CLIENT_CERT_ROLE);
        let with_cert = conninfo(
            &cluster,
            "localhost",
            CLIENT_CERT_ROLE,
            &format!(
                "sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
                tls.ca_cert().display(),
                tls.client_cert().display(),
                tls.client_key().display()
            ),
        );
        assert_eq!(
            psql(&with_cert, "SELECT current_user || ' ' || ssl::text || ' ' || client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await?,
            Ok(format!("{CLIENT_CERT_ROLE} true /CN={CLIENT_CERT_ROLE}"))
        );

        let without = conninfo(&cluster, "127.0.0.1", CLIENT_CERT_ROLE, "sslmode=require");
        let err = psql(&without, "SELECT 1")
            .await?
            .expect_err("the certificate role must be refused without a certificate");
        assert!(err.contains("requires a valid client certificate"), "{err}");
        // Other roles are trusted over TLS without a certificate.
        let info = conninfo(&cluster, "127.0.0.1", "postgres", "sslmode=require");
        assert_eq!(psql(&info, "SELECT current_user").await?, Ok("postgres".to_owned()));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_have_safe_modes_and_owners() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = tls_cluster().await?;
        let tls = cluster.tls().expect("a TLS cluster has TLS files");
        let owner = binaries::server_user()?.map(|user| user.uid);
        for (path, mode) in [
            (tls.client_key().to_path_buf(), 0o600),
            (cluster.data_dir().join("server.key"), 0o600),
            (tls.ca_cert().to_path_buf(), 0o644),
            (tls.untrusted_ca_cert().to_path_buf(), 0o644),
            (tls.client_cert().to_path_buf(), 0o644),
            (cluster.data_dir().join("server.crt"), 0o644),
            (cluster.data_dir().join("root.crt"), 0o644),
        ] {
            let meta = std::fs::metadata(&path)?;
            assert_eq!(
                meta.permissions().mode() & 0o777,
                mode,
                "{}",
                path.display()
            );
            if let Some(uid) = owner {
                assert_eq!(
                    meta.uid(),
                    uid,
                    "{} belongs to the server user",
                    path.display()
                );
            }
            assert!(std::fs::read_to_string(&path)?.starts_with("-----BEGIN "));
        }
        // The files are made per cluster, never shared between clusters.
        let other = tls_cluster().await?;
        let other_tls = other.tls().expect("TLS files");
        assert_ne!(
            std::fs::read(tls.ca_cert())?,
            std::fs::read(other_tls.ca_cert())?
        );
        let plain = PgCluster::start().await?;
        assert!(plain.tls().is_none());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_kit_helpers_work() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = tls_cluster().await?;
        let admin = cluster.admin().await?;
        admin
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .await?;
        cluster.alter_system("work_mem", "7MB").await?;

        let victim = cluster.connect("victim").await?;
        victim.query_one("SELECT 1", &[]).await?;
        assert_eq!(cluster.terminate_backends("victim").await?, 1);
        assert!(victim.query_one("SELECT 1", &[]).await.is_err());

        let tls_info = conninfo(&cluster, "127.0.0.1", "postgres", "sslmode=require");
        timeout(STEP, cluster.restart_fast()).await??;
        assert_eq!(
            psql(&tls_info, "SHOW work_mem").await?,
            Ok("7MB".to_owned())
        );
        timeout(STEP, cluster.kill()).await??;
        timeout(STEP, cluster.start_again()).await??;
        assert_eq!(psql(&tls_info, SSL_IN_USE).await?, Ok("t".to_owned()));
        let plain = conninfo(&cluster, "127.0.0.1", "postgres", "sslmode=disable");
        assert!(psql(&plain, "SELECT 1").await?.is_err(), "still TLS-only");

        assert_eq!(
            cluster
                .admin()
                .await?
                .query_one("SELECT count(*) FROM t", &[])
                .await?
                .get::<_, i64>(0),
            1
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_replica_is_tls_only_and_streams_over_tls() -> TestResult {
    init_tracing();
    bounded(async {
        let primary = tls_cluster().await?;
        let on_primary = primary.admin().await?;
        on_primary
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .await?;

        let replica = timeout(STEP, primary.create_replica()).await??;
        let tls = replica
            .tls()
            .expect("the replica of a TLS cluster is TLS-only");
        assert_eq!(tls.ca_cert(), primary.tls().expect("TLS files").ca_cert());
        on_primary.batch_execute("INSERT INTO t VALUES (2)").await?;
        timeout(STEP, replica.wait_replay_catch_up(&primary)).await??;

        // The standby's own connection to the primary is encrypted.
        let walsender_ssl: bool = on_primary
            .query_one(
                "SELECT ssl FROM pg_stat_ssl JOIN pg_stat_replication USING (pid)",
                &[],
            )
            .await?
            .get(0);
        assert!(walsender_ssl, "replication must run over TLS");

        let verified = conninfo(
            &replica,
            "localhost",
            "postgres",
            &format!(
                "sslmode=verify-full sslrootcert={}",
                tls.ca_cert().display()
            ),
        );
        assert_eq!(
            psql(&verified, "SELECT count(*) FROM t").await?,
            Ok("2".to_owned())
        );
        let plain = conninfo(&replica, "127.0.0.1", "postgres", "sslmode=disable");
        let err = psql(&plain, "SELECT 1")
            .await?
            .expect_err("TLS-only replica");
        assert!(err.contains("no encryption"), "{err}");

        // Switchover: the old primary follows the promoted replica over TLS.
        timeout(STEP, primary.stop_fast()).await??;
        timeout(STEP, replica.promote()).await??;
        replica
            .admin()
            .await?
            .batch_execute("INSERT INTO t VALUES (3)")
            .await?;
        timeout(STEP, primary.demote_to_standby_of(&replica)).await??;
        timeout(STEP, primary.wait_replay_catch_up(&replica)).await??;
        let streaming_ssl: bool = replica
            .admin()
            .await?
            .query_one(
                "SELECT ssl FROM pg_stat_ssl JOIN pg_stat_replication USING (pid)",
                &[],
            )
            .await?
            .get(0);
        assert!(streaming_ssl, "the demoted primary must stream over TLS");

        // The client files outlive the primary while a replica uses them.
        let tls_dir = tls.dir().to_path_buf();
        let primary_dir = primary.dir().to_path_buf();
        drop(primary);
        assert!(!primary_dir.exists());
        assert!(tls_dir.exists(), "the replica still needs its client files");
        drop(replica);
        assert!(
            !tls_dir.exists(),
            "the last cluster removes the client files"
        );
        Ok(())
    })
    .await
}

//! Bad input: a clear error, never a panic, never a secret in the message.

use std::time::{Duration, Instant};

use resilient_tx::{Db, ErrorKind, Policy, TxError};
use resilient_tx_testkit::pick_free_port;

#[tokio::test]
async fn malformed_url_is_a_config_error_without_the_password() {
    let error = Db::connect("postgres://app:s3cr3t-pw@db.example:notaport/app")
        .await
        .expect_err("malformed port");
    assert_eq!(error.kind(), ErrorKind::Config);
    let text = format!("{error} {error:?}");
    assert!(!text.contains("s3cr3t-pw"), "the password leaked: {text}");
    assert!(text.contains("invalid database URL"), "{text}");
}

#[tokio::test]
async fn building_needs_no_database_and_an_unreachable_host_is_unavailable() {
    let port = pick_free_port().expect("port");
    let url = format!("postgres://app:s3cr3t-pw@127.0.0.1:{port}/app");
    let db = Db::connect(&url).await.expect("building does not connect");

    let started = Instant::now();
    let policy = Policy::default().deadline(Duration::from_secs(2));
    let error = db
        .transaction(&policy, async |tx| tx.execute("SELECT 1", &[]).await)
        .await
        .expect_err("nothing listens there");

    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(
        error.to_string().contains("refused"),
        "names the cause: {error}"
    );
    // Connects that fail ran nothing: the call keeps waiting for the server (its
    // pool's prober tries, paced) until its deadline, not a moment longer.
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(5)).contains(&elapsed),
        "until the 2 s deadline: {elapsed:?}"
    );
    let text = format!("{error} {error:?}");
    assert!(!text.contains("s3cr3t-pw"), "the password leaked: {text}");
    let _: &TxError = &error;
}

#[tokio::test]
async fn malformed_urls_say_what_is_wrong() {
    for (url, detail) in [
        ("postgres://app@db.example:notaport/app", "port"),
        ("host=db user=app unknownoption=1", "unknownoption"),
        ("host=db sslmode=sometimes", "sslmode"),
        ("host='db user=app", "no closing quote"),
    ] {
        let error = Db::connect(url).await.expect_err(url);
        assert_eq!(error.kind(), ErrorKind::Config, "{url}: {error}");
        assert!(
            error.to_string().contains(detail),
            "{url}: the parser's detail ({detail}) is in the message: {error}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_host_is_named_with_its_port() {
    let port = pick_free_port().expect("port");
    let url = format!("postgres://app@127.0.0.1:{port}/app");
    let db = Db::connect(&url).await.expect("building does not connect");
    let policy = Policy::default().deadline(Duration::from_secs(1));
    let error = db
        .transaction(&policy, async |tx| tx.execute("SELECT 1", &[]).await)
        .await
        .expect_err("nothing listens there");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "host and port in the message: {error}"
    );
}

/// No `Debug` or `Display` of a public type shows the password, in any way a URL can
/// carry it.
#[tokio::test]
async fn no_debug_or_display_of_any_public_type_shows_the_password() {
    let port = pick_free_port().expect("port");
    for url in [
        format!("postgres://app:s3cr3t-pw@127.0.0.1:{port}/app"),
        format!("postgres://app@127.0.0.1:{port}/app?password=s3cr3t-pw"),
        format!("host=127.0.0.1 port={port} user=app password=s3cr3t-pw dbname=app"),
        format!("host=127.0.0.1 port={port} user=app password='s3cr3t-pw' dbname=app"),
    ] {
        let builder = Db::builder(&url)
            .read_replica(url.clone())
            .pool_timeout(Duration::from_millis(500));
        let builder_debug = format!("{builder:?}");
        assert!(
            builder_debug.contains(&format!("127.0.0.1:{port}")),
            "Debug shows where it points: {builder_debug}"
        );
        let db = builder.build().await.expect("builds");
        let policy = Policy::default().deadline(Duration::from_secs(1));
        let error = db
            .transaction(&policy, async |tx| tx.execute("SELECT 1", &[]).await)
            .await
            .expect_err("nothing listens there");
        let health = db.health().await;
        let texts = [
            builder_debug,
            format!("{db:?}"),
            format!("{:?}", db.primary_only()),
            format!("{error} {error:?}"),
            format!("{health:?}"),
            format!("{:?} {:?}", db.pool_status(), db.metrics()),
            format!("{:?} {:?}", db.policy(), db.commit_verification()),
            format!("{}", error.kind()),
        ];
        for text in texts {
            assert!(
                !text.contains("s3cr3t-pw"),
                "{url}: the password leaked: {text}"
            );
        }
    }
}

/// A server that asks `pw_user` for a password (scram), whatever else it trusts.
async fn password_cluster() -> resilient_tx_testkit::PgCluster {
    let cluster = crate::common::cluster().await;
    crate::common::exec(&cluster, "CREATE ROLE pw_user LOGIN PASSWORD 'right-pw'").await;
    let hba = cluster.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(
        &hba,
        format!("host all pw_user 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .expect("rewrite pg_hba.conf");
    cluster.reload_config().await.expect("reload");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_password_ends_the_call_at_once_with_a_sentence() {
    let cluster = password_cluster().await;
    let port = cluster.port();
    let policy = Policy::default().deadline(Duration::from_secs(20));
    for (password, kind, says) in [
        (
            "",
            ErrorKind::Config,
            "asks for a password and the database URL gives none",
        ),
        (
            ":wr0ng-pw",
            ErrorKind::Database,
            "password authentication failed",
        ),
    ] {
        let url = format!("postgres://pw_user{password}@127.0.0.1:{port}/postgres");
        let db = Db::connect(&url).await.expect("builds");
        let started = Instant::now();
        let error = db
            .transaction(&policy, async |tx| tx.execute("SELECT 1", &[]).await)
            .await
            .expect_err("refused");
        assert_eq!(error.kind(), kind, "{error}");
        assert!(error.to_string().contains(says), "{error}");
        assert!(
            error.to_string().contains(&format!("127.0.0.1:{port}")),
            "names host and port: {error}"
        );
        assert_eq!(error.attempts(), 1, "not retried: {error:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "at once");
        assert!(!format!("{error:?}").contains("wr0ng-pw"), "{error:?}");
    }
    let url = format!("postgres://pw_user:right-pw@127.0.0.1:{port}/postgres");
    let db = Db::connect(&url).await.expect("builds");
    db.transaction(&policy, async |tx| tx.execute("SELECT 1", &[]).await)
        .await
        .expect("the right password connects");
}

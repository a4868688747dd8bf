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
    assert!(error.attempts() > 1, "retried: {error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = format!("{error} {error:?}");
    assert!(!text.contains("s3cr3t-pw"), "the password leaked: {text}");
    let _: &TxError = &error;
}

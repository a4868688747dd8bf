//! Shared set-up: a server per test, and a `Db` on it.

use std::time::Duration;

use resilient_tx::Db;
use resilient_tx_testkit::{PgCluster, init_tracing};

/// A fresh server for one test.
pub async fn cluster() -> PgCluster {
    init_tracing();
    PgCluster::start().await.expect("start a PostgreSQL server")
}

/// `url` with an `application_name`, so a test can find (and kill) the app's backends.
pub fn with_app_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// A `Db` with test-sized timeouts.
pub async fn db(url: &str) -> Db {
    Db::builder(url)
        .pool_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("a valid configuration")
}

/// Runs set-up SQL on the server.
pub async fn exec(cluster: &PgCluster, sql: &str) {
    let admin = cluster.admin().await.expect("admin connection");
    admin.batch_execute(sql).await.expect("set-up SQL");
}

/// One number from the server.
pub async fn scalar(cluster: &PgCluster, sql: &str) -> i64 {
    let admin = cluster.admin().await.expect("admin connection");
    admin.query_one(sql, &[]).await.expect("query").get(0)
}

/// Waits until the backend of `app` is executing COMMIT.
pub async fn until_committing(cluster: &PgCluster, app: &str) {
    let admin = cluster.admin().await.expect("admin");
    for _ in 0..500 {
        let committing: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND state = 'active' AND query = 'COMMIT'",
                &[&app],
            )
            .await
            .expect("activity")
            .get(0);
        if committing > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the call never reached COMMIT");
}

/// Makes COMMIT take `seconds` (a deferred trigger on `table` sleeps) when the
/// transaction set `app.slow_commit`, so a test can strike while COMMIT is in flight.
pub async fn slow_commit_on(cluster: &PgCluster, table: &str, seconds: u32) {
    exec(
        cluster,
        &format!(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF current_setting('app.slow_commit', true) = 'on' THEN PERFORM pg_sleep({seconds}); END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON {table}
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();"
        ),
    )
    .await;
}

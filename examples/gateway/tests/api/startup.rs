//! Starting: with the database down, without a database URL, with a refused login.

use axum::Router;
use resilient_tx_testkit::{PgCluster, init_tracing};
use serde_json::json;

use crate::app::{App, test_config, within};

/// The gateway must start while its database is down, and create its schema when the
/// database appears, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_the_database_is_down_and_migrates_when_it_comes_back() {
    within(async {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        cluster
            .stop_fast()
            .await
            .expect("stop it before the gateway starts");
        // Started exactly as in production: `serve` does not wait for the database.
        let app = App::serve(cluster, Router::new()).await;

        let ready = app.get("/health/ready").await;
        ready.assert_error(503, "database_unavailable");
        assert!(ready.retry_after().is_some(), "{ready:?}");
        let list = app.get("/api/servers").await;
        list.assert_error(503, "database_unavailable");
        assert!(list.retry_after().is_some_and(|s| s > 0), "{list:?}");
        let status = app.get("/health/status").await;
        assert_eq!(status.status, 200);
        assert_eq!(status.body["schema_ready"], false, "{status:?}");

        app.cluster.start_again().await.expect("start the database");
        let created = app
            .post(
                "/api/servers",
                json!({ "name": "first", "url": "http://a" }),
            )
            .await;
        assert_eq!(
            created.status, 201,
            "the schema was created on demand: {created:?}"
        );
        assert_eq!(app.get("/health/ready").await.status, 200);
        let status = app.get("/health/status").await;
        assert_eq!(status.body["schema_ready"], true, "{status:?}");
        app.finish().await;
    })
    .await;
}

/// Without the `local-db` feature a configuration without a database is refused with
/// a sentence that says what to set, before anything is started.
#[cfg(not(feature = "local-db"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_url_the_gateway_says_what_to_set() {
    let mut config = test_config("postgres://unused");
    config.database_url = None;
    let error = gateway::serve(config).await.expect_err("no database");
    let message = error.to_string();
    for named in ["DATABASE_URL", "GATEWAY_TOKEN", "--features local-db"] {
        assert!(message.contains(named), "{message}");
    }
}

/// With the `local-db` feature a configuration without a database starts a throwaway
/// local server, generates a token, serves on it, and removes the server on shutdown.
#[cfg(feature = "local-db")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_url_a_throwaway_server_is_started() {
    within(async {
        init_tracing();
        let mut config = test_config("postgres://unused");
        config.database_url = None;
        config.token = None;
        let server = gateway::serve(config)
            .await
            .expect("start on a throwaway server");
        assert!(server.local_database_url().is_some());
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client");
        let list = http
            .get(format!("{}/api/servers", server.url()))
            .bearer_auth(server.token())
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(list.status().as_u16(), 200);
        server.shutdown().await.expect("clean shutdown");
    })
    .await;
}

/// The database refuses the gateway's login: clients get 503 (the service, not the
/// request, is at fault), and the unauthenticated readiness probe says so without
/// naming the database user or quoting the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_503_and_the_health_probe_names_no_user() {
    within(async {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        let admin = cluster.admin().await.expect("admin");
        admin
            .batch_execute("CREATE ROLE gw_login LOGIN PASSWORD 'right-pw'")
            .await
            .expect("role");
        let hba = cluster.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all gw_login 127.0.0.1/32 scram-sha-256\n{rules}"),
        )
        .expect("rewrite pg_hba.conf");
        cluster.reload_config().await.expect("reload");
        let url = format!(
            "postgres://gw_login:wr0ng-pw@127.0.0.1:{}/postgres",
            cluster.port()
        );
        let app = App::serve_config(cluster, test_config(&url), Router::new()).await;
        let list = app.get("/api/servers").await;
        list.assert_error(503, "database_unavailable");
        assert!(list.retry_after().is_some(), "{list:?}");
        let ready = app.send(app.http.get(app.url("/health/ready"))).await;
        ready.assert_error(503, "database_unavailable");
        let text = ready.body.to_string();
        for secret in ["gw_login", "password authentication", "wr0ng-pw"] {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
        app.finish().await;
    })
    .await;
}

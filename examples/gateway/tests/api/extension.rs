//! Routes added with `serve_with`, and what the health probes say while they hold the pool.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use gateway::AppState;
use gateway::errors::ApiError;
use resilient_tx_testkit::{PgCluster, init_tracing};
use serde_json::{Value, json};

use crate::app::{App, names, test_config, within};

/// `GET /api/count`: how many servers are registered, read like the gateway's own
/// reads (schema first, `Consistency` honoured).
async fn count_servers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<String, ApiError> {
    let db = state.reader(&headers, None)?;
    state.ensure_schema().await?;
    let servers = gateway::store::list_servers(&db, None).await?;
    Ok(servers.len().to_string())
}

/// Routes added with `serve_with` are served under `/api`, behind the token, with the
/// gateway's `Db` and error answers; the gateway's own routes are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_adds_routes_under_api_behind_the_token() {
    within(async {
        let app = App::start_with(Router::new().route("/count", get(count_servers))).await;
        app.send(app.http.get(app.url("/api/count")))
            .await
            .assert_error(401, "unauthorized");
        app.create("alpha", "http://a").await;
        let count = app
            .send(app.request(reqwest::Method::GET, "/api/count"))
            .await;
        assert_eq!((count.status, &count.body), (200, &json!(1)), "{count:?}");
        app.send(
            app.request(reqwest::Method::GET, "/api/count")
                .header("Consistency", "maybe"),
        )
        .await
        .assert_error(400, "invalid_request");
        app.send(app.request(reqwest::Method::DELETE, "/api/count"))
            .await
            .assert_error(405, "method_not_allowed");
        app.get("/api/counts").await.assert_error(404, "not_found");
        assert_eq!(names(&app.get("/api/servers").await.body), ["alpha"]);
        app.finish().await;
    })
    .await;
}

/// The routes the resilience suite adds are not part of the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_test_routes_are_served() {
    within(async {
        let app = App::start().await;
        app.post("/api/test/sleep", json!({ "seconds": 0.1 }))
            .await
            .assert_error(404, "not_found");
        app.get("/api/test/accounts")
            .await
            .assert_error(404, "not_found");
        app.finish().await;
    })
    .await;
}

/// `GET /api/slow`: holds one of the gateway's connections for two seconds.
async fn hold_a_connection(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let policy = resilient_tx::Policy::default();
    state
        .db()
        .transaction_boxed(&policy, |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_sleep(2)", &[]).await?;
                Ok::<_, resilient_tx::TxError>(())
            })
        })
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(json!("held")))
}

/// Every pooled connection busy is not "database down": `/health/ready` stays 200 and
/// says the pool is saturated, so a load balancer keeps an instance that is only busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_is_still_ready_and_says_it_is_saturated() {
    within(async {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        let mut config = test_config(&cluster.url());
        config.pool.min_idle = 0;
        config.pool.max_size = 2;
        let app = App::serve_config(
            cluster,
            config,
            Router::new().route("/slow", get(hold_a_connection)),
        )
        .await;
        let ready = app.send(app.http.get(app.url("/health/ready"))).await;
        assert_eq!(ready.status, 200, "{ready:?}");
        let slow = || app.send(app.request(reqwest::Method::GET, "/api/slow"));
        let probe = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            app.send(app.http.get(app.url("/health/ready"))).await
        };
        let (a, b, ready) = tokio::join!(slow(), slow(), probe);
        assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
        assert_eq!(ready.status, 200, "busy, not down: {ready:?}");
        assert_eq!(ready.body["saturated"], json!(true), "{ready:?}");
        app.finish().await;
    })
    .await;
}

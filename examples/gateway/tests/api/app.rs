//! The gateway in-process in front of a fresh PostgreSQL server, and an HTTP client
//! that speaks to it.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use gateway::{AppState, Config, Server};
use resilient_tx_testkit::{PgCluster, init_tracing};
use serde_json::{Value, json};

pub(crate) const TOKEN: &str = "test-token-0123456789";

/// No test may run longer than this, whatever the server does.
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Per-call deadline of the gateway under test: short, so outages answer quickly.
pub(crate) const DEADLINE: Duration = Duration::from_secs(4);

/// A PostgreSQL server, the gateway in-process on a free port, and an HTTP client.
pub(crate) struct App {
    // Declared first so it is dropped (and stops serving) before the database.
    pub(crate) server: Server,
    pub(crate) cluster: PgCluster,
    pub(crate) http: reqwest::Client,
}

/// What came back from one request.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    /// The `error.code` of an error body.
    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    /// Asserts an error answer's status, code and body shape.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer: {self:?}"
        );
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error carries a message: {self:?}"
        );
        assert!(
            error["retryable"].is_boolean(),
            "an error says whether it is retryable: {self:?}"
        );
    }

    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// Gateway settings for tests: loopback, any port, short timeouts.
pub(crate) fn test_config(url: &str) -> Config {
    let mut config = Config::new(url, TOKEN);
    config.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.pool.pool_timeout = Duration::from_secs(2);
    config.pool.connect_timeout = Duration::from_secs(1);
    config.statement_timeout = Some(Duration::from_secs(2));
    config.deadline = DEADLINE;
    config.application_name = "gateway-test".to_owned();
    config
}

/// Runs a test body, failing it if it takes longer than [`TEST_LIMIT`].
pub(crate) async fn within<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("the test finished within its time limit")
}

impl App {
    /// A fresh PostgreSQL server with the gateway in front of it.
    pub(crate) async fn start() -> App {
        App::start_with(Router::new()).await
    }

    /// [`App::start`], with `routes` added under `/api`.
    pub(crate) async fn start_with(routes: Router<AppState>) -> App {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        App::serve(cluster, routes).await
    }

    /// The gateway in front of `cluster`, which may be stopped.
    pub(crate) async fn serve(cluster: PgCluster, routes: Router<AppState>) -> App {
        let config = test_config(&cluster.url());
        App::serve_config(cluster, config, routes).await
    }

    /// The gateway with `config`, in front of `cluster`.
    pub(crate) async fn serve_config(
        cluster: PgCluster,
        config: Config,
        routes: Router<AppState>,
    ) -> App {
        let server = gateway::serve_with(config, routes)
            .await
            .expect("start the gateway");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .expect("HTTP client");
        App {
            server,
            cluster,
            http,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// A request with the right token.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub(crate) async fn create(&self, name: &str, url: &str) -> Value {
        let reply = self
            .post("/api/servers", json!({ "name": name, "url": url }))
            .await;
        assert_eq!(reply.status, 201, "create {name}: {reply:?}");
        reply.body
    }

    /// A number from the database, read behind the gateway's back.
    pub(crate) async fn scalar(&self, sql: &str) -> i64 {
        let admin = self.cluster.admin().await.expect("admin connection");
        admin.query_one(sql, &[]).await.expect("query").get(0)
    }

    pub(crate) async fn finish(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

pub(crate) fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|server| server["name"].as_str().expect("a name"))
        .collect()
}

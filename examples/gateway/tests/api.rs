//! The gateway over real HTTP against a real PostgreSQL server: authentication, the
//! CRUD routes and their error codes, idempotent creates, a start while the database
//! is down, read-your-writes, routes added with `serve_with`, and a configuration
//! without a database. The resilience matrix's thirteen cases are in the `resilience`
//! crate (`examples/resilience`).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use gateway::errors::ApiError;
use gateway::{AppState, Config, Server};
use resilient_tx_testkit::{PgCluster, init_tracing};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789";

/// No test may run longer than this, whatever the server does.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Per-call deadline of the gateway under test: short, so outages answer quickly.
const DEADLINE: Duration = Duration::from_secs(4);

/// A PostgreSQL server, the gateway in-process on a free port, and an HTTP client.
struct App {
    // Declared first so it is dropped (and stops serving) before the database.
    server: Server,
    cluster: PgCluster,
    http: reqwest::Client,
}

/// What came back from one request.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    /// The `error.code` of an error body.
    fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    /// Asserts an error answer's status, code and body shape.
    fn assert_error(&self, status: u16, code: &str) {
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

    fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// Gateway settings for tests: loopback, any port, short timeouts.
fn test_config(url: &str) -> Config {
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
async fn within<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("the test finished within its time limit")
}

impl App {
    /// A fresh PostgreSQL server with the gateway in front of it.
    async fn start() -> App {
        App::start_with(Router::new()).await
    }

    /// [`App::start`], with `routes` added under `/api`.
    async fn start_with(routes: Router<AppState>) -> App {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        App::serve(cluster, routes).await
    }

    /// The gateway in front of `cluster`, which may be stopped.
    async fn serve(cluster: PgCluster, routes: Router<AppState>) -> App {
        let config = test_config(&cluster.url());
        App::serve_config(cluster, config, routes).await
    }

    /// The gateway with `config`, in front of `cluster`.
    async fn serve_config(cluster: PgCluster, config: Config, routes: Router<AppState>) -> App {
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// A request with the right token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
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

    async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn create(&self, name: &str, url: &str) -> Value {
        let reply = self
            .post("/api/servers", json!({ "name": name, "url": url }))
            .await;
        assert_eq!(reply.status, 201, "create {name}: {reply:?}");
        reply.body
    }

    /// A number from the database, read behind the gateway's back.
    async fn scalar(&self, sql: &str) -> i64 {
        let admin = self.cluster.admin().await.expect("admin connection");
        admin.query_one(sql, &[]).await.expect("query").get(0)
    }

    async fn finish(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|server| server["name"].as_str().expect("a name"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_or_with_a_wrong_token_get_401() {
    within(async {
        let app = App::start().await;

        let anonymous = app.send(app.http.get(app.url("/api/servers"))).await;
        anonymous.assert_error(401, "unauthorized");
        assert_eq!(anonymous.body["error"]["retryable"], false);
        assert_eq!(
            anonymous
                .headers
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );

        let wrong = app
            .send(
                app.http
                    .get(app.url("/api/servers"))
                    .bearer_auth("test-token-0123456788"),
            )
            .await;
        wrong.assert_error(401, "unauthorized");

        let wrong_scheme = app
            .send(
                app.http
                    .get(app.url("/api/servers"))
                    .basic_auth("user", Some(TOKEN)),
            )
            .await;
        wrong_scheme.assert_error(401, "unauthorized");

        let sneaky_create = app
            .send(
                app.http
                    .post(app.url("/api/servers"))
                    .bearer_auth("wrong")
                    .json(&json!({ "name": "intruder", "url": "http://x" })),
            )
            .await;
        sneaky_create.assert_error(401, "unauthorized");

        // The right token gets through, and the refused create left nothing behind.
        let list = app.get("/api/servers").await;
        assert_eq!(list.status, 200, "{list:?}");
        assert_eq!(list.body, json!([]));

        // Probes are open: orchestrators do not hold the token.
        let live = app.send(app.http.get(app.url("/health/live"))).await;
        assert_eq!(live.status, 200);
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_round_trip() {
    within(async {
        let app = App::start().await;

        let created = app
            .post(
                "/api/servers",
                json!({ "name": "alpha", "url": "http://10.0.0.1:8080" }),
            )
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        let id = created.body["id"].as_i64().expect("an id");
        assert_eq!(
            created
                .headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some(format!("/api/servers/{id}").as_str())
        );
        assert_eq!(created.body["name"], "alpha");
        assert_eq!(created.body["url"], "http://10.0.0.1:8080");
        let created_at = created.body["created_at"].as_str().expect("created_at");
        assert!(
            created_at.len() == "2024-01-02T03:04:05.123456Z".len() && created_at.ends_with('Z'),
            "RFC 3339 in UTC: {created_at}"
        );

        let fetched = app.get(&format!("/api/servers/{id}")).await;
        assert_eq!(fetched.status, 200);
        assert_eq!(
            fetched.body, created.body,
            "get returns what create returned"
        );

        let replaced = app
            .send(
                app.request(reqwest::Method::PUT, &format!("/api/servers/{id}"))
                    .json(&json!({ "name": "alpha-2", "url": "https://b.example" })),
            )
            .await;
        assert_eq!(replaced.status, 200, "{replaced:?}");
        assert_eq!(replaced.body["id"], id);
        assert_eq!(replaced.body["name"], "alpha-2");
        assert_eq!(replaced.body["url"], "https://b.example");
        assert_eq!(replaced.body["created_at"], created_at);
        assert!(
            replaced.body["updated_at"].as_str() >= Some(created_at),
            "updated_at moves forward: {replaced:?}"
        );

        let patched = app
            .send(
                app.request(reqwest::Method::PATCH, &format!("/api/servers/{id}"))
                    .json(&json!({ "url": "http://c.example" })),
            )
            .await;
        assert_eq!(patched.status, 200, "{patched:?}");
        assert_eq!(
            patched.body["name"], "alpha-2",
            "a patch keeps what it omits"
        );
        assert_eq!(patched.body["url"], "http://c.example");

        let list = app.get("/api/servers").await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body, json!([patched.body]));

        let deleted = app
            .send(app.request(reqwest::Method::DELETE, &format!("/api/servers/{id}")))
            .await;
        assert_eq!(deleted.status, 204, "{deleted:?}");
        app.get(&format!("/api/servers/{id}"))
            .await
            .assert_error(404, "not_found");
        app.send(app.request(reqwest::Method::DELETE, &format!("/api/servers/{id}")))
            .await
            .assert_error(404, "not_found");
        assert_eq!(app.scalar("SELECT count(*) FROM servers").await, 0);
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_filter_lists_only_the_named_server() {
    within(async {
        let app = App::start().await;
        for name in ["alpha", "beta", "gamma", "delta one"] {
            app.create(name, "http://h").await;
        }

        let all = app.get("/api/servers").await;
        assert_eq!(names(&all.body), ["alpha", "beta", "gamma", "delta one"]);

        let beta = app.get("/api/servers?name=beta").await;
        assert_eq!(beta.status, 200);
        assert_eq!(names(&beta.body), ["beta"]);

        let spaced = app.get("/api/servers?name=delta%20one").await;
        assert_eq!(names(&spaced.body), ["delta one"]);

        let none = app.get("/api/servers?name=zeta").await;
        assert_eq!(none.status, 200);
        assert_eq!(none.body, json!([]));

        // Exact match, not a prefix or pattern.
        let prefix = app.get("/api/servers?name=alp").await;
        assert_eq!(prefix.body, json!([]));
        let pattern = app.get("/api/servers?name=%25").await;
        assert_eq!(pattern.body, json!([]));
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_name_is_409_conflict() {
    within(async {
        let app = App::start().await;
        app.create("alpha", "http://a").await;
        let other = app.create("beta", "http://b").await;

        let duplicate = app
            .post(
                "/api/servers",
                json!({ "name": "alpha", "url": "http://other" }),
            )
            .await;
        duplicate.assert_error(409, "conflict");
        assert_eq!(
            duplicate.body["error"]["retryable"], false,
            "repeating it cannot help"
        );

        // Renaming onto a taken name is the same conflict.
        let rename = app
            .send(
                app.request(
                    reqwest::Method::PATCH,
                    &format!("/api/servers/{}", other["id"]),
                )
                .json(&json!({ "name": "alpha" })),
            )
            .await;
        rename.assert_error(409, "conflict");

        assert_eq!(
            app.scalar("SELECT count(*) FROM servers WHERE name = 'alpha'")
                .await,
            1
        );
        assert_eq!(
            app.scalar("SELECT count(*) FROM servers WHERE name = 'beta'")
                .await,
            1,
            "the failed rename changed nothing"
        );
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_routes_are_404_not_found() {
    within(async {
        let app = App::start().await;
        app.get("/api/servers/424242")
            .await
            .assert_error(404, "not_found");
        app.send(
            app.request(reqwest::Method::PUT, "/api/servers/424242")
                .json(&json!({ "name": "x", "url": "http://x" })),
        )
        .await
        .assert_error(404, "not_found");
        app.send(
            app.request(reqwest::Method::PATCH, "/api/servers/424242")
                .json(&json!({ "url": "http://x" })),
        )
        .await
        .assert_error(404, "not_found");
        app.send(app.request(reqwest::Method::DELETE, "/api/servers/424242"))
            .await
            .assert_error(404, "not_found");
        app.get("/api/nothing-here")
            .await
            .assert_error(404, "not_found");
        app.send(app.request(reqwest::Method::DELETE, "/api/servers"))
            .await
            .assert_error(405, "method_not_allowed");
        assert_eq!(
            app.scalar("SELECT count(*) FROM servers").await,
            0,
            "the PUT to an unknown id created nothing"
        );
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_invalid_request() {
    within(async {
        let app = App::start().await;
        let post_raw = |body: &'static str| {
            app.request(reqwest::Method::POST, "/api/servers")
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        };

        app.send(post_raw("{not json"))
            .await
            .assert_error(400, "invalid_request");
        app.send(post_raw(r#"{"name":"a"}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(post_raw(r#"{"name":"a","url":"http://a","extra":1}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(post_raw(r#"{"name":"a","url":"ftp://a"}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(post_raw(r#"{"name":"","url":"http://a"}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(
            app.request(reqwest::Method::POST, "/api/servers")
                .body(r#"{"name":"a","url":"http://a"}"#),
        )
        .await
        .assert_error(415, "invalid_request");
        app.get("/api/servers/not-a-number")
            .await
            .assert_error(400, "invalid_request");
        app.send(
            app.request(reqwest::Method::PATCH, "/api/servers/1")
                .json(&json!({})),
        )
        .await
        .assert_error(422, "invalid_request");

        let list = app.get("/api/servers").await;
        assert_eq!(list.body, json!([]), "nothing invalid was stored");
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_returns_the_first_result_and_one_row() {
    within(async {
        let app = App::start().await;
        let keyed = |key: &str, name: &str| {
            app.request(reqwest::Method::POST, "/api/servers")
                .header("Idempotency-Key", key)
                .json(&json!({ "name": name, "url": "http://a" }))
        };

        let first = app.send(keyed("req-1", "alpha")).await;
        assert_eq!(first.status, 201, "{first:?}");
        let retry = app.send(keyed("req-1", "alpha")).await;
        assert_eq!(retry.status, 201, "a client retry succeeds: {retry:?}");
        assert_eq!(retry.body, first.body, "and returns the first result");

        // Without the key the same body is a second create, refused on the name.
        app.send(keyed("req-2", "alpha"))
            .await
            .assert_error(409, "conflict");

        assert_eq!(
            app.scalar("SELECT count(*) FROM servers").await,
            1,
            "only one row"
        );
        assert_eq!(
            app.server.db().metrics().stored_results_returned,
            1,
            "the retry was answered from the stored result"
        );

        app.send(
            app.request(reqwest::Method::POST, "/api/servers")
                .header("Idempotency-Key", "")
                .json(&json!({ "name": "beta", "url": "http://b" })),
        )
        .await
        .assert_error(400, "invalid_request");
        app.finish().await;
    })
    .await;
}

/// A key stands for one request: sent again with another body it is refused with 422
/// `idempotency_key_reused` (nothing is created); with the same body it still gets the
/// first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_with_another_body_is_422_idempotency_key_reused() {
    within(async {
        let app = App::start().await;
        let keyed = |key: &str, body: Value| {
            app.request(reqwest::Method::POST, "/api/servers")
                .header("Idempotency-Key", key)
                .json(&body)
        };

        let first = app
            .send(keyed(
                "req-1",
                json!({ "name": "alpha", "url": "http://a" }),
            ))
            .await;
        assert_eq!(first.status, 201, "{first:?}");
        let other = app
            .send(keyed(
                "req-1",
                json!({ "name": "alpha", "url": "http://b" }),
            ))
            .await;
        other.assert_error(422, "idempotency_key_reused");
        assert_eq!(other.body["error"]["retryable"], json!(false), "{other:?}");
        assert_eq!(other.retry_after(), None, "not to be retried as it is");
        let same = app
            .send(keyed(
                "req-1",
                json!({ "name": "alpha", "url": "http://a" }),
            ))
            .await;
        assert_eq!(same.status, 201, "{same:?}");
        assert_eq!(same.body, first.body, "the first answer");
        assert_eq!(
            app.scalar("SELECT count(*) FROM servers").await,
            1,
            "only the first request created anything"
        );
        app.finish().await;
    })
    .await;
}

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

/// Without a replica every read is strong; the option is still validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_is_strong_or_eventual() {
    within(async {
        let app = App::start().await;
        let created = app.create("alpha", "http://a").await;
        for path in [
            "/api/servers?consistency=strong".to_owned(),
            "/api/servers?name=alpha&consistency=eventual".to_owned(),
            format!("/api/servers/{}?consistency=strong", created["id"]),
        ] {
            let reply = app.get(&path).await;
            assert_eq!(reply.status, 200, "{path}: {reply:?}");
        }
        let header = app
            .send(
                app.request(reqwest::Method::GET, "/api/servers")
                    .header("Consistency", "Strong"),
            )
            .await;
        assert_eq!(header.status, 200, "{header:?}");
        assert_eq!(names(&header.body), ["alpha"]);
        app.get("/api/servers?consistency=sometimes")
            .await
            .assert_error(400, "invalid_request");
        app.send(
            app.request(reqwest::Method::GET, "/api/servers")
                .header("Consistency", "maybe"),
        )
        .await
        .assert_error(400, "invalid_request");
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

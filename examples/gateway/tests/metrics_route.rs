//! `GET /metrics` over real HTTP against a real PostgreSQL server: calls, a retried
//! serialization conflict, a stored idempotent result, killed pooled connections and
//! the pool gauges show up as Prometheus series with the documented names and labels;
//! a pool too small for the load shows in the gauges and as checkout timeouts; the
//! route needs the bearer token; two gateways in one process share one recorder.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use gateway::errors::ApiError;
use gateway::{AppState, Config, Server};
use resilient_tx::{Tx, TxError, retriable_tx};
use resilient_tx_testkit::{PgCluster, init_tracing};
use serde_json::{Value, json};

const TOKEN: &str = "metrics-token-0123456789";

/// `application_name` of the first gateway's connections.
const APPLICATION: &str = "gateway-metrics";

/// No test may run longer than this, whatever the server does.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The path of [`conflicts_once`], as its series name it.
const CONFLICTS_ONCE: &str = "metrics_route::conflicts_once";

/// Attempts of [`conflicts_once`] so far, in this process.
static CONFLICT_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// Fails its first attempt with a serialization failure (40001) raised by the server,
/// as a concurrent transaction would make it; the retry succeeds.
#[retriable_tx(isolation = serializable)]
async fn conflicts_once(tx: &mut Tx<'_>) -> Result<i64, TxError> {
    if CONFLICT_ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
        tx.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'staged conflict' \
             USING ERRCODE = 'serialization_failure'; END $$",
            &[],
        )
        .await?;
    }
    let row = tx.query_one("SELECT 1::int8", &[]).await?;
    Ok(row.get(0))
}

/// `POST /api/conflict`: runs [`conflicts_once`].
async fn conflict(State(state): State<AppState>) -> Result<Json<i64>, ApiError> {
    Ok(Json(conflicts_once(state.db()).await?))
}

/// Holds its connection for a few seconds.
#[retriable_tx]
async fn hold_a_connection(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.execute("SELECT pg_sleep(4)", &[]).await?;
    Ok(())
}

/// `POST /api/hold`: runs [`hold_a_connection`].
async fn hold(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    hold_a_connection(state.db()).await?;
    Ok(Json(json!("released")))
}

/// Runs a test body, failing it if it takes longer than [`TEST_LIMIT`].
async fn within<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("the test finished within its time limit")
}

/// Gateway settings for tests: loopback, any port, short timeouts.
fn test_config(url: &str, application_name: &str) -> Config {
    let mut config = Config::new(url, TOKEN);
    config.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.pool.pool_timeout = Duration::from_secs(2);
    config.pool.connect_timeout = Duration::from_secs(1);
    config.statement_timeout = Some(Duration::from_secs(2));
    config.deadline = Duration::from_secs(4);
    config.application_name = application_name.to_owned();
    config
}

async fn serve(config: Config) -> Server {
    let routes = Router::new()
        .route("/conflict", post(conflict))
        .route("/hold", post(hold));
    gateway::serve_with(config, routes)
        .await
        .expect("start the gateway")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("HTTP client")
}

/// Sends `request`; the status and the body as JSON (`Null` when empty).
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
    };
    (status, body)
}

/// One sample of a scrape: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed Prometheus text scrape.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("`series value`");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
                    None => (series, ""),
                };
                let labels = labels
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                        (key.to_owned(), value.trim_end_matches('"').to_owned())
                    })
                    .collect();
                Sample {
                    name: name.to_owned(),
                    labels,
                    value,
                }
            })
            .collect();
        Scrape { text, samples }
    }

    /// The samples of `name` whose labels include every pair of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
            })
            .collect()
    }

    /// The sum of those samples; 0 when there are none.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }

    /// The one sample of `name` with `labels` and no `error_type`: a success.
    fn successes(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .iter()
            .filter(|sample| !sample.labels.contains_key("error_type"))
            .map(|s| s.value)
            .sum()
    }

    fn assert_type(&self, name: &str, kind: &str) {
        let line = format!("# TYPE {name} {kind}");
        assert!(
            self.text.lines().any(|l| l == line),
            "no `{line}` in\n{}",
            self.text
        );
        let help = format!("# HELP {name} ");
        assert!(
            self.text.lines().any(|l| l.starts_with(&help)),
            "no help for {name}"
        );
    }
}

async fn scrape(http: &reqwest::Client, server: &Server) -> Scrape {
    let response = http
        .get(format!("{}/metrics", server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(response.text().await.expect("a body"))
}

fn function(name: &str) -> (&'static str, &str) {
    ("code_function_name", name)
}

const PRIMARY: (&str, &str) = ("db_client_connection_pool_name", "primary");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_retries_and_the_pool_are_scraped_as_prometheus_series() {
    within(async {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        let server = serve(test_config(&cluster.url(), APPLICATION)).await;
        let http = client();
        let api = |path: &str| format!("{}/api{path}", server.url());

        let create = |name: &str| {
            http.post(api("/servers"))
                .bearer_auth(TOKEN)
                .json(&json!({ "name": name, "url": format!("http://{name}") }))
        };
        assert_eq!(send(create("alpha")).await.0, 201);
        let first = send(create("beta").header("Idempotency-Key", "k-1")).await;
        let again = send(create("beta").header("Idempotency-Key", "k-1")).await;
        assert_eq!((first.0, again.0), (201, 201));
        assert_eq!(first.1["id"], again.1["id"], "the stored result");
        let conflicted = send(http.post(api("/conflict")).bearer_auth(TOKEN)).await;
        assert_eq!(conflicted, (200, json!(1)));

        // Kill every pooled connection: the next call replaces them at checkout (or,
        // if it meets one before its client noticed, retries on a fresh one).
        let killed = cluster
            .terminate_backends(APPLICATION)
            .await
            .expect("terminate");
        assert!(killed >= 1, "the pool had connections to kill");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = server.db().metrics();
        let listed = send(http.get(api("/servers")).bearer_auth(TOKEN)).await;
        assert_eq!(listed.0, 200, "{listed:?}");

        let scrape = scrape(&http, &server).await;
        let after = server.db().metrics();

        for (name, kind) in [
            ("db_client_operation_duration_seconds", "histogram"),
            ("resilient_tx_attempt_duration_seconds", "histogram"),
            ("resilient_tx_call_retries_total", "counter"),
            ("resilient_tx_call_stored_results_total", "counter"),
            ("db_client_connection_count", "gauge"),
            ("db_client_connection_max", "gauge"),
            ("db_client_connection_pending_requests", "gauge"),
            ("db_client_connection_create_time_seconds", "histogram"),
            ("db_client_connection_wait_time_seconds", "histogram"),
            ("resilient_tx_connection_opened_total", "counter"),
        ] {
            scrape.assert_type(name, kind);
        }
        for sample in &scrape.samples {
            assert_eq!(
                sample.labels.get("db_system_name").map(String::as_str),
                Some("postgresql"),
                "{sample:?}"
            );
        }

        // Calls, by function, and their outcome.
        let operations = "db_client_operation_duration_seconds_count";
        let create_server = function("gateway::store::create_server");
        let create_once = function("gateway::store::create_server_once");
        assert_eq!(scrape.successes(operations, &[create_server]), 1.0);
        assert_eq!(scrape.successes(operations, &[create_once]), 2.0);
        assert!(scrape.successes(operations, &[function("gateway::store::list_servers")]) >= 1.0);
        assert_eq!(
            scrape.sum("resilient_tx_call_stored_results_total", &[create_once]),
            1.0
        );

        // The conflict: one retry by its class, two attempts, one successful call.
        let conflicts = function(CONFLICTS_ONCE);
        assert_eq!(
            scrape.sum(
                "resilient_tx_call_retries_total",
                &[conflicts, ("error_type", "conflict")]
            ),
            1.0,
            "{}",
            scrape.text
        );
        let attempts = "resilient_tx_attempt_duration_seconds_count";
        assert_eq!(
            scrape.sum(attempts, &[conflicts, ("error_type", "conflict")]),
            1.0
        );
        assert_eq!(scrape.successes(attempts, &[conflicts]), 1.0);
        assert_eq!(scrape.successes(operations, &[conflicts]), 1.0);
        assert_eq!(scrape.sum(operations, &[conflicts]), 1.0, "no failed call");
        let buckets = scrape.find("db_client_operation_duration_seconds_bucket", &[conflicts]);
        assert!(
            buckets
                .iter()
                .any(|b| b.labels.get("le").map(String::as_str) == Some("+Inf") && b.value == 1.0),
            "a real histogram: {buckets:?}"
        );

        // The killed connections: each one found dead at checkout was replaced, or the
        // call met it and retried; the exported counts are the runtime's own.
        let stale = scrape.sum("resilient_tx_connection_stale_replaced_total", &[PRIMARY]);
        let lost = scrape.sum(
            "resilient_tx_call_retries_total",
            &[("error_type", "connection_lost")],
        );
        assert!(stale + lost >= 1.0, "{}", scrape.text);
        assert!(
            (before.stale_connections_replaced as f64..=after.stale_connections_replaced as f64)
                .contains(&stale),
            "{stale} vs {before:?} / {after:?}"
        );
        let opened = scrape.sum("resilient_tx_connection_opened_total", &[PRIMARY]);
        assert!(
            opened > killed as f64,
            "reconnected after the kill: {opened}"
        );
        assert!(
            (before.connections_opened as f64..=after.connections_opened as f64).contains(&opened)
        );
        assert_eq!(
            scrape.sum("db_client_connection_create_time_seconds_count", &[PRIMARY]),
            opened,
            "one connect time per connection opened"
        );
        assert!(scrape.sum("db_client_connection_wait_time_seconds_count", &[PRIMARY]) >= 6.0);

        // The gauges, sampled at the scrape.
        assert_eq!(scrape.sum("db_client_connection_max", &[PRIMARY]), 15.0);
        assert_eq!(
            scrape.sum("db_client_connection_pending_requests", &[PRIMARY]),
            0.0
        );
        let idle = scrape.find(
            "db_client_connection_count",
            &[PRIMARY, ("db_client_connection_state", "idle")],
        );
        let used = scrape.find(
            "db_client_connection_count",
            &[PRIMARY, ("db_client_connection_state", "used")],
        );
        assert_eq!((idle.len(), used.len()), (1, 1), "{}", scrape.text);
        assert!(idle[0].value >= 1.0, "the connections are back in the pool");

        // A second gateway in this process: no second recorder, one shared handle.
        // Both render the process's series; gauges add up by pool name.
        let mut config = test_config(&cluster.url(), "gateway-metrics-2");
        config.pool.min_idle = 1;
        config.pool.max_size = 3;
        let second = serve(config).await;
        let created = send(
            http.post(format!("{}/api/servers", second.url()))
                .bearer_auth(TOKEN)
                .json(&json!({ "name": "gamma", "url": "http://gamma" })),
        )
        .await;
        assert_eq!(created.0, 201, "{created:?}");
        for gateway in [&server, &second] {
            let scrape = self::scrape(&http, gateway).await;
            assert_eq!(scrape.successes(operations, &[create_server]), 2.0);
            assert_eq!(scrape.sum("db_client_connection_max", &[PRIMARY]), 18.0);
        }
        second.shutdown().await.expect("clean shutdown");
        server.shutdown().await.expect("clean shutdown");
        drop(cluster);
    })
    .await;
}

/// A pool too small for the load: the gauges show the connection in use and the
/// caller waiting for it, and the checkout that ran out of time is a timeout and a
/// `pool_exhausted` call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_too_small_shows_in_the_gauges_and_as_checkout_timeouts() {
    within(async {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        let mut config = test_config(&cluster.url(), APPLICATION);
        config.pool.min_idle = 0;
        config.pool.max_size = 1;
        config.pool.pool_timeout = Duration::from_secs(2);
        config.statement_timeout = Some(Duration::from_secs(10));
        config.deadline = Duration::from_secs(10);
        let server = serve(config).await;
        let http = client();
        let api = |path: &str| format!("{}/api{path}", server.url());
        let create = |name: &str| {
            http.post(api("/servers"))
                .bearer_auth(TOKEN)
                .json(&json!({ "name": name, "url": format!("http://{name}") }))
        };
        // The schema first, so that nothing but the calls below needs the connection.
        assert_eq!(send(create("alpha")).await.0, 201);

        let holder = tokio::spawn(send(http.post(api("/hold")).bearer_auth(TOKEN)));
        let gauge = |scrape: &Scrape, name: &str, state: Option<&str>| {
            let mut labels = vec![PRIMARY];
            if let Some(state) = state {
                labels.push(("db_client_connection_state", state));
            }
            scrape.sum(name, &labels)
        };
        loop {
            let scrape = scrape(&http, &server).await;
            if gauge(&scrape, "db_client_connection_count", Some("used")) == 1.0 {
                assert_eq!(
                    gauge(&scrape, "db_client_connection_count", Some("idle")),
                    0.0
                );
                assert_eq!(gauge(&scrape, "db_client_connection_max", None), 1.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let waiting = tokio::spawn(send(create("beta")));
        let pending = "db_client_connection_pending_requests";
        loop {
            let scrape = scrape(&http, &server).await;
            if gauge(&scrape, pending, None) == 1.0 {
                break;
            }
            assert!(
                !waiting.is_finished(),
                "the waiting caller was seen waiting"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = waiting.await.expect("the waiting request");
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("pool_exhausted"))
        );
        let (status, _) = holder.await.expect("the holding request");
        assert_eq!(status, 200);

        let scrape = scrape(&http, &server).await;
        assert_eq!(
            scrape.sum("db_client_connection_timeouts_total", &[PRIMARY]),
            1.0
        );
        assert_eq!(gauge(&scrape, pending, None), 0.0);
        let create_server = function("gateway::store::create_server");
        let exhausted = [create_server, ("error_type", "pool_exhausted")];
        assert_eq!(
            scrape.sum("db_client_operation_duration_seconds_count", &exhausted),
            1.0,
            "{}",
            scrape.text
        );
        assert_eq!(
            scrape.sum("resilient_tx_attempt_duration_seconds_count", &exhausted),
            1.0
        );
        assert_eq!(
            scrape.successes(
                "db_client_operation_duration_seconds_count",
                &[function("metrics_route::hold_a_connection")]
            ),
            1.0
        );
        server.shutdown().await.expect("clean shutdown");
        drop(cluster);
    })
    .await;
}

/// `/metrics` is behind the same token as `/api`; `METRICS=off` serves no route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_and_can_be_switched_off() {
    within(async {
        init_tracing();
        let cluster = PgCluster::start().await.expect("start PostgreSQL");
        let server = serve(test_config(&cluster.url(), APPLICATION)).await;
        let http = client();
        let url = format!("{}/metrics", server.url());
        for request in [
            http.get(&url),
            http.get(&url).bearer_auth("wrong-token"),
            http.get(&url).header("Authorization", TOKEN),
        ] {
            let (status, body) = send(request).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthorized"))
            );
        }
        let scraped = scrape(&http, &server).await;
        assert!(!scraped.samples.is_empty());

        let mut config = test_config(&cluster.url(), "gateway-metrics-off");
        config.metrics = false;
        let off = serve(config).await;
        let (status, body) = send(
            http.get(format!("{}/metrics", off.url()))
                .bearer_auth(TOKEN),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
        off.shutdown().await.expect("clean shutdown");
        server.shutdown().await.expect("clean shutdown");
        drop(cluster);
    })
    .await;
}

//! What every case uses: the recorder of its observation, the gateway under test and
//! an HTTP client for it, replies and the documented error codes, polling, database
//! inspection behind the gateway's back, and a background writer.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilient_tx::Metrics;
use resilient_tx_testkit::PgCluster;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Case, Check, Observation, progress_on, secs};
use crate::{Config, PoolSettings, Server};

/// What a case body returns: `Err` when it cannot go on (a server did not start, a
/// precondition failed); failed checks are recorded and the case goes on.
pub(crate) type CaseResult = Result<(), CaseError>;

/// Why a case could not go on.
pub(crate) type CaseError = Box<dyn std::error::Error + Send + Sync>;

/// An error that stops a case.
pub(crate) fn stop(message: impl Into<String>) -> CaseError {
    message.into().into()
}

/// The bearer token of every gateway the suite starts.
pub(crate) const TOKEN: &str = "resilience-suite-token-0123456789";

/// Bound on one HTTP request of the suite's client: far above any deadline the
/// gateways under test have, so a hang shows up as a slow answer, not a lost one.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Records a case's observation as it runs; shared with the runner so a panic or a
/// timeout keeps what was seen until then.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    observation: Arc<Mutex<Observation>>,
    started: Instant,
}

impl Recorder {
    pub(crate) fn new(case: Case, started: Instant) -> Self {
        Recorder {
            observation: Arc::new(Mutex::new(Observation::new(case))),
            started,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Observation) -> R) -> R {
        let mut observation = self.observation.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut observation)
    }

    fn case(&self) -> Case {
        self.with(|o| o.case)
    }

    /// A progress line: on stderr for the binary, in the log for tests.
    pub(crate) fn step(&self, message: impl Display) {
        let case = self.case();
        let at = self.started.elapsed().as_secs_f64();
        if progress_on() {
            eprintln!("  {} +{at:5.1}s  {message}", case.id());
        }
        tracing::info!(case = case.id(), at_s = at, "{message}");
    }

    /// Records an assertion; returns whether it held.
    pub(crate) fn check(&self, passed: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if !passed {
            self.step(format_args!("CHECK FAILED: {what}"));
        }
        self.with(|o| o.checks.push(Check { passed, what }));
        passed
    }

    /// Records something observed.
    pub(crate) fn note(&self, text: impl Into<String>) {
        let text = text.into();
        self.step(&text);
        self.with(|o| o.notes.push(text));
    }

    /// Records a measured figure.
    pub(crate) fn figure(&self, name: impl Into<String>, value: impl Display) {
        let (name, value) = (name.into(), value.to_string());
        self.step(format_args!("{name}: {value}"));
        self.with(|o| o.figures.push((name, value)));
    }

    /// Records the time to recover.
    pub(crate) fn recovery(&self, recovery: Duration) {
        self.step(format_args!("recovered in {}", secs(recovery)));
        self.with(|o| o.recovery = Some(recovery));
    }

    /// Sets the one-line summary.
    pub(crate) fn summary(&self, text: impl Into<String>) {
        let text = text.into();
        self.with(|o| o.summary = text);
    }

    pub(crate) fn error(&self, error: String) {
        self.step(format_args!("ERROR: {error}"));
        self.with(|o| o.error = Some(error));
    }

    pub(crate) fn finish(&self) -> Observation {
        self.with(|o| o.clone())
    }
}

/// Gateway settings for the suite: loopback on any port, the matrix's pool (5 kept, 15
/// at most), short timeouts so outages answer quickly, the test routes on, and an
/// `application_name` of its own so a case can find (and kill) its connections.
pub(crate) fn config(url: &str, application_name: &str) -> Config {
    let mut config = Config::new(url, TOKEN);
    config.listen = "127.0.0.1:0".parse().expect("a loopback address");
    config.pool = PoolSettings {
        min_idle: 5,
        max_size: 15,
        pool_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
    };
    config.statement_timeout = Some(Duration::from_secs(2));
    config.deadline = Duration::from_secs(5);
    config.retries = 10;
    config.test_endpoints = true;
    config.application_name = application_name.to_owned();
    config
}

/// A libpq URL listing several servers, of which connections take the first that
/// accepts writes.
pub(crate) fn multi_host_url(ports: &[u16]) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!(
        "postgres://postgres@{}/postgres?target_session_attrs=read-write",
        hosts.join(",")
    )
}

/// The gateway under test, in-process, and a client for it.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) server: Server,
    pub(crate) http: Http,
    pub(crate) application_name: String,
    pub(crate) min_idle: u32,
}

/// The `name`s of a server list answer.
pub(crate) fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|servers| {
            servers
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl App {
    /// Polls `GET /api/servers` until it answers 200 (up to 30 s); how long it took.
    pub(crate) async fn wait_api(&self) -> Option<Duration> {
        let http = self.http.clone();
        poll(Duration::from_secs(30), Duration::from_millis(50), || {
            let http = http.clone();
            async move { http.get("/api/servers").await.status == 200 }
        })
        .await
    }

    pub(crate) async fn start(config: Config) -> Result<App, CaseError> {
        let application_name = config.application_name.clone();
        let min_idle = config.pool.min_idle;
        let server = crate::serve(config)
            .await
            .map_err(|e| stop(format!("the gateway did not start: {e}")))?;
        let http = Http::new(server.url());
        Ok(App {
            server,
            http,
            application_name,
            min_idle,
        })
    }

    pub(crate) fn metrics(&self) -> Metrics {
        self.server.db().metrics()
    }

    /// `/health/status`, as JSON.
    pub(crate) async fn status(&self) -> Value {
        self.http.get("/health/status").await.body
    }

    /// Probes `/health/ready` until it answers 200.
    pub(crate) async fn wait_ready(&self, limit: Duration) -> Result<Duration, CaseError> {
        let http = self.http.clone();
        poll(limit, Duration::from_millis(100), || {
            let http = http.clone();
            async move { http.get("/health/ready").await.status == 200 }
        })
        .await
        .ok_or_else(|| stop(format!("the gateway was not ready within {}", secs(limit))))
    }

    pub(crate) async fn shutdown(self) {
        if let Err(error) = self.server.shutdown().await {
            tracing::warn!(%error, "the gateway did not shut down cleanly");
        }
    }
}

/// An HTTP client for one gateway, sending the suite's token.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: String) -> Http {
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .expect("an HTTP client with no TLS and no proxy always builds");
        Http { client, base }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// Sends a request; a transport failure (the gateway did not answer) becomes a
    /// reply with status 0.
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Reply::transport(e.to_string(), started.elapsed()),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Reply::transport(e.to_string(), started.elapsed()),
        };
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "not_json": text }))
        };
        Reply {
            status,
            body,
            retry_after,
            elapsed: started.elapsed(),
            transport_error: None,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// A read with `Consistency: strong` (read-your-writes, from the primary).
    pub(crate) async fn get_strong(&self, path: &str) -> Reply {
        self.send(
            self.request(reqwest::Method::GET, path)
                .header(crate::CONSISTENCY, "strong"),
        )
        .await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    /// `POST /api/servers` with an `Idempotency-Key`.
    pub(crate) async fn create_keyed(&self, key: &str, name: &str) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, "/api/servers")
                .header(crate::IDEMPOTENCY_KEY, key)
                .json(&json!({ "name": name, "url": format!("http://{name}.example") })),
        )
        .await
    }

    /// `POST /api/servers` without a key.
    pub(crate) async fn create(&self, name: &str) -> Reply {
        self.post(
            "/api/servers",
            json!({ "name": name, "url": format!("http://{name}.example") }),
        )
        .await
    }

    /// Replaces the test accounts.
    pub(crate) async fn set_accounts(&self, accounts: &[(i64, i64)]) -> Result<(), CaseError> {
        let body: Vec<Value> = accounts
            .iter()
            .map(|(id, balance)| json!({ "id": id, "balance": balance }))
            .collect();
        let reply = self.put("/api/test/accounts", Value::Array(body)).await;
        if reply.status != 200 {
            return Err(stop(format!(
                "setting the test accounts failed: {}",
                reply.brief()
            )));
        }
        Ok(())
    }

    /// A transfer through the test route.
    pub(crate) async fn transfer(
        &self,
        from: i64,
        to: i64,
        amount: i64,
        pause_ms: u64,
        label: &str,
    ) -> Reply {
        self.post(
            "/api/test/transfer",
            json!({ "from": from, "to": to, "amount": amount, "pause_ms": pause_ms, "label": label }),
        )
        .await
    }

    /// A long transaction through the test route.
    pub(crate) async fn sleep(&self, seconds: f64, steps: u32, lock_account: Option<i64>) -> Reply {
        self.post(
            "/api/test/sleep",
            json!({ "seconds": seconds, "steps": steps, "lock_account": lock_account }),
        )
        .await
    }
}

/// One answer of the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<u64>,
    pub(crate) elapsed: Duration,
    pub(crate) transport_error: Option<String>,
}

/// The error codes `src/errors.rs` documents, with their statuses; `internal` (500) is
/// left out on purpose: the matrix never accepts it for an outage.
const DOCUMENTED: &[(u16, &str)] = &[
    (503, "database_unavailable"),
    (503, "pool_exhausted"),
    (503, "commit_unknown"),
    (504, "timeout"),
    (409, "conflict"),
    (404, "not_found"),
    (400, "invalid_request"),
    (415, "invalid_request"),
    (422, "invalid_request"),
    (401, "unauthorized"),
    (405, "method_not_allowed"),
];

impl Reply {
    fn transport(error: String, elapsed: Duration) -> Reply {
        Reply {
            status: 0,
            body: Value::Null,
            retry_after: None,
            elapsed,
            transport_error: Some(error),
        }
    }

    /// The error code, or `""` for an answer without one.
    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn is(&self, status: u16, code: &str) -> bool {
        self.status == status && self.code() == code
    }

    /// A success, or a documented error other than `internal` with the documented
    /// shape: a message, `retryable`, and `Retry-After` when retryable.
    pub(crate) fn acceptable(&self) -> bool {
        if self.ok() {
            return true;
        }
        let error = &self.body["error"];
        let shaped = error["message"].as_str().is_some_and(|m| !m.is_empty())
            && error["retryable"].is_boolean()
            && (error["retryable"] == false || self.retry_after.is_some());
        shaped && DOCUMENTED.contains(&(self.status, self.code()))
    }

    /// A retryable error (503/504, or no answer at all).
    pub(crate) fn retryable(&self) -> bool {
        self.transport_error.is_some() || self.body["error"]["retryable"] == true
    }

    /// `201`, `503 database_unavailable`, `no answer: …`, with the time it took.
    pub(crate) fn brief(&self) -> String {
        let what = match (&self.transport_error, self.ok()) {
            (Some(error), _) => format!("no answer ({error})"),
            (None, true) => self.status.to_string(),
            (None, false) if self.code().is_empty() => format!("{} {}", self.status, self.body),
            (None, false) => format!("{} {}", self.status, self.code()),
        };
        format!("{what} in {}", secs(self.elapsed))
    }

    /// `status code` without the time, for tallies.
    pub(crate) fn kind(&self) -> String {
        match (&self.transport_error, self.ok()) {
            (Some(_), _) => "no answer".to_owned(),
            (None, true) => self.status.to_string(),
            (None, false) => format!("{} {}", self.status, self.code()),
        }
    }
}

/// Counts replies by [`Reply::kind`]: `201×40, 503 database_unavailable×2`.
pub(crate) fn tally<'a>(replies: impl IntoIterator<Item = &'a Reply>) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for reply in replies {
        let kind = reply.kind();
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    counts.sort();
    counts
        .iter()
        .map(|(kind, n)| format!("{kind}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Calls `probe` every `every` until it returns true; the time that took, or `None`
/// after `limit`.
pub(crate) async fn poll<F, Fut>(limit: Duration, every: Duration, mut probe: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// A number from the database, read behind the gateway's back.
pub(crate) async fn scalar(cluster: &PgCluster, sql: &str) -> Result<i64, CaseError> {
    let admin = cluster.admin().await?;
    let row = admin.query_one(sql, &[]).await?;
    Ok(row.try_get(0)?)
}

/// How many client connections the gateway named `application_name` has on the
/// server, and how many of them are inside a transaction.
pub(crate) async fn backends(
    cluster: &PgCluster,
    application_name: &str,
) -> Result<(i64, i64), CaseError> {
    let admin = cluster.admin().await?;
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') \
             FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND application_name = $1",
            &[&application_name],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Every server row of the registry on `cluster`, by name: (id, rows with that name).
pub(crate) async fn registry(cluster: &PgCluster) -> Result<HashMap<String, i64>, CaseError> {
    let admin = cluster.admin().await?;
    let rows = admin.query("SELECT name, id FROM servers", &[]).await?;
    let mut by_name = HashMap::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let id: i64 = row.try_get(1)?;
        if by_name.insert(name.clone(), id).is_some() {
            return Err(stop(format!("two rows are named {name}")));
        }
    }
    Ok(by_name)
}

/// The test accounts on `cluster`, by id.
pub(crate) async fn balances(cluster: &PgCluster) -> Result<Vec<(i64, i64)>, CaseError> {
    let admin = cluster.admin().await?;
    let rows = admin
        .query(
            "SELECT id, balance FROM gateway_test_accounts ORDER BY id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// One logical write of a [`Writer`].
#[derive(Debug, Clone)]
pub(crate) struct WriteRecord {
    pub(crate) name: String,
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
    /// Every answer, in order (several when the client retried with the same key).
    pub(crate) replies: Vec<Reply>,
}

impl WriteRecord {
    /// The last answer.
    pub(crate) fn last(&self) -> &Reply {
        self.replies
            .last()
            .expect("a write has at least one answer")
    }

    /// The gateway acknowledged it (201).
    pub(crate) fn acked(&self) -> bool {
        self.last().status == 201
    }

    /// The id the gateway acknowledged.
    pub(crate) fn id(&self) -> Option<i64> {
        self.acked()
            .then(|| self.last().body["id"].as_i64())
            .flatten()
    }
}

/// Creates servers one after the other in the background, as a client would: with
/// `keyed`, each under its own `Idempotency-Key`, repeated with the same key after a
/// retryable error (up to `client_retries` times); without, once each.
#[derive(Debug)]
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    task: JoinHandle<Vec<WriteRecord>>,
}

impl Writer {
    pub(crate) fn start(http: Http, prefix: &str, keyed: bool, client_retries: u32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let prefix = prefix.to_owned();
        let task = {
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut records = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let name = format!("{prefix}-{n:04}");
                    let started = Instant::now();
                    let mut replies = Vec::new();
                    loop {
                        let reply = if keyed {
                            http.create_keyed(&name, &name).await
                        } else {
                            http.create(&name).await
                        };
                        let again =
                            keyed && reply.retryable() && replies.len() < client_retries as usize;
                        replies.push(reply);
                        if !again {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let record = WriteRecord {
                        name,
                        started,
                        finished: Instant::now(),
                        replies,
                    };
                    if record.acked() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    records.push(record);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                records
            })
        };
        Writer { stop, acked, task }
    }

    /// Writes acknowledged so far.
    pub(crate) fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` writes in all were acknowledged.
    pub(crate) async fn wait_acked(&self, n: usize, limit: Duration) -> bool {
        poll(limit, Duration::from_millis(20), || async {
            self.acked() >= n
        })
        .await
        .is_some()
    }

    /// Stops after the write in progress; every write's record.
    pub(crate) async fn stop(self) -> Result<Vec<WriteRecord>, CaseError> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| stop(format!("the writer failed: {e}")))
    }
}

/// Checks a writer's records against the registry on `cluster`: every acknowledged
/// write is there once under the acknowledged id, every write refused with
/// `database_unavailable` (without a key) is absent; no answer was outside the
/// documented codes. Returns (acknowledged, refused, unknown) counts.
pub(crate) async fn check_writes(
    rec: &Recorder,
    cluster: &PgCluster,
    records: &[WriteRecord],
    keyed: bool,
) -> Result<(usize, usize, usize), CaseError> {
    let registry = registry(cluster).await?;
    let mut acked = 0;
    let mut refused = 0;
    let mut unknown = 0;
    let mut lost = Vec::new();
    let mut wrong_id = Vec::new();
    let mut phantom = Vec::new();
    for record in records {
        match record.id() {
            Some(id) => {
                acked += 1;
                match registry.get(&record.name) {
                    None => lost.push(record.name.clone()),
                    Some(&stored) if stored != id => wrong_id.push(record.name.clone()),
                    Some(_) => {}
                }
            }
            None if !keyed && record.last().is(503, "database_unavailable") => {
                refused += 1;
                if registry.contains_key(&record.name) {
                    phantom.push(record.name.clone());
                }
            }
            None => unknown += 1,
        }
    }
    let all: Vec<&Reply> = records.iter().flat_map(|r| &r.replies).collect();
    let unacceptable: Vec<String> = all
        .iter()
        .filter(|r| !r.acceptable())
        .map(|r| r.brief())
        .collect();
    rec.check(
        lost.is_empty(),
        format!(
            "every acknowledged write is on the primary ({acked} acknowledged, lost: {lost:?})"
        ),
    );
    rec.check(
        wrong_id.is_empty(),
        format!(
            "each once, under the id the client was given (the name is unique; \
             mismatched: {wrong_id:?})"
        ),
    );
    if !keyed {
        rec.check(
            phantom.is_empty(),
            format!(
                "no write answered 503 database_unavailable was applied ({refused} refused, \
                 applied anyway: {phantom:?})"
            ),
        );
    }
    rec.check(
        unacceptable.is_empty(),
        format!(
            "every answer is a success or a documented error code ({}; other: {unacceptable:?})",
            tally(all.iter().copied())
        ),
    );
    Ok((acked, refused, unknown))
}

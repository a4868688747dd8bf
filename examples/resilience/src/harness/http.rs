//! The suite's HTTP client for one gateway: every request with the suite's token, a
//! transport failure turned into a reply, each request on the case's timeline, and
//! the requests the cases send.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::recorder::Recorder;
use super::reply::Reply;
use super::{CaseError, TOKEN, stop};

/// Bound on one HTTP request of the suite's client: far above any deadline the
/// gateways under test have, so a hang shows up as a slow answer, not a lost one.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP client for one gateway, sending the suite's token and recording every
/// request on the case's timeline.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    rec: Recorder,
}

impl Http {
    pub(crate) fn new(base: String, rec: Recorder) -> Http {
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .expect("an HTTP client with no TLS and no proxy always builds");
        Http { client, base, rec }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// Sends a request; a transport failure (the gateway did not answer) becomes a
    /// reply with status 0. Either way it goes on the timeline.
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let started = Instant::now();
        let reply = exchange(request, started).await;
        let code = match &reply.transport_error {
            Some(_) => "no answer",
            None => reply.code(),
        };
        self.rec
            .request(started, started + reply.elapsed, reply.status, code);
        reply
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// A read with `Consistency: strong` (read-your-writes, from the primary).
    pub(crate) async fn get_strong(&self, path: &str) -> Reply {
        self.send(
            self.request(reqwest::Method::GET, path)
                .header(gateway::CONSISTENCY, "strong"),
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
        self.create_keyed_at("/api/servers", key, name).await
    }

    /// `POST path` (a route that creates servers) with an `Idempotency-Key`.
    pub(crate) async fn create_keyed_at(&self, path: &str, key: &str, name: &str) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header(gateway::IDEMPOTENCY_KEY, key)
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

/// One request and its answer, read whole; `started` is when it was sent.
async fn exchange(request: reqwest::RequestBuilder, started: Instant) -> Reply {
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
        ended: Instant::now(),
        transport_error: None,
    }
}

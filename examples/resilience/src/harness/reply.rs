//! One answer of the gateway, judged against the documented error codes, and tallies
//! of many.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::text::secs;

/// One answer of the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<u64>,
    pub(crate) elapsed: Duration,
    /// When it came back.
    pub(crate) ended: Instant,
    pub(crate) transport_error: Option<String>,
}

/// The error codes the gateway's `src/errors.rs` documents, with their statuses; `internal` (500) is
/// left out on purpose: the matrix never accepts it for an outage.
const DOCUMENTED: &[(u16, &str)] = &[
    (503, "database_unavailable"),
    (503, "pool_exhausted"),
    (503, "commit_unknown"),
    // The suite's replicated create (`routes::REPLICATED_SERVERS`).
    (503, "not_replicated"),
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
    pub(super) fn transport(error: String, elapsed: Duration) -> Reply {
        Reply {
            status: 0,
            body: Value::Null,
            retry_after: None,
            elapsed,
            ended: Instant::now(),
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

//! What every case uses: the recorder of its observation ([`recorder`]), the gateway
//! under test ([`app`]) and an HTTP client for it ([`http`]), replies and the
//! documented error codes ([`reply`]), database inspection behind the gateway's back
//! ([`inspect`]), background writers ([`writer`]), the servers a case starts, in plain
//! text or TLS-only ([`servers`]), clusters a real orchestrator runs ([`orchestrated`]),
//! and the cases of a scenario on one cluster ([`phases`]).

mod app;
mod http;
mod inspect;
mod orchestrated;
mod phases;
mod recorder;
mod reply;
mod servers;
mod writer;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use app::{App, config, names};
pub(crate) use http::Http;
pub(crate) use inspect::{
    backends, balances, check_encrypted, in_recovery_at, registry, registry_at, scalar,
    terminate_at,
};
pub(crate) use orchestrated::Orchestrated;
pub(crate) use phases::Phases;
pub(crate) use recorder::Recorder;
pub(crate) use reply::{Reply, tally};
pub(crate) use servers::{multi_host_url, start_cluster, start_from, url, url_via};
pub use servers::{set_tls, tls_on};
pub(crate) use writer::{
    Audit, SERVERS, WriteRecord, Writer, Writers, audit, check_writes, first_ack_after, longest_gap,
};

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

//! `GET /metrics`: the runtime's metrics in Prometheus' text format, behind the bearer
//! token like `/api`.
//!
//! The runtime emits through the `metrics` facade, whose recorder is global to the
//! process and can be installed once. The first gateway started in a process installs
//! the Prometheus recorder ([`exporter`], behind a `OnceLock`); every gateway of the
//! process, a second one in the same test binary included, renders from that one
//! shared handle. What it renders is therefore the whole process's: counters and
//! histograms of every `Db`, pool gauges summed by pool name.
//!
//! The pool gauges are sampled at each scrape ([`resilient_tx::record_pool_metrics`])
//! rather than updated on every checkout: exact when read, nothing spent between
//! scrapes.

use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;
use crate::errors::ApiError;

/// Bucket bounds of every histogram (all are in seconds): from a fast local commit
/// to a call that runs into the default 30 s deadline.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often recorded histogram samples are folded into their buckets, so that memory
/// stays bounded between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process's recorder: installed by the first call, shared by every later one.
static EXPORTER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The handle every gateway of this process renders from; `None` when another
/// recorder was installed before (by the program that embeds the gateway).
pub(crate) fn exporter() -> Option<&'static PrometheusHandle> {
    EXPORTER.get_or_init(install).as_ref()
}

/// Installs the Prometheus recorder as the process's global one, with the runtime's
/// series described and an upkeep thread.
fn install() -> Option<PrometheusHandle> {
    let installed = PrometheusBuilder::new()
        // `_total` on counters, the unit on histograms: `..._duration_seconds`.
        .with_recommended_naming(true)
        .set_buckets(SECONDS_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder);
    let handle = match installed {
        Ok(handle) => handle,
        Err(error) => {
            tracing::warn!(%error, "metrics are not exported: GET /metrics answers 404 \
                (set METRICS=off when the program installs a metrics recorder of its own)");
            return None;
        }
    };
    resilient_tx::describe_metrics();
    let upkeep = handle.clone();
    // A thread rather than a task: the recorder outlives any one runtime (each test
    // has its own), and its upkeep must too.
    let spawned = thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        // Scrapes fold the samples in too; without them memory grows until one comes.
        tracing::warn!(%error, "could not start the metrics upkeep thread");
    }
    Some(handle)
}

/// `/metrics`, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// The process's metrics, the pool gauges sampled now.
async fn scrape() -> Result<Response, ApiError> {
    let Some(handle) = exporter() else {
        return Err(ApiError::not_found(
            "metrics are not exported: another metrics recorder was installed in this process",
        ));
    };
    resilient_tx::record_pool_metrics();
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}

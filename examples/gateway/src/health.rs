//! Probes for orchestrators and operators: liveness, readiness (a bounded round trip
//! to the database) and a status snapshot of the pool and the runtime's counters.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use resilient_tx::{PoolStatus, ServerRole};
use serde::Serialize;
use serde_json::json;

use crate::app::AppState;
use crate::errors::ErrorDetail;

/// Longest a readiness probe waits for the schema migration when it has not run yet.
const SCHEMA_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `Retry-After` of a not-ready answer, in seconds.
const NOT_READY_RETRY_AFTER: u32 = 5;

/// `/health/live`, `/health/ready`, `/health/status`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/status", get(status))
}

/// The pool as JSON.
#[derive(Debug, Serialize)]
struct PoolJson {
    max_size: u32,
    connections: u32,
    idle: u32,
    in_use: u32,
    waiting: u64,
}

impl From<PoolStatus> for PoolJson {
    fn from(pool: PoolStatus) -> Self {
        PoolJson {
            max_size: pool.max_size,
            connections: pool.connections,
            idle: pool.idle,
            in_use: pool.in_use,
            waiting: pool.waiting,
        }
    }
}

/// 200 while the process runs: a gateway whose database is down is still alive and
/// must not be restarted for it.
async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// 200 when the database answers within the health timeout and the schema exists
/// (also when every pooled connection is busy: `"saturated": true`, since an instance
/// that is merely busy must not be drained); 503 otherwise.
///
/// The endpoint needs no token, so a not-ready answer says what kind of trouble it is
/// in fixed words and never the runtime's detail, which can name the database user or
/// quote the server; the detail goes to the log.
async fn ready(State(state): State<AppState>) -> Response {
    let health = state.db.health().await;
    let pool = PoolJson::from(health.pool);
    if !health.healthy {
        let detail = health.last_error.as_deref().unwrap_or("no answer");
        tracing::warn!(
            detail,
            "not ready: the database did not answer the readiness probe"
        );
        return not_ready("the database did not answer the readiness probe", pool);
    }
    if !state.schema.is_ready() {
        match tokio::time::timeout(SCHEMA_PROBE_TIMEOUT, state.schema.ensure(&state.db)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "not ready: the schema could not be created");
                return not_ready("the schema could not be created", pool);
            }
            Err(_) => return not_ready("the schema is still being created", pool),
        }
    }
    let role = health.role.map(|role| match role {
        ServerRole::Primary => "primary",
        ServerRole::Standby => "standby",
    });
    let latency_ms = health.latency.map(|d| d.as_secs_f64() * 1000.0);
    Json(json!({
        "status": "ready",
        "role": role,
        "latency_ms": latency_ms,
        "saturated": health.saturated,
        "pool": pool,
    }))
    .into_response()
}

fn not_ready(reason: &str, pool: PoolJson) -> Response {
    let body = json!({
        "status": "unavailable",
        "error": ErrorDetail {
            code: "database_unavailable",
            message: reason,
            retryable: true,
        },
        "pool": pool,
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(NOT_READY_RETRY_AFTER),
    );
    response
}

/// The pool (and the read replica's, when one is configured) and the runtime's
/// counters, without touching the database: shows a pool refilling to its minimum after
/// an outage, and how many retries it took.
async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let pool = PoolJson::from(state.db.pool_status());
    let replica_pool = state.db.replica_pool_status().map(PoolJson::from);
    let m = state.db.metrics();
    Json(json!({
        "schema_ready": state.schema.is_ready(),
        "pool": pool,
        "replica_pool": replica_pool,
        "metrics": {
            "calls": m.calls,
            "attempts": m.attempts,
            "commits": m.commits,
            "retries": m.retries(),
            "retries_conflict": m.retries_conflict,
            "retries_connection": m.retries_connection,
            "retries_read_only": m.retries_read_only,
            "retries_timeout": m.retries_timeout,
            "connections_opened": m.connections_opened,
            "connect_failures": m.connect_failures,
            "connections_discarded": m.connections_discarded,
            "stale_connections_replaced": m.stale_connections_replaced,
            "ambiguous_commits": m.ambiguous_commits,
            "ambiguous_rerun_idempotent": m.ambiguous_rerun_idempotent,
            "ambiguous_unresolved": m.ambiguous_unresolved,
            "ambiguous_checked_by_key": m.ambiguous_checked_by_key,
            "ambiguous_verified_committed": m.ambiguous_verified_committed,
            "ambiguous_verified_not_committed": m.ambiguous_verified_not_committed,
            "stored_results_returned": m.stored_results_returned,
            "give_ups": m.give_ups,
            "budget_refusals": m.budget_refusals,
        },
    }))
}

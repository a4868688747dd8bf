//! The application: shared state and the router that ties the routes together.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use resilient_tx::Db;

use crate::auth::{self, BearerToken};
use crate::errors::ApiError;
use crate::store::Schema;
use crate::{api, health, testing};

/// What every handler can reach. Cheap to clone: the `Db` and the rest are shared.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pool and retry policy every transaction runs on.
    pub db: Db,
    /// The token `/api` requests must present.
    pub token: BearerToken,
    /// Whether the schema has been created.
    pub schema: Arc<Schema>,
    /// Whether the test routes' table has been created (with test endpoints on).
    pub test_schema: Arc<Schema>,
}

impl FromRef<AppState> for BearerToken {
    fn from_ref(state: &AppState) -> Self {
        state.token.clone()
    }
}

impl AppState {
    /// Makes sure the schema exists before a request touches it; a database outage
    /// here is reported like any other (503), never as a missing table.
    pub async fn ensure_schema(&self) -> Result<(), ApiError> {
        self.schema.ensure(&self.db).await.map_err(ApiError::from)
    }
}

/// The whole HTTP surface: `/api/...` behind the bearer token, `/health/...` open;
/// `/api/test/...` only with `test_endpoints`.
pub fn router(state: AppState, test_endpoints: bool) -> Router {
    let mut api = api::routes();
    if test_endpoints {
        api = api.nest("/test", testing::routes());
    }
    let api = api.route_layer(middleware::from_fn_with_state(
        state.token.clone(),
        auth::require_token,
    ));
    Router::new()
        .nest("/api", api)
        .merge(health::routes())
        .fallback(async || ApiError::not_found("no such route"))
        // Registered last: it applies to the routes added before it.
        .method_not_allowed_fallback(async || ApiError::method_not_allowed())
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// One log line per request; probes at debug so they do not drown the rest.
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis();
    if path.starts_with("/health/") && status < 500 {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, %path, status, elapsed_ms, "request");
    }
    response
}

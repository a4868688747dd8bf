//! The application: shared state and the router that ties the routes together.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use resilient_tx::Db;

use crate::auth::{self, BearerToken};
use crate::errors::ApiError;
use crate::store::Schema;
use crate::{api, health, metrics};

/// What every handler can reach, the gateway's own and those added with
/// [`serve_with`](crate::serve_with). Cheap to clone: the `Db` and the rest are
/// shared.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pool and retry policy every transaction runs on.
    pub(crate) db: Db,
    /// The token `/api` requests must present.
    pub(crate) token: BearerToken,
    /// Whether the schema has been created.
    pub(crate) schema: Arc<Schema>,
}

impl FromRef<AppState> for BearerToken {
    fn from_ref(state: &AppState) -> Self {
        state.token.clone()
    }
}

impl AppState {
    /// The gateway's `Db`: pass it to a `#[retriable_tx]` function. Its read-only
    /// calls run on the read replica when one is configured; [`AppState::reader`]
    /// honours a request's `Consistency`.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Makes sure the registry's schema exists before a request touches it; a
    /// database outage here is reported like any other (503), never as a missing
    /// table.
    pub async fn ensure_schema(&self) -> Result<(), ApiError> {
        self.schema.ensure(&self.db).await.map_err(ApiError::from)
    }

    /// The `Db` a read runs on: the primary when the request asks for `strong`
    /// consistency (the `Consistency` header, or `query`, the value of a
    /// `?consistency=` parameter), otherwise the default handle, whose read-only calls
    /// use the replica if there is one. Any value but `strong` or `eventual` is a 400
    /// `invalid_request`.
    pub fn reader(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Db, ApiError> {
        api::reader(&self.db, headers, query)
    }
}

/// The whole HTTP surface: `/api/...` (the gateway's routes and `extra`) and, with
/// `with_metrics`, `/metrics` behind the bearer token; `/health/...` open.
pub(crate) fn router(state: AppState, extra: Router<AppState>, with_metrics: bool) -> Router {
    let token = || middleware::from_fn_with_state(state.token.clone(), auth::require_token);
    let api = api::routes().merge(extra).route_layer(token());
    let mut router = Router::new().nest("/api", api);
    if with_metrics {
        router = router.merge(metrics::routes().route_layer(token()));
    }
    router
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

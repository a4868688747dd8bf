//! The `/api/servers` routes. Handlers validate input, make sure the schema exists,
//! call one `store` function and shape its answer; errors become [`ApiError`]s.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/servers?name=N` | 200, every server (or only the one named `N`) |
//! | POST | `/api/servers` | 201 + `Location`; honours `Idempotency-Key` (the same key and body again: the first answer; the same key with another body: 422 `idempotency_key_reused`) |
//! | GET | `/api/servers/{id}` | 200 or 404 |
//! | PUT | `/api/servers/{id}` | 200, name and url replaced |
//! | PATCH | `/api/servers/{id}` | 200, the fields given changed |
//! | DELETE | `/api/servers/{id}` | 204 or 404 |
//!
//! The two reads are `read_only` transactions: with a read replica configured they run
//! there (falling back to the primary while it is unreachable), and may lag behind the
//! primary by the replication delay. A request that must see its own latest writes asks
//! for `Consistency: strong` (header) or `?consistency=strong` (query), which reads
//! from the primary.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use resilient_tx::Db;
use serde::Deserialize;

use crate::app::AppState;
use crate::errors::ApiError;
use crate::model::{NewServer, Server, ServerPatch};
use crate::store;

/// Header a client sets to make a create happen at most once.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Header with which a read asks for read-your-writes (`strong`) instead of the
/// replica's possibly lagging view (`eventual`, the default).
pub const CONSISTENCY: HeaderName = HeaderName::from_static("consistency");

/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;

/// The routes, relative to `/api`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers", get(list).post(create))
        .route(
            "/servers/{id}",
            get(get_one).put(replace).patch(patch).delete(remove),
        )
}

/// Query of the list route.
#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Only the server with exactly this name.
    name: Option<String>,
    /// `strong` reads from the primary.
    consistency: Option<String>,
}

/// Query of the single-server read.
#[derive(Debug, Deserialize)]
struct ReadQuery {
    /// `strong` reads from the primary.
    consistency: Option<String>,
}

/// The `Db` a read runs on: the primary for `strong` consistency (header or query),
/// otherwise the default handle, whose read-only calls use the replica if there is one.
pub(crate) fn reader(db: &Db, headers: &HeaderMap, query: Option<&str>) -> Result<Db, ApiError> {
    let invalid = |value: &str| {
        ApiError::invalid_request(
            StatusCode::BAD_REQUEST,
            format!("consistency must be strong or eventual, got {value:?}"),
        )
    };
    let mut strong = false;
    let header = match headers.get(CONSISTENCY) {
        Some(value) => Some(value.to_str().map_err(|_| invalid("<not ASCII>"))?),
        None => None,
    };
    for value in [header, query].into_iter().flatten() {
        match value.trim().to_ascii_lowercase().as_str() {
            "strong" => strong = true,
            "eventual" => {}
            _ => return Err(invalid(value)),
        }
    }
    Ok(if strong {
        db.primary_only()
    } else {
        db.clone()
    })
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Server>>, ApiError> {
    let Query(query) = query?;
    let db = state.reader(&headers, query.consistency.as_deref())?;
    state.ensure_schema().await?;
    let servers = store::list_servers(&db, query.name.as_deref()).await?;
    Ok(Json(servers))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewServer>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    new.validate()?;
    let key = idempotency_key(&headers)?;
    state.ensure_schema().await?;
    let server = match key {
        Some(key) => store::create_server_once(&state.db, &key, &new).await?,
        None => store::create_server(&state.db, &new).await?,
    };
    let location = format!("/api/servers/{}", server.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(server),
    )
        .into_response())
}

async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<Server>, ApiError> {
    let Path(id) = id?;
    let Query(query) = query?;
    let db = state.reader(&headers, query.consistency.as_deref())?;
    state.ensure_schema().await?;
    Ok(Json(store::get_server(&db, id).await?))
}

async fn replace(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<NewServer>, JsonRejection>,
) -> Result<Json<Server>, ApiError> {
    let Path(id) = id?;
    let Json(new) = body?;
    new.validate()?;
    update(&state, id, ServerPatch::from(new)).await
}

async fn patch(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<ServerPatch>, JsonRejection>,
) -> Result<Json<Server>, ApiError> {
    let Path(id) = id?;
    let Json(patch) = body?;
    patch.validate()?;
    update(&state, id, patch).await
}

async fn update(state: &AppState, id: i64, patch: ServerPatch) -> Result<Json<Server>, ApiError> {
    state.ensure_schema().await?;
    Ok(Json(store::update_server(&state.db, id, &patch).await?))
}

async fn remove(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    state.ensure_schema().await?;
    store::delete_server(&state.db, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `Idempotency-Key` header, if the client sent one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid_request(
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn idempotency_keys_are_optional_but_must_be_sane() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).expect("absent"), None);
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(" req-1 "));
        assert_eq!(
            idempotency_key(&headers).expect("present"),
            Some("req-1".to_owned())
        );
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(""));
        assert!(idempotency_key(&headers).is_err());
        let long = "k".repeat(MAX_KEY_LEN + 1);
        headers.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_str(&long).expect("ascii"),
        );
        assert!(idempotency_key(&headers).is_err());
    }
}

//! Every error a client can see, and how database failures map to HTTP.
//!
//! Bodies are `{"error":{"code":"…","message":"…","retryable":bool}}`. Codes are
//! stable; messages are for people. Retryable answers carry `Retry-After`.
//!
//! | code | status | when |
//! |---|---|---|
//! | `database_unavailable` | 503 | the database cannot be reached (down, partitioned, failing over) after the runtime's retries |
//! | `pool_exhausted` | 503 | no connection became free within the pool timeout while the database answers |
//! | `commit_unknown` | 503 | the connection died while COMMIT was in flight; retry **with** an `Idempotency-Key` to learn the outcome safely |
//! | `timeout` | 504 | a statement or attempt ran past its timeout; the transaction was rolled back |
//! | `conflict` | 409 | the name is taken (23505, `retryable: false`), or serialization failures/deadlocks outlasted the retries (`retryable: true`) |
//! | `not_found` | 404 | no server has this id, or no such route |
//! | `invalid_request` | 400/415/422 | malformed JSON, wrong content type, failed validation, bad id or header |
//! | `idempotency_key_reused` | 422 | the `Idempotency-Key` was already used with another request body; send a new key for a new request |
//! | `unauthorized` | 401 | missing or wrong bearer token |
//! | `method_not_allowed` | 405 | the route exists but not with this method |
//! | `internal` | 500 | a bug or an unexpected database error; never a database outage |
//!
//! A transient serialization conflict is a 409 rather than a 503: the database is
//! healthy, the request collided with concurrent changes to the same data, and
//! `retryable: true` with `Retry-After` tells the client to simply try again.

use std::fmt;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use resilient_tx::{ErrorKind, TxError};
use serde::Serialize;

use crate::model::Invalid;
use crate::store::StoreError;

/// An error answer: status, stable code, message, and whether retrying may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retryable: bool,
    /// Seconds for `Retry-After`, on retryable answers.
    retry_after: Option<u32>,
}

/// The JSON shape of an error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error itself.
    pub error: ErrorDetail<'a>,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    /// Stable machine-readable code.
    pub code: &'a str,
    /// Sentence for a person.
    pub message: &'a str,
    /// Whether the same request may succeed later.
    pub retryable: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// Marks the error retryable, advising the client to wait `seconds` first.
    fn retry_after(mut self, seconds: u32) -> Self {
        self.retryable = true;
        self.retry_after = Some(seconds);
        self
    }

    /// 400/422 `invalid_request`.
    pub fn invalid_request(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::new(status, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept this method",
        )
    }

    /// 500 `internal`; the detail goes to the log, not to the client.
    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }

    /// 503 `database_unavailable`.
    pub fn database_unavailable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            message,
        )
        .retry_after(UNAVAILABLE_RETRY_AFTER)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        self.retryable
    }
}

/// How long a client should wait after an outage answer: long enough for a restart
/// or a failover to make progress, short enough to notice recovery.
const UNAVAILABLE_RETRY_AFTER: u32 = 5;

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<TxError> for ApiError {
    fn from(error: TxError) -> Self {
        let sqlstate = error.sqlstate().map(|s| s.code().to_owned());
        let api = map_tx_error(&error, sqlstate.as_deref());
        // The detail (SQLSTATE, attempts, the runtime's sentence) is for operators;
        // clients get the stable code and a fixed message.
        if api.status.is_server_error() {
            let level_error = api.code == "internal";
            if level_error {
                tracing::error!(kind = %error.kind(), sqlstate, attempts = error.attempts(), error = %error, "database call failed");
            } else {
                tracing::warn!(kind = %error.kind(), sqlstate, attempts = error.attempts(), error = %error, code = api.code, "database call failed");
            }
        } else {
            tracing::info!(kind = %error.kind(), sqlstate, error = %error, code = api.code, "database refused the request");
        }
        api
    }
}

fn map_tx_error(error: &TxError, sqlstate: Option<&str>) -> ApiError {
    match error.kind() {
        // Not "the request was not applied": a keyed create or an idempotent update may
        // have committed before the connection was lost for good, which is safe to
        // repeat (the key returns the first result) but not a fact to deny.
        ErrorKind::Unavailable => ApiError::database_unavailable(
            "the database is unavailable right now; try again shortly (a create repeated \
             with the same Idempotency-Key takes effect at most once)",
        ),
        ErrorKind::PoolExhausted => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pool_exhausted",
            "all database connections are busy; try again shortly",
        )
        .retry_after(1),
        ErrorKind::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the database did not answer in time; the transaction was rolled back",
        )
        .retry_after(1),
        ErrorKind::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the request kept colliding with concurrent changes; try it again",
        )
        .retry_after(1),
        ErrorKind::CommitUnknown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "commit_unknown",
            "the connection to the database was lost while committing, so the change may or \
             may not have been applied; retry with an Idempotency-Key header to get the \
             original result without applying it twice",
        )
        .retry_after(1),
        ErrorKind::Database => match sqlstate {
            Some("23505") => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "a server with this name already exists",
            ),
            // Data exceptions and other integrity violations come from values the
            // validation let through: the request, not the gateway, is at fault.
            Some(state) if state.starts_with("22") || state.starts_with("23") => {
                ApiError::invalid_request(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the database refused the values in this request",
                )
            }
            // The database refused the gateway's own login (password, pg_hba, a
            // missing database): the service is unavailable until an operator fixes
            // its settings, and the client did nothing wrong.
            Some(state) if state.starts_with("28") || state == "3D000" => {
                ApiError::database_unavailable(
                    "the gateway cannot log in to its database right now; try again later",
                )
            }
            _ => ApiError::internal(),
        },
        // Settings that cannot work (no password given, a certificate that does not
        // verify): as above, the operator's to fix.
        ErrorKind::Config => ApiError::database_unavailable(
            "the gateway cannot reach its database with its current settings; try again later",
        ),
        // As payment APIs answer a key sent again with other parameters: the client's
        // mistake, not to be retried as it is.
        ErrorKind::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body; a key \
             stands for one request: send a new key for a new request",
        ),
        // Kinds added to the runtime later: an outage must never become a bare 500.
        _ if error.is_transient() => ApiError::database_unavailable(
            "the database is unavailable right now; try again shortly",
        ),
        _ => ApiError::internal(),
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Db(error) => ApiError::from(error),
            StoreError::NotFound => ApiError::not_found("no server has this id"),
            StoreError::Decode(message) => {
                tracing::error!(%message, "a row had an unexpected shape");
                ApiError::internal()
            }
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::invalid_request(StatusCode::UNPROCESSABLE_ENTITY, invalid.0)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // axum picks the status: 400 for malformed JSON, 415 without a JSON content
        // type, 422 for JSON of the wrong shape.
        ApiError::invalid_request(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid_request(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid_request(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                retryable: self.retryable,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_error_is_the_services_not_the_requests() {
        // At call time, a Config error comes from connecting (no password given, a
        // certificate that does not verify): the service is down until an operator
        // fixes it, which is a 503, not a fault of the request or a bug (500).
        let api = ApiError::from(TxError::config("bad"));
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.code(), "database_unavailable");
    }

    #[test]
    fn store_outcomes_map_to_their_codes() {
        let not_found = ApiError::from(StoreError::NotFound);
        assert_eq!(
            (not_found.status(), not_found.code()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let decode = ApiError::from(StoreError::Decode("x".to_owned()));
        assert_eq!(decode.code(), "internal");
        let invalid = ApiError::from(Invalid("no".to_owned()));
        assert_eq!(
            (invalid.status(), invalid.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        );
    }

    #[test]
    fn outage_answers_carry_retry_after_and_the_documented_body() {
        let response = ApiError::database_unavailable("down").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(UNAVAILABLE_RETRY_AFTER))
        );
        let body = serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                code: "database_unavailable",
                message: "down",
                retryable: true,
            },
        })
        .expect("serialise");
        assert_eq!(
            body,
            serde_json::json!({"error":{"code":"database_unavailable","message":"down","retryable":true}})
        );
    }

    #[test]
    fn unauthorized_answers_name_the_scheme() {
        let response = ApiError::unauthorized("no").into_response();
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
    }
}

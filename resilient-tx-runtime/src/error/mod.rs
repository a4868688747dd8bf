//! The taxonomy of failures: the one error type callers see ([`TxError`]), its kinds
//! ([`ErrorKind`]), the trait that lets a user's own error enum carry it
//! ([`AsTxError`]), and the runtime's own finer [`Failure`] with its [`Action`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::error::SqlState;

mod failure;
mod kind;

pub(crate) use failure::{Action, Failure};
pub use kind::ErrorKind;

/// A failed transactional call: what kind of failure, the server's SQLSTATE when there
/// is one, how many attempts were made, and a sentence a person can act on.
///
/// Cheap to clone. `Display` never contains a password or a connection string.
#[derive(Clone)]
pub struct TxError {
    inner: Arc<Inner>,
}

struct Inner {
    failure: Failure,
    sqlstate: Option<SqlState>,
    message: String,
    // Interior mutability so that the executor can record the final attempt count on
    // an error the user's own error type already wraps, without rebuilding that type.
    attempts: AtomicU32,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TxError {
    pub(crate) fn new(failure: Failure, message: impl Into<String>) -> Self {
        TxError {
            inner: Arc::new(Inner {
                failure,
                sqlstate: None,
                message: message.into(),
                attempts: AtomicU32::new(1),
                source: None,
            }),
        }
    }

    pub(crate) fn with_details(
        failure: Failure,
        message: impl Into<String>,
        sqlstate: Option<SqlState>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        TxError {
            inner: Arc::new(Inner {
                failure,
                sqlstate,
                message: message.into(),
                attempts: AtomicU32::new(1),
                source,
            }),
        }
    }

    /// A copy with its own attempt count, for an error that several calls report (the
    /// pool's last connect error).
    pub(crate) fn detached(&self) -> TxError {
        TxError::with_details(
            self.inner.failure,
            self.inner.message.clone(),
            self.inner.sqlstate.clone(),
            None,
        )
    }

    /// An error of kind [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        TxError::new(Failure::Config, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.failure.kind()
    }

    /// The server's SQLSTATE, when the server reported one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        self.inner.sqlstate.as_ref()
    }

    /// How many attempts the call made before returning this error.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts.load(Ordering::Relaxed)
    }

    /// Whether trying the whole call again later may succeed (unavailable, exhausted
    /// pool, timeout, conflict).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable
                | ErrorKind::PoolExhausted
                | ErrorKind::Timeout
                | ErrorKind::Conflict
        )
    }

    /// The sentence describing the failure, without the attempt count.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    pub(crate) fn failure(&self) -> Failure {
        self.inner.failure
    }

    pub(crate) fn set_attempts(&self, attempts: u32) {
        self.inner.attempts.store(attempts, Ordering::Relaxed);
    }
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        let attempts = self.attempts();
        if attempts > 1 {
            write!(f, " (gave up after {attempts} attempts)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxError")
            .field("kind", &self.kind())
            .field("sqlstate", &self.sqlstate().map(SqlState::code))
            .field("attempts", &self.attempts())
            .field("message", &self.inner.message)
            .finish()
    }
}

impl std::error::Error for TxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Lets the runtime find a [`TxError`] inside a caller's own error type, so database
/// failures are still classified and retried while other errors return at once.
///
/// ```
/// use resilient_tx_runtime::{AsTxError, TxError};
///
/// #[derive(Debug)]
/// enum AppError {
///     Db(TxError),
///     NotFound,
/// }
/// impl From<TxError> for AppError {
///     fn from(e: TxError) -> Self { AppError::Db(e) }
/// }
/// impl AsTxError for AppError {
///     fn as_tx_error(&self) -> Option<&TxError> {
///         match self { AppError::Db(e) => Some(e), AppError::NotFound => None }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a #[retriable_tx] function",
    note = "implement `From<TxError>` and `AsTxError` for `{Self}`, or return `TxError`"
)]
pub trait AsTxError {
    /// The database error inside, or `None` for an application error.
    fn as_tx_error(&self) -> Option<&TxError>;
}

impl AsTxError for TxError {
    fn as_tx_error(&self) -> Option<&TxError> {
        Some(self)
    }
}

/// A boxed error carries the [`TxError`] it was made from (`?` boxes one through std's
/// `From<E: Error>`), or one in its chain of [`source`](std::error::Error::source)s.
impl AsTxError for Box<dyn std::error::Error + Send + Sync + 'static> {
    fn as_tx_error(&self) -> Option<&TxError> {
        let this: &(dyn std::error::Error + 'static) = self.as_ref();
        std::iter::successors(Some(this), |error| error.source())
            .find_map(|error| error.downcast_ref::<TxError>())
    }
}

/// An `anyhow::Error` carries the [`TxError`] it was made from, also under any
/// `.context(…)` added on the way up.
#[cfg(feature = "anyhow")]
impl AsTxError for anyhow::Error {
    fn as_tx_error(&self) -> Option<&TxError> {
        self.chain()
            .find_map(|error| error.downcast_ref::<TxError>())
    }
}

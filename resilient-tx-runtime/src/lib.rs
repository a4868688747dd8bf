//! The runtime of resilient-tx: a bb8 pool of tokio-postgres connections, the
//! classification of every failure, and the attempt loop that retries, reconnects and
//! never re-runs a transaction whose COMMIT outcome is unknown.
//!
//! Applications use it through the `resilient-tx` crate and its `#[retriable_tx]`
//! attribute; [`Db::transaction`] offers the same loop without the macro.

#![deny(missing_docs, missing_debug_implementations)]

mod backoff;
mod budget;
mod call;
mod classify;
mod connection;
mod db;
mod error;
mod health;
mod hosts;
mod idempotency;
mod manager;
mod marker;
mod metrics;
mod policy;
mod pool;
mod status;
// Built ahead of the connect path that will use it: until the pool connects through
// `tls::TlsConnector`, nothing outside its own tests calls into it.
#[allow(dead_code, unused_imports)]
mod tls;
mod tx;
mod verification;
mod xact_status;

#[doc(hidden)]
pub mod __private;

pub use budget::RetryBudgetConfig;
pub use db::{BoxedBody, Db, DbBuilder};
pub use error::{AsTxError, ErrorKind, TxError};
pub use health::{Health, ServerRole};
pub use metrics::Metrics;
pub use policy::{Isolation, Policy};
pub use status::PoolStatus;
pub use tx::{Params, QueryRef, Tx, TxStatement};
pub use verification::CommitVerification;

/// tokio-postgres, whose row and parameter types `Tx` uses.
pub use tokio_postgres;

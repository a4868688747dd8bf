//! The runtime of resilient-tx: a bb8 pool of tokio-postgres connections, the
//! classification of every failure, and the attempt loop that retries, reconnects and
//! never re-runs a transaction whose COMMIT outcome is unknown.
//!
//! Applications use it through the `resilient-tx` crate and its `#[retriable_tx]`
//! attribute; [`Db::transaction`] offers the same loop without the macro.
//!
//! With the `metrics` cargo feature the runtime also emits what it counts and times
//! through the `metrics` facade, to the recorder the application installs
//! (`describe_metrics`, `record_pool_metrics`; the guide lists every series).

#![deny(missing_docs, missing_debug_implementations)]

// The modules in layers, bottom first: each uses only modules above it in this list
// (`tests/layers.rs` reads this list and fails on an import that points down it).
//
// settings and maths
mod backoff;
mod budget;
mod hosts;
mod policy;
// taxonomy of failures
mod error;
mod classify;
mod metrics;
// connections and pools
mod tls;
mod connection;
mod pool;
mod health;
// one attempt's transaction
mod tx;
// what a call leaves behind and how it is read back
mod tables;
mod idempotency;
mod outcome;
mod replication;
// the attempt loop
mod retry;
mod shared;
mod call;
// the handle applications hold
mod db;

#[doc(hidden)]
pub mod __private;

pub use budget::RetryBudgetConfig;
pub use db::{BoxedBody, Db, DbBuilder};
pub use error::{AsTxError, ErrorKind, TxError};
pub use health::{Health, ServerRole};
// `crate::`: with the `metrics` feature, the `metrics` crate has the same name.
pub use crate::metrics::Metrics;
#[cfg(feature = "metrics")]
pub use crate::metrics::describe_metrics;
pub use outcome::CommitVerification;
pub use policy::{Isolation, Policy};
pub use pool::PoolStatus;
#[cfg(feature = "metrics")]
pub use pool::record_pool_metrics;
pub use tx::{Params, QueryRef, Tx, TxStatement};

/// tokio-postgres, whose row and parameter types `Tx` uses.
pub use tokio_postgres;

//! The runtime against real PostgreSQL servers: one module per family of failures,
//! each test named after the behaviour it proves.

mod cancellation;
mod common;
mod config;
mod conflicts;
mod connection_loss;
mod failover;
mod health;
mod idempotency;
mod replicated;
mod safety;
mod statements;
mod verification;
mod wrapped_errors;

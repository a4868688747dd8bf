//! The runtime against real PostgreSQL servers: one module per family of failures,
//! each test named after the behaviour it proves.

mod cancellation;
mod commit_marks;
mod common;
mod config;
mod conflicts;
mod connection_loss;
mod failover;
mod health;
mod idempotency;
mod key_reuse;
mod least_privilege;
mod pgbouncer;
mod pool;
mod replicated;
mod safety;
mod statements;
mod tls;
mod verification;
mod wrapped_errors;

//! The gateway over real HTTP against a real PostgreSQL server: authentication, the
//! CRUD routes and their error codes, idempotent creates, a start while the database
//! is down, read-your-writes, routes added with `serve_with`, and a configuration
//! without a database. The resilience matrix's thirteen cases are in the `resilience`
//! crate (`examples/resilience`).

mod app;
mod auth;
mod crud;
mod idempotency;
mod startup;
mod extension;

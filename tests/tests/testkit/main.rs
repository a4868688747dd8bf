//! Self-tests of the test kit against real PostgreSQL servers: if these fail,
//! no integration suite built on the kit can be trusted. One module per part of
//! the kit.

mod cleanup;
mod common;
mod lifecycle;
mod proxy_cuts;
mod proxy_modes;
mod replicas;

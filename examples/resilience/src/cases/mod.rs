//! The cases themselves, one module per family of the matrix.

pub(crate) mod connection_loss;
pub(crate) mod failover;
pub(crate) mod pool;
pub(crate) mod transactions;

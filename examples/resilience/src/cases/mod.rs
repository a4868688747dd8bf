//! The cases themselves, one module per family of the matrix, and FO-01 and FO-03
//! under a real orchestrator.

pub(crate) mod connection_loss;
pub(crate) mod failover;
pub(crate) mod orchestrated;
pub(crate) mod pool;
pub(crate) mod transactions;

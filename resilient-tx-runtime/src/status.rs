//! Snapshots of the pool for status endpoints.

use crate::pool::Pool;

/// The pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct PoolStatus {
    /// Most connections the pool opens.
    pub max_size: u32,
    /// Connections open or being opened.
    pub connections: u32,
    /// Connections waiting in the pool.
    pub idle: u32,
    /// Connections checked out by calls.
    pub in_use: u32,
    /// Callers waiting for a connection.
    pub waiting: u64,
}

impl PoolStatus {
    pub(crate) fn of(pool: &Pool) -> PoolStatus {
        let state = pool.pool.state();
        PoolStatus {
            max_size: pool.max_size,
            connections: state.connections,
            idle: state.idle_connections,
            in_use: state.connections.saturating_sub(state.idle_connections),
            waiting: pool.waiting.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

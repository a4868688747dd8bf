//! Snapshots of the pool for status endpoints.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Pool;
use super::manager::Manager;

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

impl Pool {
    /// A snapshot of this pool.
    pub(crate) fn status(&self) -> PoolStatus {
        PoolStatus::of(&self.pool, self.max_size, &self.waiting)
    }
}

impl PoolStatus {
    /// A snapshot of `pool`, which opens at most `max_size` connections and has
    /// `waiting` callers.
    pub(crate) fn of(pool: &bb8::Pool<Manager>, max_size: u32, waiting: &AtomicU64) -> Self {
        let state = pool.state();
        PoolStatus {
            max_size,
            connections: state.connections,
            idle: state.idle_connections,
            in_use: state.connections.saturating_sub(state.idle_connections),
            waiting: waiting.load(Ordering::Relaxed),
        }
    }
}

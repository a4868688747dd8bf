//! [`Pooled`]: a checked-out connection together with its turn at the pool.
//!
//! bb8 0.9 wakes a waiting `get()` through a `Notify`, and a caller that arrives
//! while the woken one is being scheduled takes the idle connection first. Under a
//! saturated pool (more callers than connections, each back for the next transaction
//! at once) a waiter can lose that race again and again until its pool timeout ends
//! it, with `PoolExhausted`, while every other caller is served in a millisecond.
//! bb8 has no fair mode, so the pool hands out turns from a FIFO semaphore (one per
//! connection the pool may open) before it asks bb8: callers are served in the order
//! they came, and bb8 always has a connection, or room for one, for a turn's holder.

use std::ops::{Deref, DerefMut};

use bb8::PooledConnection;
use tokio::sync::SemaphorePermit;

use super::manager::Manager;
use crate::connection::PgConnection;

/// A checked-out connection; returned to the pool, and its turn passed on, on drop.
pub(crate) struct Pooled<'a> {
    // Declared first, so dropped first: the connection is back in bb8's idle list
    // before the next caller in line is given the turn to take it.
    conn: PooledConnection<'a, Manager>,
    _turn: SemaphorePermit<'a>,
}

impl<'a> Pooled<'a> {
    pub(super) fn new(conn: PooledConnection<'a, Manager>, turn: SemaphorePermit<'a>) -> Self {
        Pooled { conn, _turn: turn }
    }
}

impl Deref for Pooled<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

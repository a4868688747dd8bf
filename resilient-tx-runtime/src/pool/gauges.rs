//! The pool gauges (`db.client.connection.count`, `.max`, `.pending_requests`), sampled
//! when metrics are read rather than kept up to date as connections move.
//!
//! bb8 owns most of a connection's moves (the return to the pool when a checkout is
//! dropped, the reaping of idle and old connections, background connects to keep
//! `min_idle`), so gauges kept by the runtime would miss some and drift; and a gauge
//! update on every checkout and return would put work on the hot path for a value
//! read every few seconds. Sampling reads the same state as [`Db::pool_status`]
//! (one short lock per pool), costs nothing between scrapes, and is exact at the
//! moment it is read.
//!
//! Every pool of the process registers here while it lives, so the exporter's scrape
//! handler needs no `Db`: [`record_pool_metrics`] sums the pools by name (`primary`,
//! `replica`), as the facade's counters do for every `Db` of the process.
//!
//! [`Db::pool_status`]: crate::Db::pool_status

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::manager::Manager;
use super::{PRIMARY, PoolSettings, PoolStatus, REPLICA};
use crate::metrics::{PoolGauges, pool_gauges};

/// The pools alive in this process.
static LIVE: Mutex<Vec<Weak<Sampled>>> = Mutex::new(Vec::new());

/// A replica's pool was built once: its gauges are set (to zero once it is gone)
/// from then on, and left out before.
static REPLICA_SEEN: AtomicBool = AtomicBool::new(false);

/// What a gauge reads of one pool. Owned by its [`Pool`](super::Pool) alone, so it
/// (and its handle on bb8's pool) goes when the pool does; [`LIVE`] holds it weakly.
pub(crate) struct Sampled {
    name: &'static str,
    max_size: u32,
    pool: bb8::Pool<Manager>,
    waiting: Arc<AtomicU64>,
}

impl Sampled {
    /// Registers a new pool for sampling; the pool keeps the returned handle.
    pub(crate) fn track(
        settings: &PoolSettings,
        pool: &bb8::Pool<Manager>,
        waiting: &Arc<AtomicU64>,
    ) -> Arc<Sampled> {
        let sampled = Arc::new(Sampled {
            name: settings.name,
            max_size: settings.max_size,
            pool: pool.clone(),
            waiting: waiting.clone(),
        });
        if settings.name == REPLICA {
            REPLICA_SEEN.store(true, Ordering::Relaxed);
        }
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|pool| pool.strong_count() > 0);
        live.push(Arc::downgrade(&sampled));
        sampled
    }

    fn status(&self) -> PoolStatus {
        PoolStatus::of(&self.pool, self.max_size, &self.waiting)
    }
}

/// Sets the pool gauges from every pool of the process, as they are now: call it
/// right before the installed recorder renders or pushes (a `/metrics` handler).
/// Pools of the same name (`primary`, `replica`) in several `Db`s add up.
pub fn record_pool_metrics() {
    let pools: Vec<Arc<Sampled>> = {
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|pool| pool.strong_count() > 0);
        live.iter().filter_map(Weak::upgrade).collect()
    };
    let mut primary = PoolGauges::default();
    let mut replica = PoolGauges::default();
    for pool in &pools {
        let status = pool.status();
        let sum = if pool.name == REPLICA {
            &mut replica
        } else {
            &mut primary
        };
        sum.idle += u64::from(status.idle);
        sum.used += u64::from(status.in_use);
        sum.max += u64::from(status.max_size);
        sum.pending += status.waiting;
    }
    // Read outside the lock; a pool whose last `Db` went meanwhile is dropped here.
    drop(pools);
    pool_gauges(PRIMARY, primary);
    if REPLICA_SEEN.load(Ordering::Relaxed) {
        pool_gauges(REPLICA, replica);
    }
}

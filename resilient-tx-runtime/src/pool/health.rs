//! [`PoolHealth`]: what a pool knows about its database's reachability, written by
//! the connection manager and read by checkouts, health probes and the attempt loop.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::TxError;

/// What the pool knows about the database's reachability, shared with the manager.
#[derive(Debug)]
pub(crate) struct PoolHealth {
    inner: Mutex<HealthState>,
    /// Bumped on every failed connect, so that callers waiting in the pool learn of it
    /// at once: bb8's `get()` itself waits out its whole timeout.
    connect_failures: tokio::sync::watch::Sender<u64>,
    /// A call met a read-only server (25006) where it needed to write: from then on,
    /// new connections of a multi-host URL skip read-only hosts.
    writable_needed: AtomicBool,
}

impl Default for PoolHealth {
    fn default() -> Self {
        PoolHealth {
            inner: Mutex::default(),
            connect_failures: tokio::sync::watch::Sender::new(0),
            writable_needed: AtomicBool::new(false),
        }
    }
}

#[derive(Debug, Default)]
struct HealthState {
    last_connect_ok: Option<Instant>,
    last_connect_error: Option<(Instant, TxError)>,
    suspect_since: Option<Instant>,
}

impl PoolHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn connected(&self) {
        self.lock().last_connect_ok = Some(Instant::now());
    }

    pub(crate) fn connect_failed(&self, error: TxError) {
        self.lock().last_connect_error = Some((Instant::now(), error));
    }

    /// Wakes the callers waiting in the pool after a failed connect. Called by bb8's
    /// error sink, not by the manager: bb8 counts the failed connect as pending until
    /// the manager has returned, and a checkout that starts while it is still counted
    /// asks for no connect of its own and waits out its whole timeout.
    pub(crate) fn connect_failure_counted(&self) {
        self.connect_failures.send_modify(|n| *n += 1);
    }

    /// A write met a read-only server: a standby, or a demoted primary.
    pub(crate) fn read_only_met(&self) {
        self.writable_needed.store(true, Ordering::Relaxed);
    }

    /// Whether new connections of a multi-host URL must pass over read-only hosts.
    pub(crate) fn writable_needed(&self) -> bool {
        self.writable_needed.load(Ordering::Relaxed)
    }

    /// A receiver that sees every connect failure from now on.
    pub(crate) fn watch_connect_failures(&self) -> tokio::sync::watch::Receiver<u64> {
        self.connect_failures.subscribe()
    }

    /// The last connect error, if no connect has succeeded since.
    pub(crate) fn current_connect_error(&self) -> Option<TxError> {
        let state = self.lock();
        match (&state.last_connect_error, state.last_connect_ok) {
            (Some((at, error)), Some(ok)) if *at > ok => Some(error.detached()),
            (Some((_, error)), None) => Some(error.detached()),
            _ => None,
        }
    }

    /// The most recent connect error, whether or not a connect succeeded since.
    pub(crate) fn last_connect_error(&self) -> Option<TxError> {
        self.lock()
            .last_connect_error
            .as_ref()
            .map(|(_, e)| e.detached())
    }

    /// Records that something failed in a way that may have killed every pooled
    /// connection (a restart, a failover): connections not verified since are checked
    /// once at their next checkout.
    pub(crate) fn mark_suspect(&self) {
        self.lock().suspect_since = Some(Instant::now());
    }

    /// Whether a connection last verified at `verified_at` must be checked before use.
    pub(crate) fn is_suspect(&self, verified_at: Instant) -> bool {
        self.lock()
            .suspect_since
            .is_some_and(|since| verified_at <= since)
    }
}

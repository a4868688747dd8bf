//! [`PoolHealth`]: what a pool knows about its database's reachability, written by
//! the connection manager and read by checkouts, health probes and the attempt loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::TxError;

/// What the pool knows about the database's reachability, shared with the manager.
#[derive(Debug)]
pub(crate) struct PoolHealth {
    inner: Mutex<HealthState>,
    /// Bumped on every failed connect, so that callers waiting in the pool learn of it
    /// at once: bb8's `get()` itself waits out its whole timeout.
    connect_failures: tokio::sync::watch::Sender<u64>,
    /// Bumped by a connect that succeeds after failures (an outage ended), so that
    /// calls sleeping out a connection backoff, or waiting for the outage prober, go on
    /// at once instead of each sleeping out its own delay.
    recovered: tokio::sync::watch::Sender<u64>,
    /// A call met a read-only server (25006) where it needed to write: from then on,
    /// new connections of a multi-host URL skip read-only hosts.
    writable_needed: AtomicBool,
    /// The outage prober (one per pool) is running.
    probing: AtomicBool,
}

impl Default for PoolHealth {
    fn default() -> Self {
        PoolHealth {
            inner: Mutex::default(),
            connect_failures: tokio::sync::watch::Sender::new(0),
            recovered: tokio::sync::watch::Sender::new(0),
            writable_needed: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        }
    }
}

#[derive(Debug, Default)]
struct HealthState {
    last_connect_ok: Option<Instant>,
    last_connect_error: Option<(Instant, TxError)>,
    suspect_since: Option<Instant>,
    /// When a caller last asked the pool for a connection.
    last_demand: Option<Instant>,
}

impl HealthState {
    /// A connect failed, and none has succeeded since.
    fn in_outage(&self) -> bool {
        match (&self.last_connect_error, self.last_connect_ok) {
            (Some((at, _)), Some(ok)) => *at > ok,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl PoolHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connect succeeded; wakes whoever waits for the end of an outage.
    pub(crate) fn connected(&self) {
        let ended_outage = {
            let mut state = self.lock();
            let in_outage = state.in_outage();
            state.last_connect_ok = Some(Instant::now());
            in_outage
        };
        if ended_outage {
            tracing::info!("connected to the database again after failed connects");
            self.recovered.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn connect_failed(&self, error: TxError) {
        self.lock().last_connect_error = Some((Instant::now(), error));
        self.connect_failures.send_modify(|n| *n += 1);
    }

    /// A connect failed and none has succeeded since.
    pub(crate) fn in_outage(&self) -> bool {
        self.lock().in_outage()
    }

    /// A receiver that sees the end of every outage from now on.
    pub(crate) fn watch_recovered(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    /// A caller asks for a connection now.
    pub(crate) fn note_demand(&self) {
        self.lock().last_demand = Some(Instant::now());
    }

    /// How long since a caller last asked for a connection.
    pub(crate) fn idle_for(&self) -> std::time::Duration {
        self.lock()
            .last_demand
            .map(|at| at.elapsed())
            .unwrap_or(std::time::Duration::MAX)
    }

    /// Claims the prober's place; `false` when a prober already runs.
    pub(crate) fn start_probing(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The prober has stopped.
    pub(crate) fn stop_probing(&self) {
        self.probing.store(false, Ordering::Release);
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
        match &state.last_connect_error {
            Some((_, error)) if state.in_outage() => Some(error.detached()),
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

/// Hands bb8's connect errors to [`PoolHealth`]. bb8 calls its error sink after it
/// has stopped counting the failed connect as pending; told any earlier (from the
/// manager's `connect`), a caller that starts waiting in that moment would find the
/// connect still pending, get no connect of its own, and miss the failure too, waiting
/// out the whole pool timeout.
#[derive(Debug, Clone)]
pub(crate) struct FailureSink(pub(crate) Arc<PoolHealth>);

impl bb8::ErrorSink<TxError> for FailureSink {
    fn sink(&self, error: TxError) {
        self.0.connect_failed(error);
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<TxError>> {
        Box::new(self.clone())
    }
}

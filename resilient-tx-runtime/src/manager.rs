//! The bb8 connection manager: a timeout around the whole connect, the `broken` flag,
//! and the last connect error kept so that a pool timeout can say why.
//!
//! bb8-postgres' manager falls short on exactly these three points (ERRORS.md), so the
//! runtime has its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;
use tokio_postgres::config::TargetSessionAttrs;

use crate::classify::{Phase, cause_of, client_timeout, to_tx_error};
use crate::connection::PgConnection;
use crate::error::TxError;
use crate::metrics::Counters;

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

    fn connected(&self) {
        self.lock().last_connect_ok = Some(Instant::now());
    }

    fn connect_failed(&self, error: TxError) {
        self.lock().last_connect_error = Some((Instant::now(), error));
        self.connect_failures.send_modify(|n| *n += 1);
    }

    /// A write met a read-only server: a standby, or a demoted primary.
    pub(crate) fn read_only_met(&self) {
        self.writable_needed.store(true, Ordering::Relaxed);
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

/// Opens connections for the pool.
pub(crate) struct Manager {
    /// One config per host of the URL, tried in order.
    pub(crate) hosts: Vec<tokio_postgres::Config>,
    pub(crate) connect_timeout: Duration,
    pub(crate) health: Arc<PoolHealth>,
    pub(crate) counters: Arc<Counters>,
}

impl Manager {
    /// Opens one connection, bounded as a whole (TCP connect, startup, authentication
    /// and the `target_session_attrs` check): tokio-postgres' own `connect_timeout`
    /// covers the TCP connect only.
    pub(crate) async fn open(&self) -> Result<PgConnection, TxError> {
        let mut failures = Vec::new();
        for config in &self.hosts {
            match self.open_one(config).await {
                Ok(conn) => {
                    self.health.connected();
                    self.counters.connection_opened();
                    return Ok(conn);
                }
                Err(error) => failures.push((describe_host(config), error)),
            }
        }
        let error = match failures.len() {
            0 => TxError::config("the database URL names no host"),
            1 => failures.remove(0).1,
            // Every host failed: name each, so a reader sees the whole picture rather
            // than only the last host's error.
            _ => {
                let (_, last) = &failures[failures.len() - 1];
                let summary: Vec<String> = failures
                    .iter()
                    .map(|(host, e)| format!("{host}: {}", e.message()))
                    .collect();
                TxError::with_details(
                    last.failure(),
                    format!("no database host could be used ({})", summary.join("; ")),
                    last.sqlstate().cloned(),
                    None,
                )
            }
        };
        tracing::warn!(error = %error, "connecting to the database failed");
        self.counters.connect_failed();
        self.health.connect_failed(error.clone());
        Err(error)
    }

    /// One host, bounded as a whole.
    async fn open_one(&self, config: &tokio_postgres::Config) -> Result<PgConnection, TxError> {
        // A URL that lists several hosts without `target_session_attrs` takes the
        // first that answers. Once a write met a read-only one, reconnecting to it
        // would meet the same refusal every time: ask each host whether it accepts
        // writes, as `target_session_attrs=read-write` does, and pass over those that
        // do not. (With a single host there is nothing to pass over to: its
        // connections keep retrying until it is writable again or the deadline ends.)
        let mut writable = None;
        if self.hosts.len() > 1
            && self.health.writable_needed.load(Ordering::Relaxed)
            && config.get_target_session_attrs() == TargetSessionAttrs::Any
        {
            let config = writable.insert(config.clone());
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        let config = writable.as_ref().unwrap_or(config);
        let result = tokio::time::timeout(self.connect_timeout, config.connect(NoTls)).await;
        match result {
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    // The query that meets a dead socket sees only "connection closed";
                    // the I/O error itself surfaces here, so log it.
                    if let Err(e) = connection.await {
                        tracing::debug!(cause = %cause_of(&e), "database connection ended");
                    }
                });
                Ok(PgConnection::new(client))
            }
            Ok(Err(e)) => Err(to_tx_error(e, Phase::Connect)),
            Err(_elapsed) => Err(client_timeout(Phase::Connect, self.connect_timeout)),
        }
    }
}

/// `host:port` for messages (never the password or the whole URL).
fn describe_host(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "?".to_owned(),
    };
    match config.get_ports().first() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = TxError;

    async fn connect(&self) -> Result<PgConnection, TxError> {
        self.open().await
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), TxError> {
        // Only used when checkout validation is switched on; bounded so that a silent
        // socket cannot hold the checkout.
        match tokio::time::timeout(self.connect_timeout, conn.client.simple_query("")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(to_tx_error(e, Phase::Statement)),
            Err(_) => Err(client_timeout(Phase::Statement, self.connect_timeout)),
        }
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        let unusable = conn.is_unusable();
        if unusable {
            self.counters.connection_discarded();
        }
        unusable
    }
}

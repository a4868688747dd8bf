//! The pool: bb8 over the runtime's own connection [`manager`], checkouts that replace
//! stale connections without an error and without a round trip in the common case, a
//! pool timeout turned into an error that says whether the database is down or the
//! pool is merely busy, and [`Session`]s for work outside a transaction attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bb8::RunError;
use tokio_postgres::SimpleQueryMessage;

use crate::classify::{Phase, client_timeout, human};
use crate::connection::{PgConnection, StatementPolicy};
use crate::error::{Failure, TxError};
use crate::metrics::{Counters, Stopwatch, checkout_ended};
use crate::tls::{TlsConnector, TlsParams};

#[cfg(feature = "metrics")]
mod gauges;
mod health;
mod manager;
mod pooled;
mod recoveries;
mod session;
mod status;

#[cfg(feature = "metrics")]
pub use gauges::record_pool_metrics;
pub(crate) use health::PoolHealth;
pub(crate) use pooled::Pooled;
pub(crate) use recoveries::Recoveries;
pub(crate) use session::Session;
pub use status::PoolStatus;

/// The name of the primary's pool in metrics.
pub(crate) use crate::metrics::names::PRIMARY;
/// The name of the read replica's pool in metrics.
pub(crate) use crate::metrics::names::REPLICA;

use manager::Manager;

/// How a pool opens and keeps connections.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    /// [`PRIMARY`] or [`REPLICA`]: the pool's label in metrics.
    pub(crate) name: &'static str,
    pub(crate) max_size: u32,
    pub(crate) min_idle: Option<u32>,
    pub(crate) pool_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    /// Shared by every pool of the `Db`: whether statements are named and cached,
    /// and when every cache must be dropped.
    pub(crate) statements: Arc<StatementPolicy>,
    /// Settings sent to the server with every connect (`-c name=value …`).
    pub(crate) server_settings: Option<String>,
}

/// The outage prober's first pause between connects; it doubles up to
/// [`PROBER_MAX_PAUSE`]. Short, because the first connect that succeeds is what ends
/// every waiting caller's outage.
const PROBER_FIRST_PAUSE: Duration = Duration::from_millis(5);

/// The outage prober's longest pause between connects (jittered down to half).
const PROBER_MAX_PAUSE: Duration = Duration::from_millis(20);

/// The prober stops once no caller has asked for a connection for this long.
const PROBER_IDLE_LIMIT: Duration = Duration::from_secs(5);

/// The pool and what it knows about the database.
pub(crate) struct Pool {
    pool: bb8::Pool<Manager>,
    pub(crate) health: Arc<PoolHealth>,
    counters: Arc<Counters>,
    /// [`PRIMARY`] or [`REPLICA`].
    name: &'static str,
    max_size: u32,
    pub(crate) pool_timeout: Duration,
    /// The URL asks for a writable server: a suspect connection is checked for that.
    requires_writable: bool,
    /// Callers waiting in `acquire`. bb8's own count of pending gets never goes down
    /// for a get that was abandoned (as `acquire` does when a connect fails), so the
    /// wrapper keeps its own. Shared with the metrics' view of the pool.
    waiting: Arc<AtomicU64>,
    /// Turns at the pool, one per connection it may open, handed out in the order
    /// callers ask (see [`Pooled`]).
    turns: tokio::sync::Semaphore,
    /// This pool as the metrics' gauges sample it; dropped with the pool.
    #[cfg(feature = "metrics")]
    _sampled: Arc<gauges::Sampled>,
}

/// Counts one waiting caller for as long as it lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool of connections to `hosts` (one config per host of the URL, tried in
    /// order, each with its `sslmode` set), over TLS as `tls` says. Opens nothing yet:
    /// connections are made on demand.
    pub(crate) fn new(
        hosts: Vec<tokio_postgres::Config>,
        tls: (TlsParams, TlsConnector),
        settings: &PoolSettings,
        counters: &Arc<Counters>,
    ) -> Pool {
        let requires_writable = hosts.iter().any(|config| {
            config.get_target_session_attrs()
                == tokio_postgres::config::TargetSessionAttrs::ReadWrite
        });
        let health = Arc::new(PoolHealth::default());
        let manager = Manager {
            hosts,
            connect_timeout: settings.connect_timeout,
            health: health.clone(),
            counters: counters.clone(),
            pool_name: settings.name,
            statements: settings.statements.clone(),
            tls,
            server_settings: settings.server_settings.clone(),
            server_settings_refused: Default::default(),
        };
        let pool = bb8::Pool::builder()
            .max_size(settings.max_size)
            .min_idle(settings.min_idle)
            .connection_timeout(settings.pool_timeout)
            .idle_timeout(settings.idle_timeout)
            .max_lifetime(settings.max_lifetime)
            // A round trip per checkout is the cost this runtime avoids; stale
            // connections are caught at checkout instead.
            .test_on_check_out(false)
            // One connect per attempt: the attempt loop paces reconnects with its own
            // backoff, deadline and retry budget.
            .retry_connection(false)
            .error_sink(Box::new(health::FailureSink(health.clone())))
            .build_unchecked(manager);
        let waiting = Arc::new(AtomicU64::new(0));
        Pool {
            #[cfg(feature = "metrics")]
            _sampled: gauges::Sampled::track(settings, &pool, &waiting),
            pool,
            health,
            counters: counters.clone(),
            name: settings.name,
            max_size: settings.max_size,
            pool_timeout: settings.pool_timeout,
            requires_writable,
            waiting,
            turns: tokio::sync::Semaphore::new(settings.max_size as usize),
        }
    }

    /// A connection for work outside a transaction attempt, within `bound`.
    pub(crate) async fn session(&self, bound: Duration) -> Result<Session<'_>, TxError> {
        Ok(Session::new(self.acquire(bound).await?))
    }

    /// Whether every connection the pool may open is open and checked out: a checkout
    /// would have to wait for a caller to finish.
    pub(crate) fn saturated(&self) -> bool {
        let state = self.pool.state();
        state.connections >= self.max_size && state.idle_connections == 0
    }

    /// Runs `sql` on a connection of its own, opened for it outside the pool and
    /// closed after, within `bound`: for a probe that must not wait behind busy
    /// callers.
    pub(crate) async fn query_outside(
        &self,
        sql: &str,
        bound: Duration,
    ) -> Result<Vec<SimpleQueryMessage>, TxError> {
        let work = async {
            // Outside the pool, so not seen by its error sink: the health hears of a
            // failed connect here.
            let conn = self
                .pool
                .dedicated_connection()
                .await
                .inspect_err(|error| self.health.connect_failed(error.clone()))?;
            conn.client
                .simple_query(sql)
                .await
                .map_err(|e| crate::classify::to_tx_error(e, Phase::Statement))
        };
        match tokio::time::timeout(bound, work).await {
            Ok(result) => result,
            Err(_) => Err(client_timeout(Phase::Statement, bound)),
        }
    }

    /// Checks out a usable connection within `bound` (see [`Pool::checkout`]), timed
    /// for the metrics.
    pub(crate) async fn acquire(&self, bound: Duration) -> Result<Pooled<'_>, TxError> {
        let started = Stopwatch::start();
        let checkout = self.checkout(bound).await;
        checkout_ended(
            self.name,
            &started,
            bound.min(self.pool_timeout),
            checkout.is_ok(),
        );
        checkout
    }

    /// Checks out a usable connection within `bound`.
    ///
    /// A connection whose socket is known closed is discarded and replaced at no cost.
    /// After a sign of trouble (a lost connection, a read-only server) connections that
    /// predate it are checked with one round trip each, once; otherwise there is no
    /// round trip at checkout.
    async fn checkout(&self, bound: Duration) -> Result<Pooled<'_>, TxError> {
        let deadline = tokio::time::Instant::now() + bound;
        let _waiting = Waiting::new(&self.waiting);
        self.health.note_demand();
        self.wait_out_outage(deadline, bound).await?;
        let turn = match tokio::time::timeout_at(deadline, self.turns.acquire()).await {
            Ok(Ok(turn)) => turn,
            // Never closed; the deadline came first.
            Ok(Err(_)) | Err(_) => return Err(self.timeout_error(bound)),
        };
        // Every replacement removes one connection, so the pool runs out of stale ones
        // after max_size rounds; the extra round is the fresh connection.
        for _ in 0..=self.max_size {
            let mut failures = self.health.watch_connect_failures();
            let checkout = async {
                tokio::select! {
                    got = self.pool.get() => got.map_err(|e| match e {
                        RunError::User(error) => error,
                        RunError::TimedOut => self.timeout_error(bound),
                    }),
                    // A connect made on our behalf failed: say so now rather than
                    // when the pool timeout runs out.
                    Ok(()) = failures.changed() => Err(self.timeout_error(bound)),
                }
            };
            let mut conn = match tokio::time::timeout_at(deadline, checkout).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(self.timeout_error(bound)),
            };
            if conn.is_unusable() {
                conn.condemn();
                self.counters.stale_connection_replaced(self.name);
                continue;
            }
            if self.health.is_suspect(conn.verified_at) {
                match tokio::time::timeout_at(deadline, self.verify(&mut conn)).await {
                    Ok(true) => conn.verified_at = Instant::now(),
                    Ok(false) | Err(_) => {
                        conn.condemn();
                        self.counters.stale_connection_replaced(self.name);
                        continue;
                    }
                }
            }
            return Ok(Pooled::new(conn, turn));
        }
        Err(self.timeout_error(bound))
    }

    /// While connects fail for a reason time can cure (refused, silent, the server
    /// starting up), one prober per pool keeps trying and callers wait for it, not
    /// each connecting on its own: connect attempts during an outage stay bounded
    /// whatever the number of callers, and every waiting caller goes on the moment a
    /// connect succeeds. `Err` (the last connect error) when `deadline` comes first.
    async fn wait_out_outage(
        &self,
        deadline: tokio::time::Instant,
        bound: Duration,
    ) -> Result<(), TxError> {
        let Some(error) = self.health.current_connect_error() else {
            return Ok(());
        };
        if !matches!(
            error.failure(),
            Failure::Unreachable | Failure::ConnectTimeout
        ) {
            // A refusal time will not cure (a password, a certificate): the caller's own
            // connect meets it again at once and returns it.
            return Ok(());
        }
        let mut recovered = self.health.watch_recovered();
        loop {
            // Waiting counts as asking: the prober goes on while anyone waits.
            self.health.note_demand();
            self.start_prober();
            if !self.health.in_outage() {
                return Ok(());
            }
            let slice = (tokio::time::Instant::now() + PROBER_IDLE_LIMIT / 2).min(deadline);
            match tokio::time::timeout_at(slice, recovered.changed()).await {
                Ok(_) => return Ok(()),
                Err(_) if slice >= deadline => return Err(self.timeout_error(bound)),
                Err(_) => {}
            }
        }
    }

    /// Starts the outage prober unless it runs: a task that connects outside the pool,
    /// paced by its own short jittered backoff, until a connect succeeds (the
    /// connection then joins the pool), the failure is one time will not cure, or no
    /// caller has asked for a connection for a while.
    fn start_prober(&self) {
        if !self.health.start_probing() {
            return;
        }
        let (pool, health) = (self.pool.clone(), self.health.clone());
        tokio::spawn(async move {
            let mut pause = PROBER_FIRST_PAUSE;
            while health.in_outage() && health.idle_for() < PROBER_IDLE_LIMIT {
                match pool.dedicated_connection().await {
                    Ok(conn) => {
                        // Room permitting, the waiting callers' first connection.
                        let _ = pool.add(conn);
                        break;
                    }
                    Err(error) => {
                        let curable = matches!(
                            error.failure(),
                            Failure::Unreachable | Failure::ConnectTimeout
                        );
                        health.connect_failed(error);
                        if !curable {
                            break;
                        }
                    }
                }
                let jittered = pause.mul_f64(0.5 + crate::backoff::draw() / 2.0);
                tokio::time::sleep(jittered).await;
                pause = (pause * 2).min(PROBER_MAX_PAUSE);
            }
            health.stop_probing();
        });
    }

    /// One round trip proving the connection works (and, where the URL requires it,
    /// that the server still accepts writes).
    async fn verify(&self, conn: &mut PgConnection) -> bool {
        if !self.requires_writable {
            return conn.client.simple_query("").await.is_ok();
        }
        match conn.client.simple_query("SHOW transaction_read_only").await {
            Ok(messages) => messages
                .iter()
                .any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get(0) == Some("off"))),
            Err(_) => false,
        }
    }

    /// Why no connection came within `bound`: the database is unreachable (say why),
    /// or every connection is busy.
    fn timeout_error(&self, bound: Duration) -> TxError {
        if let Some(cause) = self.health.current_connect_error() {
            return cause;
        }
        let state = self.pool.state();
        if state.connections >= self.max_size && state.idle_connections == 0 {
            return TxError::new(
                Failure::PoolExhausted,
                format!(
                    "no database connection became free within {}: all {} pooled connections \
                     are in use (the database answers; the load needs a larger pool or \
                     shorter transactions)",
                    human(bound.min(self.pool_timeout)),
                    self.max_size
                ),
            );
        }
        client_timeout(Phase::Connect, bound)
    }
}

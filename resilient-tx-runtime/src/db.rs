//! `Db`: the handle applications share. It owns the pool, the default policy, the
//! counters and the retry budget.

use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::TargetSessionAttrs;

use crate::budget::{RetryBudget, RetryBudgetConfig};
use crate::call::Call;
use crate::error::{AsTxError, TxError};
use crate::idempotency::{DEFAULT_TABLE, KeyTable};
use crate::manager::{Manager, PoolHealth};
use crate::marker::{DEFAULT_MARKER_TABLE, MarkerTable};
use crate::metrics::{Counters, Metrics};
use crate::policy::Policy;
use crate::pool::Pool;
use crate::status::PoolStatus;
use crate::tx::Tx;
use crate::verification::CommitVerification;

/// The future a [`Db::transaction_boxed`] body returns.
pub type BoxedBody<'t, T, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 't>>;

/// A pool of PostgreSQL connections and the policy that runs transactions on it.
/// Cheap to clone; every clone shares the pool, the counters and the retry budget.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
    /// This handle sends read-only calls to the primary too.
    primary_only: bool,
}

struct DbInner {
    pool: Pool,
    replica: Option<Pool>,
    policy: Policy,
    counters: Arc<Counters>,
    budget: RetryBudget,
    health_timeout: Duration,
    key_table: KeyTable,
    marker_table: MarkerTable,
    commit_verification: CommitVerification,
    idempotency_ready: tokio::sync::OnceCell<()>,
}

impl Db {
    /// A `Db` with default settings. Succeeds while the database is down (connections
    /// are made on demand); fails only on an invalid URL.
    pub async fn connect(url: &str) -> Result<Db, TxError> {
        Db::builder(url).build().await
    }

    /// Starts configuring a `Db` for `url` (libpq URI or key=value form; several hosts
    /// and `target_session_attrs=read-write` are understood).
    pub fn builder(url: &str) -> DbBuilder {
        DbBuilder::new(url)
    }

    /// Runs `body` as a transaction under `policy`, retrying as `#[retriable_tx]` does.
    ///
    /// Where the call must be `Send` (inside `tokio::spawn`, a web handler), use
    /// `#[retriable_tx]` or [`Db::transaction_boxed`]: the compiler cannot yet prove an
    /// async closure's future `Send`.
    ///
    /// ```no_run
    /// # async fn example(db: &resilient_tx_runtime::Db) -> Result<(), resilient_tx_runtime::TxError> {
    /// use resilient_tx_runtime::{Policy, TxError};
    /// let policy = Policy::default().retries(3);
    /// let n: i64 = db
    ///     .transaction(&policy, async |tx| {
    ///         let row = tx.query_one("SELECT count(*) FROM pg_class", &[]).await?;
    ///         Ok::<_, TxError>(row.get(0))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, E, F>(&self, policy: &Policy, mut body: F) -> Result<T, E>
    where
        F: AsyncFnMut(&mut Tx<'_>) -> Result<T, E>,
        E: From<TxError> + AsTxError,
    {
        let mut call = Call::with_policy(self, policy.clone(), "transaction");
        loop {
            let mut tx = call.begin().await?;
            let result = call.run(body(&mut tx)).await;
            if let ControlFlow::Break(done) = call.end(tx, result).await {
                return done;
            }
        }
    }

    /// [`Db::transaction`] for code that must be `Send` (a spawned task, a web
    /// handler): today's compiler cannot prove an async closure's future `Send` for
    /// every lifetime, so here the body returns a boxed future instead. Like the
    /// by-value parameters of a `#[retriable_tx]` function, what the body needs is
    /// cloned into each attempt.
    ///
    /// ```no_run
    /// # async fn example(db: resilient_tx_runtime::Db) {
    /// use resilient_tx_runtime::{Policy, TxError};
    /// tokio::spawn(async move {
    ///     let name = String::from("alpha");
    ///     let policy = Policy::default();
    ///     db.transaction_boxed(&policy, move |tx| {
    ///         let name = name.clone();
    ///         Box::pin(async move {
    ///             tx.execute("INSERT INTO servers(name) VALUES ($1)", &[&name]).await?;
    ///             Ok::<_, TxError>(())
    ///         })
    ///     })
    ///     .await
    /// });
    /// # }
    /// ```
    pub async fn transaction_boxed<T, E, F>(&self, policy: &Policy, mut body: F) -> Result<T, E>
    where
        F: for<'t, 'c> FnMut(&'t mut Tx<'c>) -> BoxedBody<'t, T, E>,
        E: From<TxError> + AsTxError,
    {
        let mut call = Call::with_policy(self, policy.clone(), "transaction");
        loop {
            let mut tx = call.begin().await?;
            let result = call.run(body(&mut tx)).await;
            if let ControlFlow::Break(done) = call.end(tx, result).await {
                return done;
            }
        }
    }

    /// The policy calls use where their attribute says nothing.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// A snapshot of the pool: connections, idle, in use, waiting callers.
    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus::of(&self.inner.pool)
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot()
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The pool that serves read-only calls through this handle, when it is not the
    /// primary's.
    pub(crate) fn replica(&self) -> Option<&Pool> {
        self.inner.replica.as_ref().filter(|_| !self.primary_only)
    }

    /// A handle on the same pools whose read-only calls go to the primary: for a read
    /// that must see the caller's own latest writes, which a replica may not have
    /// replayed yet.
    pub fn primary_only(&self) -> Db {
        Db {
            inner: self.inner.clone(),
            primary_only: true,
        }
    }

    /// A snapshot of the replica's pool, when one is configured.
    pub fn replica_pool_status(&self) -> Option<PoolStatus> {
        self.inner.replica.as_ref().map(PoolStatus::of)
    }

    pub(crate) fn pool_timeout(&self) -> Duration {
        self.inner.pool.pool_timeout
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub(crate) fn budget(&self) -> &RetryBudget {
        &self.inner.budget
    }

    pub(crate) fn health_timeout(&self) -> Duration {
        self.inner.health_timeout
    }

    pub(crate) fn key_table(&self) -> &KeyTable {
        &self.inner.key_table
    }

    pub(crate) fn marker_table(&self) -> &MarkerTable {
        &self.inner.marker_table
    }

    /// How calls without a key, not `idempotent`, verify an ambiguous COMMIT.
    pub fn commit_verification(&self) -> CommitVerification {
        self.inner.commit_verification
    }

    pub(crate) fn idempotency_ready(&self) -> &tokio::sync::OnceCell<()> {
        &self.inner.idempotency_ready
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("pool", &self.pool_status())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`Db`]. Every knob has a production-minded default.
#[derive(Debug, Clone)]
#[must_use]
pub struct DbBuilder {
    url: String,
    max_size: u32,
    min_idle: Option<u32>,
    pool_timeout: Duration,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    tcp_user_timeout: Duration,
    keepalives_idle: Duration,
    keepalives_interval: Duration,
    keepalives_retries: u32,
    health_timeout: Duration,
    application_name: Option<String>,
    policy: Policy,
    retry_budget: RetryBudgetConfig,
    idempotency_table: String,
    commit_marker_table: String,
    commit_verification: CommitVerification,
    replica_url: Option<String>,
}

impl DbBuilder {
    /// A pool for `url` with this builder's settings.
    fn pool_for(&self, url: &str, counters: &Arc<Counters>) -> Result<Pool, TxError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            // tokio-postgres' message names the option at fault, never its value.
            TxError::config(format!("invalid database URL: {e}"))
        })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(TxError::config(
                "sslmode=require is not supported yet: connections are made without TLS",
            ));
        }
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_application_name().is_none() {
            config.application_name(self.application_name.as_deref().unwrap_or("resilient-tx"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        config
            .keepalives(true)
            .keepalives_idle(self.keepalives_idle)
            .keepalives_interval(self.keepalives_interval)
            .keepalives_retries(self.keepalives_retries)
            .tcp_user_timeout(self.tcp_user_timeout);
        let requires_writable = config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite;
        let health = Arc::new(PoolHealth::default());
        let manager = Manager {
            hosts: crate::hosts::per_host(&config),
            connect_timeout: self.connect_timeout,
            health: health.clone(),
            counters: counters.clone(),
        };
        let pool = bb8::Pool::builder()
            .max_size(self.max_size)
            .min_idle(self.min_idle)
            .connection_timeout(self.pool_timeout)
            .idle_timeout(self.idle_timeout)
            .max_lifetime(self.max_lifetime)
            // A round trip per checkout is the cost this runtime avoids; stale
            // connections are caught by the pool wrapper instead.
            .test_on_check_out(false)
            // One connect per attempt: the attempt loop paces reconnects with its own
            // backoff, deadline and retry budget.
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Pool {
            pool,
            health,
            counters: counters.clone(),
            max_size: self.max_size,
            pool_timeout: self.pool_timeout,
            requires_writable,
            waiting: Default::default(),
        })
    }

    fn new(url: &str) -> Self {
        DbBuilder {
            url: url.to_owned(),
            max_size: 10,
            min_idle: None,
            pool_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            tcp_user_timeout: Duration::from_secs(15),
            keepalives_idle: Duration::from_secs(15),
            keepalives_interval: Duration::from_secs(5),
            keepalives_retries: 3,
            health_timeout: Duration::from_secs(1),
            application_name: None,
            policy: Policy::default(),
            retry_budget: RetryBudgetConfig::default(),
            idempotency_table: DEFAULT_TABLE.to_owned(),
            commit_marker_table: DEFAULT_MARKER_TABLE.to_owned(),
            commit_verification: CommitVerification::default(),
            replica_url: None,
        }
    }

    /// Most connections the pool opens (default 10).
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.max_size = max_size;
        self
    }

    /// Idle connections the pool keeps open (default: none kept ahead of demand).
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.min_idle = Some(min_idle);
        self
    }

    /// Longest wait for a free connection before `PoolExhausted` (default 5 s).
    pub fn pool_timeout(mut self, pool_timeout: Duration) -> Self {
        self.pool_timeout = pool_timeout;
        self
    }

    /// Bound on the whole connect: TCP, startup, authentication, session checks
    /// (default 3 s).
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Idle connections above `min_idle` are closed after this long (default 10 min).
    pub fn idle_timeout(mut self, idle_timeout: Option<Duration>) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Connections are closed after this age (default 30 min).
    pub fn max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// How long unacknowledged data may sit on a socket before the kernel drops the
    /// connection (TCP_USER_TIMEOUT, default 15 s).
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> Self {
        self.tcp_user_timeout = timeout;
        self
    }

    /// Bound on [`Db::health`] (default 1 s).
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// `application_name` of the connections, unless the URL sets one
    /// (default `resilient-tx`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The policy calls use where their attribute says nothing.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The retry budget shared by every call through this `Db`.
    pub fn retry_budget(mut self, budget: RetryBudgetConfig) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Where idempotency keys are stored: `schema.table` or `table`
    /// (default `resilient_tx.idempotency_keys`).
    pub fn idempotency_table(mut self, name: impl Into<String>) -> Self {
        self.idempotency_table = name.into();
        self
    }

    /// Where commit markers are stored: `schema.table` or `table`
    /// (default `resilient_tx.commit_markers`).
    pub fn commit_marker_table(mut self, name: impl Into<String>) -> Self {
        self.commit_marker_table = name.into();
        self
    }

    /// How a call without an idempotency key, not marked `idempotent`, settles a
    /// COMMIT whose reply was lost: by a marker row (the default; settles every case,
    /// for one more row per transaction), by its transaction's status (no table, but
    /// a COMMIT that survived a crash or failover is `CommitUnknown`), or not at all.
    /// See [`CommitVerification`].
    pub fn commit_verification(mut self, verification: CommitVerification) -> Self {
        self.commit_verification = verification;
        self
    }

    /// A read replica (or several hosts, any of them) that serves `read_only` calls,
    /// with the same pool settings. Reads fall back to the primary when the replica
    /// cannot be reached; [`Db::primary_only`] reads your own writes.
    pub fn read_replica(mut self, url: impl Into<String>) -> Self {
        self.replica_url = Some(url.into());
        self
    }

    /// Builds the `Db`. Does not wait for the database: it fails only when the
    /// configuration is invalid.
    pub async fn build(self) -> Result<Db, TxError> {
        if self.max_size == 0 {
            return Err(TxError::config("max_size must be at least 1"));
        }
        if self.min_idle.is_some_and(|m| m > self.max_size) {
            return Err(TxError::config("min_idle cannot exceed max_size"));
        }
        if self.pool_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(TxError::config(
                "pool_timeout and connect_timeout must be above zero",
            ));
        }
        KeyTable::validate(&self.idempotency_table)?;
        KeyTable::validate(&self.commit_marker_table)?;
        let counters = Arc::new(Counters::default());
        let pool = self.pool_for(&self.url, &counters)?;
        let replica = match &self.replica_url {
            Some(url) => Some(self.pool_for(url, &counters)?),
            None => None,
        };
        Ok(Db {
            primary_only: false,
            inner: Arc::new(DbInner {
                pool,
                replica,
                policy: self.policy,
                counters,
                budget: RetryBudget::new(self.retry_budget),
                health_timeout: self.health_timeout,
                key_table: KeyTable::new(&self.idempotency_table),
                marker_table: MarkerTable::new(&self.commit_marker_table),
                commit_verification: self.commit_verification,
                idempotency_ready: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

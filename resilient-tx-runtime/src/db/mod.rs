//! [`Db`]: the handle applications share, and every public method on it; each
//! delegates to the layer that owns the work. [`DbBuilder`] (in [`builder`]) makes one.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use crate::call::Call;
use crate::error::{AsTxError, TxError};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::outcome::CommitVerification;
use crate::policy::Policy;
use crate::pool::PoolStatus;
use crate::shared::{DbRef, Shared};
use crate::tables;
use crate::tx::Tx;

mod builder;

pub use builder::DbBuilder;

/// The future a [`Db::transaction_boxed`] body returns.
pub type BoxedBody<'t, T, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 't>>;

/// A pool of PostgreSQL connections and the policy that runs transactions on it.
/// Cheap to clone; every clone shares the pool, the counters and the retry budget.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Shared>,
    /// This handle sends read-only calls to the primary too.
    primary_only: bool,
}

impl<'db> From<&'db Db> for DbRef<'db> {
    fn from(db: &'db Db) -> DbRef<'db> {
        DbRef {
            shared: &db.inner,
            primary_only: db.primary_only,
        }
    }
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
        self.inner.pool.status()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot()
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
        self.inner.replica.as_ref().map(|pool| pool.status())
    }

    /// How calls without a key, not `idempotent`, verify an ambiguous COMMIT.
    pub fn commit_verification(&self) -> CommitVerification {
        self.inner.commit_verification
    }

    /// Probes the database within the configured health timeout (1 s by default):
    /// healthy or not, latency, the server's role, pool status, last error.
    pub async fn health(&self) -> Health {
        health::probe(&self.inner.pool, self.inner.health_timeout).await
    }

    /// Creates the runtime's tables (idempotency keys, commit counters, commit
    /// markers) if they do not exist, and adds what a table created by an older
    /// version lacks. Run it as the role that owns the schema (a migration role); calls
    /// by a role that may only read and write rows then never send DDL. Without it,
    /// calls create the tables on first use where the role may. Fails with a sentence
    /// naming what is missing when the role may not.
    pub async fn migrate(&self) -> Result<(), TxError> {
        let (tables, pool) = (&self.inner.tables, &self.inner.pool);
        tables.migrate(pool, pool.pool_timeout).await
    }

    /// Deletes stored idempotency keys older than `older_than`; returns how many.
    pub async fn purge_idempotency_keys(&self, older_than: Duration) -> Result<u64, TxError> {
        let (tables, pool) = (&self.inner.tables, &self.inner.pool);
        tables.ensure_keys(pool, pool.pool_timeout).await?;
        tables::purge(pool, &tables.keys.purge(older_than), pool.pool_timeout).await
    }

    /// Deletes the commit counters of connections that committed nothing for
    /// `older_than` (most of them are gone; a live one makes its row again); returns
    /// how many. Calls purge counters idle for an hour by themselves from time to time.
    pub async fn purge_commit_counters(&self, older_than: Duration) -> Result<u64, TxError> {
        let (tables, pool) = (&self.inner.tables, &self.inner.pool);
        tables.ensure_counters(pool, pool.pool_timeout).await?;
        tables::purge(pool, &tables.counters.purge(older_than), pool.pool_timeout).await
    }

    /// Deletes commit markers older than `older_than` (they matter only until the call
    /// that wrote them has returned); returns how many. Calls purge markers older than
    /// an hour by themselves from time to time.
    pub async fn purge_commit_markers(&self, older_than: Duration) -> Result<u64, TxError> {
        let (tables, pool) = (&self.inner.tables, &self.inner.pool);
        tables.ensure_markers(pool, pool.pool_timeout).await?;
        tables::purge(pool, &tables.markers.purge(older_than), pool.pool_timeout).await
    }

    /// A `Db` over freshly built shared state.
    fn new(shared: Shared) -> Db {
        Db {
            inner: Arc::new(shared),
            primary_only: false,
        }
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

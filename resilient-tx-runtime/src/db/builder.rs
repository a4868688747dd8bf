//! [`DbBuilder`]: the settings of a [`Db`], checked and turned into pools when built.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::Db;
use crate::budget::{RetryBudget, RetryBudgetConfig};
use crate::classify::cause_of;
use crate::connection::StatementPolicy;
use crate::error::TxError;
use crate::metrics::Counters;
use crate::outcome::CommitVerification;
use crate::policy::Policy;
use crate::pool::{PRIMARY, Pool, PoolSettings, REPLICA};
use crate::shared::Shared;
use crate::tables::{DEFAULT_COUNTER_TABLE, DEFAULT_KEY_TABLE, DEFAULT_MARKER_TABLE, Tables};
use crate::tls::{TlsConnector, split_tls_params};

/// Settings of a [`Db`]. Every knob has a production-minded default.
///
/// `Debug` shows where the URLs point (user, hosts, ports, database, `sslmode`), never a
/// password.
#[derive(Clone)]
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
    commit_counter_table: String,
    commit_verification: CommitVerification,
    replica_url: Option<String>,
    statement_cache: bool,
}

impl DbBuilder {
    /// A pool for `url` with this builder's settings, named `name` in metrics.
    fn pool_for(
        &self,
        url: &str,
        name: &'static str,
        counters: &Arc<Counters>,
        statements: &Arc<StatementPolicy>,
    ) -> Result<Pool, TxError> {
        // libpq's TLS parameters first: tokio-postgres knows only three of the six
        // modes and none of the certificate files.
        let (url, tls) = split_tls_params(url)?;
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| {
            // tokio-postgres' detail names the option at fault, never its value.
            TxError::config(format!("invalid database URL: {}", cause_of(&e)))
        })?;
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
        let settings = PoolSettings {
            name,
            max_size: self.max_size,
            min_idle: self.min_idle,
            pool_timeout: self.pool_timeout,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            statements: statements.clone(),
            server_settings: Some(self.server_settings()),
        };
        let connector = TlsConnector::new(&tls)?;
        let mut hosts = crate::hosts::per_host(&config);
        for host in &mut hosts {
            if let Some(name) = host.get_hosts().first().cloned() {
                host.ssl_mode(tls.first_mode_for(&name));
            }
        }
        Ok(Pool::new(hosts, (tls, connector), &settings, counters))
    }

    /// What the server side of each connection is told at connect: its own TCP
    /// keepalives and user timeout, matching the client's. After a partition the server
    /// hears no FIN; without these a session left idle in its transaction holds its locks
    /// until the kernel's keepalive gives up (two hours by default).
    fn server_settings(&self) -> String {
        format!(
            "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
             -c tcp_user_timeout={}",
            self.keepalives_idle.as_secs().max(1),
            self.keepalives_interval.as_secs().max(1),
            self.keepalives_retries,
            self.tcp_user_timeout.as_millis()
        )
    }

    pub(super) fn new(url: &str) -> Self {
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
            idempotency_table: DEFAULT_KEY_TABLE.to_owned(),
            commit_marker_table: DEFAULT_MARKER_TABLE.to_owned(),
            commit_counter_table: DEFAULT_COUNTER_TABLE.to_owned(),
            commit_verification: CommitVerification::default(),
            replica_url: None,
            statement_cache: true,
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

    /// Where commit counters are stored: `schema.table` or `table`
    /// (default `resilient_tx.commit_counters`).
    pub fn commit_counter_table(mut self, name: impl Into<String>) -> Self {
        self.commit_counter_table = name.into();
        self
    }

    /// How a call without an idempotency key, not marked `idempotent`, settles a
    /// COMMIT whose reply was lost: by a fenced per-connection counter (the default;
    /// settles every case, for a rewrite of one row per connection with each writing
    /// transaction), by a marker row (the same, for one more row per transaction), by
    /// its transaction's status (no table, but a COMMIT that survived a crash or
    /// failover is `CommitUnknown`), or not at all. See [`CommitVerification`].
    pub fn commit_verification(mut self, verification: CommitVerification) -> Self {
        self.commit_verification = verification;
        self
    }

    /// Whether statements are prepared once per connection and reused (default
    /// `true`). `false` for a pooler in transaction mode (PgBouncer before 1.21), where
    /// the next transaction may run on another server connection: the runtime then
    /// never creates a named prepared statement, and sends each statement unnamed
    /// (parsed, bound and run in one flight, at the price of a parse per statement).
    /// With the cache on, a prepared statement the server connection turns out not to
    /// have switches the `Db` to unnamed statements by itself, with a warning.
    pub fn statement_cache(mut self, enabled: bool) -> Self {
        self.statement_cache = enabled;
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
        let tables = Tables::new(
            &self.idempotency_table,
            &self.commit_marker_table,
            &self.commit_counter_table,
        )?;
        let counters = Arc::new(Counters::default());
        let statements = StatementPolicy::new(self.statement_cache);
        let pool = self.pool_for(&self.url, PRIMARY, &counters, &statements)?;
        let replica = match &self.replica_url {
            Some(url) => Some(self.pool_for(url, REPLICA, &counters, &statements)?),
            None => None,
        };
        Ok(Db::new(Shared {
            pool,
            replica,
            policy: self.policy,
            counters,
            budget: RetryBudget::new(self.retry_budget),
            health_timeout: self.health_timeout,
            tables,
            commit_verification: self.commit_verification,
        }))
    }
}

impl std::fmt::Debug for DbBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbBuilder")
            .field("url", &Redacted(&self.url))
            .field("replica_url", &self.replica_url.as_deref().map(Redacted))
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("pool_timeout", &self.pool_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("health_timeout", &self.health_timeout)
            .field("application_name", &self.application_name)
            .field("policy", &self.policy)
            .field("retry_budget", &self.retry_budget)
            .field("idempotency_table", &self.idempotency_table)
            .field("commit_marker_table", &self.commit_marker_table)
            .field("commit_counter_table", &self.commit_counter_table)
            .field("commit_verification", &self.commit_verification)
            .field("statement_cache", &self.statement_cache)
            .finish_non_exhaustive()
    }
}

/// A database URL as `Debug` shows it: what it points at, rebuilt from the parsed
/// settings, so no form of writing a password (`user:pw@`, `password=`, `?password=`)
/// can slip through.
struct Redacted<'a>(&'a str);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parsed = split_tls_params(self.0).ok().and_then(|(rest, tls)| {
            tokio_postgres::Config::from_str(&rest)
                .ok()
                .map(|config| (config, tls))
        });
        let Some((config, tls)) = parsed else {
            return f.write_str("\"<unparsable database URL>\"");
        };
        let hosts: Vec<String> = crate::hosts::per_host(&config)
            .iter()
            .map(|host| {
                let name = match host.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
                    Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                    None => "localhost".to_owned(),
                };
                match host.get_ports().first() {
                    Some(port) => format!("{name}:{port}"),
                    None => name,
                }
            })
            .collect();
        let user = config
            .get_user()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let password = match config.get_password() {
            Some(_) => " password=<hidden>",
            None => "",
        };
        write!(
            f,
            "\"postgres://{user}{}/{} sslmode={}{password}\"",
            hosts.join(","),
            config.get_dbname().unwrap_or_default(),
            tls.mode()
        )
    }
}

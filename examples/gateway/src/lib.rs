//! # gateway
//!
//! A small service registry over HTTP whose database code is written only with
//! `#[retriable_tx]`: it keeps answering sensibly through database restarts,
//! failovers, killed connections and partitions, without a restart of its own.
//!
//! * `/api/servers` — list (`?name=`), create (`Idempotency-Key`), get, update,
//!   delete; bearer token required. [`store`] holds the transactions, [`errors`]
//!   the error codes.
//! * `/health/live`, `/health/ready`, `/health/status` — probes and pool status.
//! * `/api/test/...` — routes only the resilience suite uses, served when
//!   [`Config::test_endpoints`] is on ([`testing`]).
//!
//! [`resilience`] holds the thirteen cases of the resilience matrix (connection loss,
//! pool, failover, transaction safety) as functions that start real PostgreSQL servers,
//! inject the fault and return an observation; the tests and the `resilience` binary
//! both run them.
//!
//! [`serve`] starts the whole application in-process and returns a [`Server`]
//! handle, so tests and the resilience suite can run it against any database and
//! pool settings:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = gateway::Config::new("postgres://app@db1,db2/app?target_session_attrs=read-write", "token");
//! config.listen = "127.0.0.1:0".parse()?;
//! let server = gateway::serve(config).await?;
//! println!("listening on {}", server.url());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs, missing_debug_implementations)]

mod api;
mod app;
mod auth;
pub mod config;
pub mod errors;
mod health;
mod local_db;
pub mod model;
pub mod resilience;
pub mod store;
pub mod testing;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use resilient_tx::{Db, Policy, TxError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use api::{CONSISTENCY, IDEMPOTENCY_KEY};
pub use config::{Config, ConfigError, PoolSettings};

use app::AppState;
use auth::BearerToken;
use local_db::LocalDatabase;
use store::Schema;

/// Why the gateway could not start. A database that is down is NOT one of them: the
/// gateway starts, answers 503 and recovers when the database comes back.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The settings are invalid.
    Config(ConfigError),
    /// The database settings are invalid (for example a malformed URL).
    Database(TxError),
    /// No `DATABASE_URL` and the throwaway local server could not start.
    LocalDatabase(io::Error),
    /// The listen address could not be bound.
    Bind(SocketAddr, io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid configuration: {e}"),
            StartError::Database(e) => write!(f, "invalid database settings: {e}"),
            StartError::LocalDatabase(e) => write!(f, "{e}"),
            StartError::Bind(addr, e) => write!(f, "could not listen on {addr}: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Config(e) => Some(e),
            StartError::Database(e) => Some(e),
            StartError::LocalDatabase(e) | StartError::Bind(_, e) => Some(e),
        }
    }
}

/// A running gateway. Dropping it stops accepting requests (in-flight ones finish) and
/// stops a throwaway database; [`Server::shutdown`] does the same and waits.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    token: BearerToken,
    db: Db,
    /// Dropping or sending on it starts the graceful shutdown.
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
    local: Option<LocalDatabase>,
}

impl Server {
    /// The address the gateway listens on (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, to prefix paths with. A gateway listening on all interfaces is
    /// reached through loopback.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }

    /// The bearer token `/api` requests must present (the generated one, with a
    /// throwaway database).
    pub fn token(&self) -> &str {
        self.token.expose()
    }

    /// The gateway's `Db`: its pool status and counters, for tests and suites.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The URL of the throwaway local database, when the gateway started one.
    pub fn local_database_url(&self) -> Option<String> {
        self.local.as_ref().map(LocalDatabase::url)
    }

    /// Stops accepting connections, waits for in-flight requests to finish, then
    /// stops the throwaway database if there is one.
    pub async fn shutdown(self) -> io::Result<()> {
        // The receiver is gone only if the server task already ended; then there is
        // nothing to signal.
        let _ = self.shutdown.send(());
        let served = match self.task.await {
            Ok(result) => result,
            Err(join_error) => Err(io::Error::other(format!(
                "the HTTP server task failed: {join_error}"
            ))),
        };
        if let Some(local) = self.local {
            local.stop().await;
        }
        served
    }
}

/// Starts the gateway: binds the listener, opens the pool (without waiting for the
/// database), starts the schema migration in the background and serves until the
/// returned [`Server`] is shut down or dropped.
pub async fn serve(config: Config) -> Result<Server, StartError> {
    config.validate().map_err(StartError::Config)?;
    // Bind first: a port in use should not cost a throwaway database.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(config.listen, e))?;

    let (local, url, token) = match config.database_url.clone() {
        Some(url) => {
            let token = config.token.clone().ok_or_else(|| {
                StartError::Config(ConfigError(
                    "a bearer token is required with DATABASE_URL".to_owned(),
                ))
            })?;
            (None, url, token)
        }
        None => {
            let local = LocalDatabase::start()
                .await
                .map_err(StartError::LocalDatabase)?;
            let url = local.url();
            let token = config.token.clone().unwrap_or_else(auth::generate_token);
            (Some(local), url, token)
        }
    };

    let db = open_db(&config, &url).await?;
    let state = AppState {
        db: db.clone(),
        token: BearerToken::new(token),
        schema: Arc::new(Schema::default()),
        test_schema: Arc::new(Schema::default()),
    };
    // Best effort: with the database up the schema is ready before the first
    // request; with it down, requests and readiness probes retry the migration.
    {
        let (schema, db) = (state.schema.clone(), db.clone());
        tokio::spawn(async move {
            if let Err(error) = schema.ensure(&db).await {
                tracing::warn!(%error, "could not create the schema yet; requests will retry");
            }
        });
    }

    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let router = app::router(state.clone(), config.test_endpoints);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                // A send and a dropped sender both mean "shut down".
                let _ = shutdown_requested.await;
            })
            .await
    });
    tracing::info!(
        %addr,
        database = if local.is_some() { "throwaway local server" } else { "DATABASE_URL" },
        min_idle = config.pool.min_idle,
        max_size = config.pool.max_size,
        pool_timeout_ms = config.pool.pool_timeout.as_millis(),
        statement_timeout_ms = config.statement_timeout.map(|t| t.as_millis()),
        deadline_ms = config.deadline.as_millis(),
        retries = config.retries,
        read_replica = config.database_replica_url.is_some(),
        test_endpoints = config.test_endpoints,
        "gateway listening"
    );
    Ok(Server {
        addr,
        token: state.token,
        db,
        shutdown,
        task,
        local,
    })
}

/// The pool (and the replica's, with the same settings) and the default policy every
/// `#[retriable_tx]` call falls back to. The per-attempt timeout goes through the
/// policy because the macro's `timeout` option takes only a literal.
async fn open_db(config: &Config, url: &str) -> Result<Db, StartError> {
    let mut policy = Policy::default()
        .deadline(config.deadline)
        .retries(config.retries);
    if let Some(timeout) = config.statement_timeout {
        policy = policy.timeout(timeout);
    }
    let mut builder = Db::builder(url);
    if let Some(replica) = &config.database_replica_url {
        builder = builder.read_replica(replica.clone());
    }
    builder
        .max_size(config.pool.max_size)
        .min_idle(config.pool.min_idle)
        .pool_timeout(config.pool.pool_timeout)
        .connect_timeout(config.pool.connect_timeout)
        .application_name(config.application_name.clone())
        .policy(policy)
        .build()
        .await
        .map_err(StartError::Database)
}

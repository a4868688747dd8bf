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
//! * `/metrics` — the runtime's metrics in Prometheus' text format; bearer token
//!   required. The first gateway of a process installs the Prometheus recorder
//!   (`metrics-exporter-prometheus`) as the global one; every gateway of the process
//!   renders from it ([`Config::metrics`] turns it off).
//!
//! [`serve`] starts the whole application in-process and returns a [`Server`]
//! handle, so tests can run it against any database and pool settings:
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
//!
//! [`serve_with`] does the same with routes of your own added under `/api`: they get
//! the bearer token check, the access log and the gateway's [`AppState`] (its `Db`,
//! the schema, the read-replica choice), and answer errors the way the rest of the API
//! does ([`errors::ApiError`]):
//!
//! ```no_run
//! use axum::extract::State;
//! use axum::routing::get;
//! use axum::{Json, Router};
//! use gateway::AppState;
//! use gateway::errors::ApiError;
//!
//! /// `GET /api/pool`: the pool's size, behind the token like the rest of `/api`.
//! async fn pool(State(state): State<AppState>) -> Result<Json<u32>, ApiError> {
//!     Ok(Json(state.db().pool_status().connections))
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = gateway::Config::from_env()?;
//! let server = gateway::serve_with(config, Router::new().route("/pool", get(pool))).await?;
//! # server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! With the `local-db` feature, a [`Config`] without a database URL starts a throwaway
//! local PostgreSQL server for the process's lifetime (`cargo run -p gateway
//! --features local-db`); without it, the URL is required.

#![deny(missing_docs, missing_debug_implementations)]

mod api;
mod app;
mod auth;
pub mod config;
pub mod errors;
mod health;
#[cfg(feature = "local-db")]
mod local_db;
mod metrics;
pub mod model;
pub mod store;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use resilient_tx::{Db, Policy, TxError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use api::{CONSISTENCY, IDEMPOTENCY_KEY};
pub use app::AppState;
pub use config::{Config, ConfigError, PoolSettings};

use auth::BearerToken;
#[cfg(feature = "local-db")]
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
    /// No `DATABASE_URL` and the throwaway local server could not start (only with
    /// the `local-db` feature).
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
    #[cfg(feature = "local-db")]
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

    /// The URL of the throwaway local database, when the gateway started one (only
    /// with the `local-db` feature; `None` otherwise).
    pub fn local_database_url(&self) -> Option<String> {
        #[cfg(feature = "local-db")]
        return self.local.as_ref().map(LocalDatabase::url);
        #[cfg(not(feature = "local-db"))]
        None
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
        #[cfg(feature = "local-db")]
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
    serve_with(config, Router::new()).await
}

/// [`serve`], with `routes` of the caller's own served under `/api` next to the
/// gateway's: behind the same bearer token and access log, with the gateway's
/// [`AppState`] (`State<AppState>` in a handler reaches its `Db`), and the same
/// not-found and method-not-allowed answers. Paths are relative to `/api`
/// (`/reports` is served as `/api/reports`) and must not repeat the gateway's own
/// (`/servers`, `/servers/{id}`): axum refuses overlapping routes with a panic while
/// the router is built, before anything is served.
pub async fn serve_with(config: Config, routes: Router<AppState>) -> Result<Server, StartError> {
    config.validate().map_err(StartError::Config)?;
    // Bind first: a port in use should not cost a throwaway database.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(config.listen, e))?;

    #[cfg(feature = "local-db")]
    let (local, url, token) = match config.database_url.clone() {
        Some(url) => (None, url, required_token(&config)?),
        None => {
            let local = LocalDatabase::start()
                .await
                .map_err(StartError::LocalDatabase)?;
            let url = local.url();
            let token = config.token.clone().unwrap_or_else(auth::generate_token);
            (Some(local), url, token)
        }
    };
    #[cfg(not(feature = "local-db"))]
    let (url, token) = match config.database_url.clone() {
        Some(url) => (url, required_token(&config)?),
        // `validate` refuses this already; kept so the invariant does not rest on it.
        None => {
            return Err(StartError::Config(ConfigError(
                config::MISSING_DATABASE_URL.to_owned(),
            )));
        }
    };
    #[cfg(feature = "local-db")]
    let throwaway = local.is_some();
    #[cfg(not(feature = "local-db"))]
    let throwaway = false;

    // Installed before the `Db` is built: what the runtime records before a recorder
    // exists is lost.
    let exported = config.metrics && metrics::exporter().is_some();
    let db = open_db(&config, &url).await?;
    let state = AppState {
        db: db.clone(),
        token: BearerToken::new(token),
        schema: Arc::new(Schema::default()),
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
    let router = app::router(state.clone(), routes, config.metrics);
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
        database = if throwaway { "throwaway local server" } else { "DATABASE_URL" },
        min_idle = config.pool.min_idle,
        max_size = config.pool.max_size,
        pool_timeout_ms = config.pool.pool_timeout.as_millis(),
        statement_timeout_ms = config.statement_timeout.map(|t| t.as_millis()),
        deadline_ms = config.deadline.as_millis(),
        retries = config.retries,
        read_replica = config.database_replica_url.is_some(),
        metrics = exported,
        statement_cache = config.statement_cache,
        "gateway listening"
    );
    Ok(Server {
        addr,
        token: state.token,
        db,
        shutdown,
        task,
        #[cfg(feature = "local-db")]
        local,
    })
}

/// The configured token, which a real database URL needs.
fn required_token(config: &Config) -> Result<String, StartError> {
    config.token.clone().ok_or_else(|| {
        StartError::Config(ConfigError(
            "a bearer token is required with DATABASE_URL".to_owned(),
        ))
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
        .statement_cache(config.statement_cache)
        .policy(policy)
        .build()
        .await
        .map_err(StartError::Database)
}

//! The bb8 connection manager: a timeout around the whole connect, the `broken` flag,
//! and the last connect error kept so that a pool timeout can say why.
//!
//! bb8-postgres' manager falls short on exactly these three points (ERRORS.md), so the
//! runtime has its own.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres::config::TargetSessionAttrs;

use super::PoolHealth;
use crate::classify::{Phase, cause_of, client_timeout, to_tx_error};
use crate::connection::{PgConnection, StatementPolicy};
use crate::error::TxError;
use crate::metrics::Counters;

/// Opens connections for the pool.
pub(crate) struct Manager {
    /// One config per host of the URL, tried in order.
    pub(crate) hosts: Vec<tokio_postgres::Config>,
    pub(crate) connect_timeout: Duration,
    pub(crate) health: Arc<PoolHealth>,
    pub(crate) counters: Arc<Counters>,
    /// Shared by every connection of the `Db`.
    pub(crate) statements: Arc<StatementPolicy>,
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
            && self.health.writable_needed()
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
                Ok(PgConnection::new(client, self.statements.clone()))
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

//! The bb8 connection manager: TLS with libpq's modes, a timeout around the whole
//! connect, the `broken` flag, and the last connect error kept so that a pool timeout
//! can say why.
//!
//! bb8-postgres' manager falls short on the last three points (ERRORS.md), so the
//! runtime has its own.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{Host, TargetSessionAttrs};

use super::PoolHealth;
use crate::classify::{Phase, cause_of, client_timeout, connect_error, human, to_tx_error};
use crate::connection::{PgConnection, StatementPolicy};
use crate::error::{Failure, TxError};
use crate::metrics::Counters;
use crate::tls::{
    SslMode, TlsConnector, TlsParams, describe_tls_failure, fallback_after,
    is_certificate_rejected, refused_by_hba, server_lacks_tls,
};

/// Opens connections for the pool.
pub(crate) struct Manager {
    /// One config per host of the URL, tried in order.
    pub(crate) hosts: Vec<tokio_postgres::Config>,
    pub(crate) connect_timeout: Duration,
    pub(crate) health: Arc<PoolHealth>,
    pub(crate) counters: Arc<Counters>,
    /// Shared by every connection of the `Db`.
    pub(crate) statements: Arc<StatementPolicy>,
    /// The URL's TLS parameters, and the connector made from them.
    pub(crate) tls: (TlsParams, TlsConnector),
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
                Err(error) => failures.push(error),
            }
        }
        let error = match failures.len() {
            0 => TxError::config("the database URL names no host"),
            1 => failures.remove(0),
            // Every host failed: say each one's error, so a reader sees the whole picture
            // rather than only the last host's. A `Config` error (a certificate that
            // does not verify) is the one to act on, whichever host it came from.
            _ => {
                let failure = failures
                    .iter()
                    .map(TxError::failure)
                    .find(|f| *f == Failure::Config)
                    .unwrap_or_else(|| failures[failures.len() - 1].failure());
                let last = &failures[failures.len() - 1];
                let summary: Vec<&str> = failures.iter().map(TxError::message).collect();
                TxError::with_details(
                    failure,
                    format!("no database host could be used: {}", summary.join("; ")),
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
        let host = describe_host(config);
        let (params, connector) = &self.tls;
        // libpq's `allow` and `prefer` make a second attempt after some refusals; both
        // fit in the one bound.
        let attempt = async {
            match config.connect(connector.clone()).await {
                Ok(connected) => Ok(connected),
                Err(error) => {
                    let Some(mode) = config
                        .get_hosts()
                        .first()
                        .and_then(|h| fallback_after(params, h, &error))
                    else {
                        return Err(error);
                    };
                    let mut second = config.clone();
                    second.ssl_mode(mode);
                    second.connect(connector.clone()).await
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
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
            Ok(Err(e)) => Err(tls_error(&e, params, &host).unwrap_or_else(|| {
                let unencrypted = params.mode() == SslMode::Disable && refused_by_hba(&e);
                let error = connect_error(e, &host);
                if unencrypted {
                    refused_in_plain_text(&error)
                } else {
                    error
                }
            })),
            Err(_elapsed) => Err(TxError::new(
                Failure::ConnectTimeout,
                format!(
                    "could not connect to the database at {host} within {}",
                    human(self.connect_timeout)
                ),
            )),
        }
    }
}

/// A TLS problem retrying cannot fix, as a `Config` error naming the host: a
/// certificate that fails verification, a server without TLS where the mode insists
/// on it, a handshake that fails where TLS is required.
fn tls_error(error: &tokio_postgres::Error, params: &TlsParams, host: &str) -> Option<TxError> {
    let insists = matches!(
        params.mode(),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
    );
    if server_lacks_tls(error) {
        return Some(TxError::config(format!(
            "the database at {host} does not accept TLS, and sslmode={} requires it",
            params.mode()
        )));
    }
    let sentence = describe_tls_failure(error, params)?;
    if is_certificate_rejected(error) || insists {
        return Some(TxError::config(format!(
            "could not connect to the database at {host} over TLS: {sentence}"
        )));
    }
    None
}

/// pg_hba.conf refused a connection `sslmode=disable` made in plain text. The server's
/// words ("no encryption") do not say what to change in the URL; this does. Still a
/// `Database` error: the same URL meets the same refusal every time.
fn refused_in_plain_text(error: &TxError) -> TxError {
    TxError::with_details(
        error.failure(),
        format!(
            "{}; sslmode=disable connects without TLS: if the server accepts only TLS \
             connections, use sslmode=verify-full (with sslrootcert) or sslmode=require",
            error.message()
        ),
        error.sqlstate().cloned(),
        None,
    )
}

/// `host:port` for messages (never the password or the whole URL).
fn describe_host(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
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

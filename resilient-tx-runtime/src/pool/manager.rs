//! The bb8 connection manager: TLS with libpq's modes, a timeout around the whole
//! connect, the `broken` flag, and the last connect error kept so that a pool timeout
//! can say why.
//!
//! bb8-postgres' manager falls short on the last three points (ERRORS.md), so the
//! runtime has its own.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::Config;
use tokio_postgres::tls::MakeTlsConnect;

use tokio_postgres::config::{Host, TargetSessionAttrs};

use super::PoolHealth;
use crate::classify::{Phase, cause_of, client_timeout, connect_error, human, to_tx_error};
use crate::connection::{PgConnection, StatementPolicy};
use crate::error::{Failure, TxError};
use crate::metrics::{Counters, Stopwatch};
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
    /// The pool's name in metrics.
    pub(crate) pool_name: &'static str,
    /// Shared by every connection of the `Db`.
    pub(crate) statements: Arc<StatementPolicy>,
    /// The URL's TLS parameters, and the connector made from them.
    pub(crate) tls: (TlsParams, TlsConnector),
    /// Server settings sent with every connect (`-c name=value …`), unless a server
    /// refused them once (a pooler that takes no `options` startup parameter).
    pub(crate) server_settings: Option<String>,
    pub(crate) server_settings_refused: AtomicBool,
}

impl Manager {
    /// Opens one connection, bounded as a whole (TCP connect, startup, authentication
    /// and the `target_session_attrs` check): tokio-postgres' own `connect_timeout`
    /// covers the TCP connect only.
    pub(crate) async fn open(&self) -> Result<PgConnection, TxError> {
        let started = Stopwatch::start();
        let mut failures = Vec::new();
        for config in &self.hosts {
            match self.open_one(config).await {
                Ok(conn) => {
                    self.health.connected();
                    self.counters.connection_opened(self.pool_name, &started);
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
        // Said once per outage; the connects that follow it fail the same way.
        if self.health.in_outage() {
            tracing::debug!(error = %error, "connecting to the database failed again");
        } else {
            tracing::warn!(error = %error, "connecting to the database failed");
        }
        self.counters
            .connect_failed(self.pool_name, error.failure());
        // The pool's health learns of it from bb8's error sink ([`FailureSink`](super::health::FailureSink)),
        // once bb8 no longer counts this connect as pending.
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
        let mut config = Cow::Borrowed(config);
        if self.hosts.len() > 1
            && self.health.writable_needed()
            && config.get_target_session_attrs() == TargetSessionAttrs::Any
        {
            config
                .to_mut()
                .target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        let host = describe_host(&config);
        let attempt = async {
            let Some(with_settings) = self.with_server_settings(&config) else {
                return self.connect_tls(&config).await;
            };
            match self.connect_tls(&with_settings).await {
                Err(error) if refuses_options(&error) => {
                    // PgBouncer, for one, refuses the `options` startup parameter
                    // unless told to ignore it. The settings are a bound on orphaned
                    // sessions, not a condition: connect without them from now on.
                    if !self.server_settings_refused.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            host,
                            "the server does not take session settings at connect (a pooler?): \
                             connecting without the server-side keepalive settings"
                        );
                    }
                    self.connect_tls(&config).await
                }
                other => other,
            }
        };
        let params = &self.tls.0;
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

impl Manager {
    /// `config` with the server settings added to its `options`, unless there are none
    /// or a server refused them.
    fn with_server_settings(&self, config: &Config) -> Option<Config> {
        let settings = self.server_settings.as_deref()?;
        if self.server_settings_refused.load(Ordering::Relaxed) {
            return None;
        }
        let mut config = config.clone();
        let options = match config.get_options() {
            Some(user) => format!("{user} {settings}"),
            None => settings.to_owned(),
        };
        config.options(&options);
        Some(config)
    }

    /// One connect over TLS as the URL's `sslmode` says: libpq's `allow` and `prefer`
    /// make a second attempt after some refusals.
    async fn connect_tls(&self, config: &Config) -> Result<Connected, tokio_postgres::Error> {
        let (params, connector) = &self.tls;
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
    }
}

/// A client and its connection task, as `Config::connect` returns them.
type Connected = (
    tokio_postgres::Client,
    tokio_postgres::Connection<
        tokio_postgres::Socket,
        <TlsConnector as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
    >,
);

/// A pooler's refusal of the `options` startup parameter ("unsupported startup
/// parameter: options", FATAL 08P01: PgBouncer's own words, never translated).
fn refuses_options(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        db.code() == &tokio_postgres::error::SqlState::PROTOCOL_VIOLATION
            && db.message().contains("unsupported startup parameter")
    })
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
            self.counters.connection_discarded(self.pool_name);
        }
        unusable
    }
}

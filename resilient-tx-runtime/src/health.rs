//! `Db::health`: one bounded probe of the database through the pool.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::SimpleQueryMessage;

use crate::classify::{Phase, client_timeout, to_tx_error};
use crate::db::Db;
use crate::error::TxError;
use crate::status::PoolStatus;

/// What a server is in a replication setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// Accepts writes.
    Primary,
    /// A standby in recovery: reads only.
    Standby,
}

/// The outcome of one health probe.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub struct Health {
    /// The probe reached the database and got an answer in time.
    pub healthy: bool,
    /// How long the probe took (checkout plus one round trip), when it succeeded.
    pub latency: Option<Duration>,
    /// The role of the server that answered.
    pub role: Option<ServerRole>,
    /// The pool at the time of the probe.
    pub pool: PoolStatus,
    /// Why the probe failed; on success, the last connect error seen, if any.
    pub last_error: Option<String>,
}

impl Db {
    /// Probes the database within the configured health timeout (1 s by default):
    /// healthy or not, latency, the server's role, pool status, last error.
    pub async fn health(&self) -> Health {
        let started = Instant::now();
        let bound = self.health_timeout();
        let probe = async {
            let mut conn = self.pool().acquire(bound).await?;
            match conn.client.simple_query("SELECT pg_is_in_recovery()").await {
                Ok(messages) => Ok(messages.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => match row.get(0) {
                        Some("t") => Some(ServerRole::Standby),
                        Some("f") => Some(ServerRole::Primary),
                        _ => None,
                    },
                    _ => None,
                })),
                Err(e) => {
                    conn.broken = true;
                    Err(to_tx_error(e, Phase::Statement))
                }
            }
        };
        let outcome: Result<Option<ServerRole>, TxError> =
            match tokio::time::timeout(bound, probe).await {
                Ok(result) => result,
                Err(_) => Err(client_timeout(Phase::Statement, bound)),
            };
        let pool = self.pool_status();
        match outcome {
            Ok(role) => Health {
                healthy: true,
                latency: Some(started.elapsed()),
                role,
                pool,
                last_error: self
                    .pool()
                    .health
                    .last_connect_error()
                    .map(|e| e.to_string()),
            },
            Err(error) => Health {
                healthy: false,
                latency: None,
                role: None,
                pool,
                last_error: Some(error.to_string()),
            },
        }
    }
}

//! [`Health`]: one bounded probe of the database through a pool, for
//! [`Db::health`](crate::Db::health).

use std::time::Duration;

use tokio::time::Instant;

use crate::classify::{Phase, client_timeout};
use crate::connection::first_row;
use crate::error::TxError;
use crate::pool::{Pool, PoolStatus};

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

/// Probes the database through `pool` within `bound`: a checkout and one round trip.
pub(crate) async fn probe(pool: &Pool, bound: Duration) -> Health {
    let started = Instant::now();
    let probe = async {
        let mut session = pool.session(bound).await?;
        let messages = session
            .simple_query("SELECT pg_is_in_recovery()", bound)
            .await?;
        Ok(first_row(&messages).and_then(|row| match row.get(0) {
            Some("t") => Some(ServerRole::Standby),
            Some("f") => Some(ServerRole::Primary),
            _ => None,
        }))
    };
    let outcome: Result<Option<ServerRole>, TxError> =
        match tokio::time::timeout(bound, probe).await {
            Ok(result) => result,
            Err(_) => Err(client_timeout(Phase::Statement, bound)),
        };
    let status = pool.status();
    match outcome {
        Ok(role) => Health {
            healthy: true,
            latency: Some(started.elapsed()),
            role,
            pool: status,
            last_error: pool.health.last_connect_error().map(|e| e.to_string()),
        },
        Err(error) => Health {
            healthy: false,
            latency: None,
            role: None,
            pool: status,
            last_error: Some(error.to_string()),
        },
    }
}

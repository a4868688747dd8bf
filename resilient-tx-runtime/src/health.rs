//! [`Health`]: one bounded probe of the database through a pool, for
//! [`Db::health`](crate::Db::health).

use std::time::Duration;

use tokio::time::Instant;

use crate::classify::{Phase, client_timeout};
use crate::connection::first_row;
use crate::error::{ErrorKind, TxError};
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
    /// Every pooled connection was busy: the database answered a probe made on a
    /// connection of its own. Healthy, but at capacity; a load balancer should keep
    /// the instance (its callers queue for connections), an operator may want a
    /// larger pool.
    pub saturated: bool,
    /// Why the probe failed; on success, the last connect error seen, if any.
    pub last_error: Option<String>,
}

/// The probe's query: the server's role.
const PROBE: &str = "SELECT pg_is_in_recovery()";

/// Probes the database through `pool` within `bound`: a checkout and one round trip,
/// or, when every pooled connection is busy, a round trip on a connection of its own
/// (a busy pool whose database answers is healthy).
pub(crate) async fn probe(pool: &Pool, bound: Duration) -> Health {
    let started = Instant::now();
    let mut saturated = pool.saturated();
    let outcome = if saturated {
        pool.query_outside(PROBE, bound).await
    } else {
        match pooled(pool, bound).await {
            Err(error) if error.kind() == ErrorKind::PoolExhausted => {
                saturated = true;
                let left = bound.saturating_sub(started.elapsed());
                pool.query_outside(PROBE, left).await
            }
            other => other,
        }
    };
    let status = pool.status();
    match outcome {
        Ok(messages) => Health {
            healthy: true,
            latency: Some(started.elapsed()),
            role: first_row(&messages).and_then(|row| match row.get(0) {
                Some("t") => Some(ServerRole::Standby),
                Some("f") => Some(ServerRole::Primary),
                _ => None,
            }),
            pool: status,
            saturated,
            last_error: pool.health.last_connect_error().map(|e| e.to_string()),
        },
        Err(error) => Health {
            healthy: false,
            latency: None,
            role: None,
            pool: status,
            saturated,
            last_error: Some(error.to_string()),
        },
    }
}

/// The probe on a pooled connection, bounded as a whole.
async fn pooled(
    pool: &Pool,
    bound: Duration,
) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, TxError> {
    let probe = async {
        let mut session = pool.session(bound).await?;
        session.simple_query(PROBE, bound).await
    };
    match tokio::time::timeout(bound, probe).await {
        Ok(result) => result,
        Err(_) => Err(client_timeout(Phase::Statement, bound)),
    }
}

//! [`Session`]: a pooled connection used outside a transaction attempt (health probes,
//! commit verification probes, the runtime's own DDL and purges). It owns the rule that
//! a connection whose request failed or was abandoned never goes back to the pool:
//! every request is bounded in time, and any error or timeout condemns the connection
//! (a failed multi-statement query can leave it inside an aborted transaction, an
//! abandoned one with a request still in flight).

use std::time::Duration;

use tokio_postgres::SimpleQueryMessage;

use super::Pooled;
use crate::classify::{Phase, client_timeout, to_tx_error};
use crate::error::TxError;

/// A checked-out connection that condemns itself on error or timeout, and when it is
/// dropped with a request in flight (its caller was cancelled).
pub(crate) struct Session<'p> {
    conn: Pooled<'p>,
    in_flight: bool,
}

impl<'p> Session<'p> {
    pub(crate) fn new(conn: Pooled<'p>) -> Self {
        Session {
            conn,
            in_flight: false,
        }
    }

    /// Runs `sql` (one or more statements) with the simple query protocol within
    /// `bound`, and returns its messages.
    pub(crate) async fn simple_query(
        &mut self,
        sql: &str,
        bound: Duration,
    ) -> Result<Vec<SimpleQueryMessage>, TxError> {
        self.in_flight = true;
        let result = tokio::time::timeout(bound, self.conn.client.simple_query(sql)).await;
        self.in_flight = false;
        self.settle(result, bound)
    }

    /// Runs `sql` with the simple query protocol within `bound`, ignoring any rows.
    pub(crate) async fn batch_execute(
        &mut self,
        sql: &str,
        bound: Duration,
    ) -> Result<(), TxError> {
        self.in_flight = true;
        let result = tokio::time::timeout(bound, self.conn.client.batch_execute(sql)).await;
        self.in_flight = false;
        self.settle(result, bound)
    }

    fn settle<R>(
        &mut self,
        result: Result<Result<R, tokio_postgres::Error>, tokio::time::error::Elapsed>,
        bound: Duration,
    ) -> Result<R, TxError> {
        let error = match result {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(e)) => to_tx_error(e, Phase::Statement),
            Err(_) => client_timeout(Phase::Statement, bound),
        };
        self.conn.condemn();
        Err(error)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // A multi-statement query cut off by its caller may still fail on the server
        // and leave its transaction open and aborted for the next user.
        if self.in_flight {
            self.conn.condemn();
        }
    }
}

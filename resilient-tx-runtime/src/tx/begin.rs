//! BEGIN, sent in the same flight as the first statement: its SQL, and the pipelining
//! that tells BEGIN's failure from the statement's.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::policy::Policy;

/// How much longer than its statement timeout a transaction may sit idle on the server
/// before the server ends it: past the client's attempt timer (the timeout plus half
/// a second), so a live attempt is never cut short by it.
const ORPHAN_MARGIN: Duration = Duration::from_millis(1500);

/// Ends BEGIN's simple query when commit verification by transaction status needs the
/// transaction's id.
const NOTE_XID: &str = "SELECT pg_current_xact_id()";

/// The BEGIN sent with the first statement: isolation, access mode, the statement
/// timeout and, when `note_xid`, the `SELECT` that tells the transaction's id, in one
/// simple query so none of it costs a round trip of its own.
///
/// The settings follow a plain `BEGIN` in a `SET TRANSACTION` of their own, rather
/// than in BEGIN's options: should one fail (a standby refuses SERIALIZABLE), the
/// transaction block is open and now aborted, so the statement sent in the same flight
/// runs nothing. A failed `BEGIN ISOLATION LEVEL …` would open no block, and that
/// statement would run, and commit, on its own.
pub(crate) fn begin_sql(policy: &Policy, note_xid: bool) -> String {
    let mut sql = String::from("BEGIN");
    if policy.isolation.is_some() || policy.read_only {
        sql.push_str("; SET TRANSACTION");
        if let Some(isolation) = policy.isolation {
            sql.push_str(" ISOLATION LEVEL ");
            sql.push_str(isolation.as_sql());
        }
        if policy.read_only {
            sql.push_str(" READ ONLY");
        }
    }
    if let Some(timeout) = policy.timeout {
        // The server's own bound on the attempt's statements, and on the transaction
        // sitting idle: after a partition the server never hears that its client is
        // gone, and without this an orphaned transaction keeps its locks until TCP
        // keepalive ends the session. Past the attempt's timer (plus a margin) nobody
        // waits for it any more.
        sql.push_str(&format!(
            "; SET LOCAL statement_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
            timeout.as_millis().max(1),
            (timeout + ORPHAN_MARGIN).as_millis()
        ));
    }
    if note_xid {
        sql.push_str("; ");
        sql.push_str(NOTE_XID);
    }
    sql
}

/// Sends BEGIN and `work`'s first request back to back, so they share one round
/// trip. tokio-postgres writes a request when its future is first polled, and `join`
/// polls in order, so the server sees them in order. When BEGIN's query ends with the
/// `SELECT` noting the transaction's id (`(sql, true)`), returns that id along with
/// `work`'s output.
///
/// The id rides in BEGIN's own simple query rather than in a statement of its own:
/// no message, Sync or reply flush of its own, no statement to prepare per
/// connection. The `SELECT` is still parsed, planned and run each time, which on a
/// CPU-bound local server is most of what a small statement costs (see the
/// throughput benchmark); over any network it is lost in the round trip.
pub(super) async fn pipelined<R>(
    client: &Client,
    begin: Option<(&str, bool)>,
    work: impl Future<Output = Result<R, tokio_postgres::Error>>,
) -> Result<(Option<u64>, R), Failed> {
    match begin {
        None => Ok((None, work.await?)),
        Some((sql, false)) => {
            let (begun, result) = futures_util::future::join(client.batch_execute(sql), work).await;
            begun.map_err(Failed::in_begin)?;
            Ok((None, result?))
        }
        Some((sql, true)) => {
            let (begun, result) = futures_util::future::join(client.simple_query(sql), work).await;
            let xid =
                begun
                    .map_err(Failed::in_begin)?
                    .iter()
                    .rev()
                    .find_map(|message| match message {
                        SimpleQueryMessage::Row(row) => row.get(0)?.parse::<u64>().ok(),
                        _ => None,
                    });
            Ok((xid, result?))
        }
    }
}

/// A failed round trip, and whether the error came from BEGIN's own query (whose
/// failure leaves the transaction block aborted, so the statement sent with it ran
/// nothing).
pub(super) struct Failed {
    pub(super) error: tokio_postgres::Error,
    pub(super) in_begin: bool,
}

impl Failed {
    pub(super) fn in_begin(error: tokio_postgres::Error) -> Failed {
        Failed {
            error,
            in_begin: true,
        }
    }
}

impl From<tokio_postgres::Error> for Failed {
    fn from(error: tokio_postgres::Error) -> Failed {
        Failed {
            error,
            in_begin: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Isolation;

    #[test]
    fn begin_carries_isolation_access_mode_timeout_and_the_id() {
        assert_eq!(begin_sql(&Policy::default(), false), "BEGIN");
        let policy = Policy::default()
            .isolation(Isolation::Serializable)
            .read_only()
            .timeout(Duration::from_millis(1500));
        assert_eq!(
            begin_sql(&policy, false),
            "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY; \
             SET LOCAL statement_timeout = 1500; \
             SET LOCAL idle_in_transaction_session_timeout = 3000"
        );
        assert_eq!(
            begin_sql(&Policy::default(), true),
            "BEGIN; SELECT pg_current_xact_id()"
        );
    }
}

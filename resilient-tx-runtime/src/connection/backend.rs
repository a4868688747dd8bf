//! The server backend behind a connection and the server's history: what commit
//! verification by transaction status needs to find a transaction again and to know
//! whether its id can still be trusted.
//!
//! A server's *history* is its system identifier, postmaster start time, timeline, and
//! where its last crash recovery ended: none of them can change while a connection
//! lives, since a primary's backend dies with any restart, crash or promotion.

use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

/// A server's history, as columns (its timeline cannot be read during recovery,
/// where no transaction id is handed out and no verification can run anyway).
macro_rules! history_columns {
    () => {
        "pg_is_in_recovery()::text, (pg_control_system()).system_identifier::text, \
         pg_postmaster_start_time()::text, \
         CASE WHEN pg_is_in_recovery() THEN '' \
              ELSE substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8) END, \
         pg_last_wal_replay_lsn()::text"
    };
}

/// Read once per connection, before its first BEGIN that notes an id.
pub(crate) const NOTE_BACKEND: &str =
    concat!("SELECT pg_backend_pid()::text, ", history_columns!());

/// The history of the server a connection reached, read again later (by commit
/// verification) to compare with a backend's.
pub(crate) const HISTORY_NOW: &str = concat!("SELECT ", history_columns!());

/// The stretch of a server's history in which transaction ids cannot repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerHistory {
    pub(crate) system_identifier: String,
    pub(crate) postmaster_start: String,
    pub(crate) timeline: String,
    /// Where the last crash recovery of this postmaster ended, if any.
    pub(crate) recovered_to: Option<String>,
}

/// The server backend a connection talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    pub(crate) pid: i32,
    pub(crate) history: ServerHistory,
}

/// The first row of a simple query's reply.
pub(crate) fn first_row(messages: &[SimpleQueryMessage]) -> Option<&SimpleQueryRow> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    })
}

/// Reads [`history_columns`] from `row`, starting at column `at`; `None` for a server
/// in recovery.
fn history_at(row: &SimpleQueryRow, at: usize) -> Option<ServerHistory> {
    if row.get(at)? != "false" {
        return None;
    }
    Some(ServerHistory {
        system_identifier: row.get(at + 1)?.to_owned(),
        postmaster_start: row.get(at + 2)?.to_owned(),
        timeline: row.get(at + 3)?.to_owned(),
        recovered_to: row.get(at + 4).map(str::to_owned),
    })
}

/// Reads [`NOTE_BACKEND`]'s reply; `None` for a standby (whose transactions cannot
/// get an id anyway).
pub(crate) async fn note_backend(
    client: &Client,
) -> Result<Option<Backend>, tokio_postgres::Error> {
    let messages = client.simple_query(NOTE_BACKEND).await?;
    Ok(first_row(&messages).and_then(|row| {
        Some(Backend {
            pid: row.get(0)?.parse().ok()?,
            history: history_at(row, 1)?,
        })
    }))
}

/// Reads [`HISTORY_NOW`]'s reply; `None` for a server in recovery.
pub(crate) fn history_now(messages: &[SimpleQueryMessage]) -> Option<ServerHistory> {
    first_row(messages).and_then(|row| history_at(row, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_its_pid_and_the_history_columns() {
        assert!(NOTE_BACKEND.starts_with("SELECT pg_backend_pid()::text, pg_is_in_recovery()"));
        assert_eq!(
            NOTE_BACKEND.matches("::text").count(),
            HISTORY_NOW.matches("::text").count() + 1
        );
    }
}

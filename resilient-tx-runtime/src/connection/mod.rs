//! One pooled PostgreSQL connection: the client, its prepared statements
//! ([`statements`], [`param_types`] for statements sent unnamed), the server backend
//! behind it ([`backend`]), and the flag that keeps a condemned connection out of the
//! pool.

use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;

mod backend;
mod param_types;
mod statements;

pub(crate) use param_types::declared_type;
pub(crate) use statements::{StatementCache, StatementPolicy};

pub(crate) use backend::{
    Backend, HISTORY_NOW, ServerHistory, first_row, history_now, note_backend,
};

/// A connection as the pool holds it.
pub(crate) struct PgConnection {
    pub(crate) client: Client,
    pub(crate) statements: StatementCache,
    /// Set by [`PgConnection::condemn`]; the pool then closes the connection instead
    /// of handing it out again (bb8 has no API to mark a checked-out connection broken).
    broken: bool,
    /// When this connection last proved it works; a connection older than the pool's
    /// last sign of trouble is checked before use.
    pub(crate) verified_at: Instant,
    /// The server backend behind this connection, noted by the first BEGIN that
    /// verification by transaction status needs.
    pub(crate) backend: Option<Backend>,
    /// This connection's row in the commit counter table, for verification by
    /// counter.
    pub(crate) counter: CommitCounter,
}

/// A connection's commit counter: its row's id, the value its last commit that
/// moved the counter left there (0 before any), and when it last claimed the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitCounter {
    pub(crate) id: i64,
    pub(crate) committed: i64,
    /// When the last commit that created the row or refreshed its `updated_at` was
    /// sent (`None`: never). The server's `updated_at` is no older than this, so the
    /// row is safe from the purge for as long as this is recent.
    pub(crate) claimed_at: Option<Instant>,
}

impl CommitCounter {
    /// A counter of its own for a new connection: a random id, so that connections of
    /// every process sharing the database never share a row.
    fn fresh() -> CommitCounter {
        CommitCounter {
            // Any 63-bit value: positive, so it reads the same in logs and in SQL.
            id: (rand::random::<u64>() >> 1) as i64,
            committed: 0,
            claimed_at: None,
        }
    }
}

impl PgConnection {
    pub(crate) fn new(client: Client, statements: Arc<StatementPolicy>) -> Self {
        PgConnection {
            client,
            statements: StatementCache::new(statements),
            broken: false,
            verified_at: Instant::now(),
            backend: None,
            counter: CommitCounter::fresh(),
        }
    }

    /// Keeps this connection out of the pool: its state is unknown (a request was
    /// abandoned or failed in a way that may have left it mid-transaction) or it is
    /// dead.
    pub(crate) fn condemn(&mut self) {
        self.broken = true;
    }

    /// Whether the connection can no longer be used, known without a round trip.
    pub(crate) fn is_unusable(&self) -> bool {
        self.broken || self.client.is_closed()
    }
}

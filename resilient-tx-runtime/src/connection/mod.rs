//! One pooled PostgreSQL connection: the client, its prepared-statement cache, the
//! server backend behind it ([`backend`]), and the flag that keeps a condemned
//! connection out of the pool.

use std::collections::HashMap;
use std::time::Instant;

use tokio_postgres::{Client, Statement};

mod backend;

pub(crate) use backend::{
    Backend, HISTORY_NOW, ServerHistory, first_row, history_now, note_backend,
};

/// How many prepared statements one connection keeps. Applications run a bounded set
/// of statements; the cap only guards against SQL built with inlined values.
const STATEMENT_CACHE_CAPACITY: usize = 512;

/// A connection as the pool holds it.
pub(crate) struct PgConnection {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
    /// Set by [`PgConnection::condemn`]; the pool then closes the connection instead
    /// of handing it out again (bb8 has no API to mark a checked-out connection broken).
    broken: bool,
    /// When this connection last proved it works; a connection older than the pool's
    /// last sign of trouble is checked before use.
    pub(crate) verified_at: Instant,
    /// The server backend behind this connection, noted by the first BEGIN that
    /// verification by transaction status needs.
    pub(crate) backend: Option<Backend>,
}

impl PgConnection {
    pub(crate) fn new(client: Client) -> Self {
        PgConnection {
            client,
            statements: HashMap::new(),
            broken: false,
            verified_at: Instant::now(),
            backend: None,
        }
    }

    /// The cached prepared statement for `sql`, if any.
    pub(crate) fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements.get(sql).cloned()
    }

    /// Remembers a prepared statement.
    pub(crate) fn remember(&mut self, sql: &str, statement: Statement) {
        if self.statements.len() >= STATEMENT_CACHE_CAPACITY {
            // Dropping a Statement closes it on the server; an arbitrary victim is fine
            // for a cache whose working set normally fits.
            if let Some(victim) = self.statements.keys().next().cloned() {
                self.statements.remove(&victim);
            }
        }
        self.statements.insert(sql.to_owned(), statement);
    }

    /// Forgets every prepared statement (after the schema changed under them).
    pub(crate) fn forget_statements(&mut self) {
        self.statements.clear();
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

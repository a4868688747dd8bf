//! `Tx`: the transaction handed to a body. It sends BEGIN together with the first
//! statement (noting the transaction's id when commit verification needs it), reuses
//! prepared statements per connection, bounds every round trip by the
//! attempt's timer, and remembers any statement error so that COMMIT can never report
//! success after an error the body swallowed.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row, Statement};

mod begin;
mod mark;
mod statement;

pub(crate) use begin::begin_sql;
pub(crate) use mark::CommitMark;
pub use statement::{Params, QueryRef, TxStatement};

use begin::{Failed, pipelined};
use mark::{Sent, counter_missed, counter_moved, mentions_notify};
use statement::{Target, declare_types};

use crate::classify::{Phase, client_timeout, to_tx_error};
use crate::connection::{Backend, CommitCounter, PgConnection, note_backend};
use crate::error::{Failure, TxError};
use crate::pool::Pooled;

/// The transaction of one attempt. Its methods mirror tokio-postgres' and return
/// [`TxError`]; any server error poisons the transaction.
pub struct Tx<'db> {
    conn: Pooled<'db>,
    /// BEGIN (with isolation, access mode and statement timeout) not yet sent: it
    /// travels with the first statement instead of costing a round trip of its own.
    pending_begin: Option<Arc<str>>,
    /// A request is on the wire; if the attempt is dropped now, the connection's state
    /// is unknown and it must not go back to the pool.
    in_flight: bool,
    /// COMMIT or ROLLBACK has been sent.
    finished: bool,
    poisoned: Option<TxError>,
    deadline: Instant,
    /// The attempt timer's length, for messages.
    timer: Duration,
    /// BEGIN said READ ONLY: a 25006 is then the body's own write, not a demoted
    /// server.
    read_only: bool,
    /// BEGIN's query ends with a `SELECT` of the transaction's id, for commit
    /// verification.
    note_xid: bool,
    /// The transaction's id, once BEGIN's reply told it.
    xid: Option<u64>,
    /// A statement mentioned NOTIFY (see [`Tx::may_notify`]).
    may_notify: bool,
}

impl<'db> Tx<'db> {
    pub(crate) fn new(
        conn: Pooled<'db>,
        begin: Arc<str>,
        read_only: bool,
        note_xid: bool,
        deadline: Instant,
        timer: Duration,
    ) -> Self {
        Tx {
            conn,
            read_only,
            note_xid,
            xid: None,
            may_notify: false,
            pending_begin: Some(begin),
            in_flight: false,
            finished: false,
            poisoned: None,
            deadline,
            timer,
        }
    }

    /// Runs a statement and returns its rows.
    pub async fn query<S>(&mut self, statement: &S, params: Params<'_>) -> Result<Vec<Row>, TxError>
    where
        S: ?Sized + TxStatement,
    {
        self.run(
            statement.as_query(),
            params,
            async |client, target| match target {
                Target::Prepared(statement) => client.query(statement, params).await,
                Target::Unnamed(sql, typed) => client.query_typed(sql, typed).await,
            },
        )
        .await
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one<S>(&mut self, statement: &S, params: Params<'_>) -> Result<Row, TxError>
    where
        S: ?Sized + TxStatement,
    {
        self.run(
            statement.as_query(),
            params,
            async |client, target| match target {
                Target::Prepared(statement) => client.query_one(statement, params).await,
                Target::Unnamed(sql, typed) => client.query_typed_one(sql, typed).await,
            },
        )
        .await
    }

    /// Runs a statement that returns zero or one row.
    pub async fn query_opt<S>(
        &mut self,
        statement: &S,
        params: Params<'_>,
    ) -> Result<Option<Row>, TxError>
    where
        S: ?Sized + TxStatement,
    {
        self.run(
            statement.as_query(),
            params,
            async |client, target| match target {
                Target::Prepared(statement) => client.query_opt(statement, params).await,
                Target::Unnamed(sql, typed) => client.query_typed_opt(sql, typed).await,
            },
        )
        .await
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute<S>(&mut self, statement: &S, params: Params<'_>) -> Result<u64, TxError>
    where
        S: ?Sized + TxStatement,
    {
        self.run(
            statement.as_query(),
            params,
            async |client, target| match target {
                Target::Prepared(statement) => client.execute(statement, params).await,
                Target::Unnamed(sql, typed) => client.execute_typed(sql, typed).await,
            },
        )
        .await
    }

    /// Prepares a statement (or returns this connection's cached one).
    ///
    /// A prepared statement is named and lives on one server connection, so with
    /// [`DbBuilder::statement_cache(false)`](crate::DbBuilder::statement_cache) (for a
    /// pooler in transaction mode) this fails: pass the SQL text to the other methods
    /// instead.
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement, TxError> {
        self.usable()?;
        if !self.conn.statements.policy().named() {
            return Err(TxError::new(
                Failure::Database,
                "Tx::prepare needs named prepared statements, which statement_cache(false) \
                 turns off (as a pooler in transaction mode requires): pass the SQL text to \
                 query, query_one, query_opt or execute instead",
            ));
        }
        self.run(QueryRef::Sql(sql), &[], async |_, target| match target {
            Target::Prepared(statement) => Ok(statement.clone()),
            Target::Unnamed(..) => unreachable!("named statements are on"),
        })
        .await
    }

    /// Runs one or more statements separated by `;` with the simple query protocol
    /// (no parameters, no rows).
    pub async fn batch_execute(&mut self, sql: &str) -> Result<(), TxError> {
        self.usable()?;
        self.may_notify |= mentions_notify(sql);
        self.note_backend().await?;
        let begin = self.pending_begin.take();
        let client = &self.conn.client;
        let begin = begin.as_deref().map(|sql| (sql, self.note_xid));
        let work = pipelined(client, begin, client.batch_execute(sql));
        let result = bounded(&mut self.in_flight, self.deadline, work).await;
        let (xid, ()) = self.settle(result, false)?;
        self.xid = self.xid.or(xid);
        Ok(())
    }

    /// The shared path of every statement, BEGIN in the same flight when it is the
    /// first: SQL text runs as this connection's cached prepared statement (prepared
    /// once), or, with named statements off, unnamed with its parameter types
    /// declared (parsed, bound and run in one flight).
    async fn run<R>(
        &mut self,
        query: QueryRef<'_>,
        params: Params<'_>,
        execute: impl AsyncFnOnce(&Client, Target<'_>) -> Result<R, tokio_postgres::Error>,
    ) -> Result<R, TxError> {
        self.usable()?;
        if let QueryRef::Sql(sql) = query {
            self.may_notify |= mentions_notify(sql);
        }
        let named = self.conn.statements.policy().named();
        let typed = match query {
            QueryRef::Sql(_) if !named => Some(declare_types(params)?),
            _ => None,
        };
        self.note_backend().await?;
        let begin = self.pending_begin.take();
        // `Err(sql)`: not prepared on this connection yet.
        let known = match query {
            QueryRef::Sql(sql) => self.conn.statements.get(sql).ok_or(sql),
            QueryRef::Prepared(statement) => Ok(statement.clone()),
        };
        let client = &self.conn.client;
        let begin = begin.as_deref().map(|sql| (sql, self.note_xid));
        let work = async {
            if let (Some(typed), QueryRef::Sql(sql)) = (&typed, query) {
                return Ok((None, execute(client, Target::Unnamed(sql, typed)).await?));
            }
            let statement = match &known {
                Ok(statement) => statement.clone(),
                Err(sql) => client.prepare(sql).await?,
            };
            let rows = execute(client, Target::Prepared(&statement)).await?;
            Ok((Some(statement), rows))
        };
        let work = pipelined(client, begin, work);
        let result = bounded(&mut self.in_flight, self.deadline, work).await;
        let (xid, (statement, output)) = self.settle(result, named && typed.is_none())?;
        self.xid = self.xid.or(xid);
        if let (Err(sql), Some(statement)) = (known, statement) {
            self.conn.statements.insert(sql, statement);
        }
        Ok(output)
    }

    /// Before BEGIN is sent, when verification by transaction status asks for it:
    /// notes which backend and server history the connection has, once per
    /// connection (a round trip on its first such transaction, nothing after).
    async fn note_backend(&mut self) -> Result<(), TxError> {
        if !self.note_xid || self.pending_begin.is_none() || self.conn.backend.is_some() {
            return Ok(());
        }
        let work = async { Ok(note_backend(&self.conn.client).await?) };
        let result = bounded(&mut self.in_flight, self.deadline, work).await;
        self.conn.backend = self.settle(result, false)?;
        Ok(())
    }

    /// The transaction's id and the backend it runs on, once BEGIN noted them.
    pub(crate) fn noted_xact(&self) -> Option<(u64, Backend)> {
        Some((self.xid?, self.conn.backend.clone()?))
    }

    /// Sends COMMIT, preceded in the same flight by the statement that lets commit
    /// verification settle a lost reply, when one is given. A transaction in which
    /// nothing ran costs nothing.
    pub(crate) async fn commit(&mut self, mark: Option<CommitMark<'_>>) -> Result<(), TxError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        if self.pending_begin.is_some() {
            self.finished = true;
            return Ok(());
        }
        // The mark runs like a body's statement: prepared once per connection and
        // cached, or unnamed with named statements off.
        let prepared = match &mark {
            Some(mark) => self.mark_statement(mark.sql()).await?,
            None => None,
        };
        self.finished = true;
        let counter = self.conn.counter;
        let next = counter.committed + 1;
        let client = &self.conn.client;
        // A claim's `updated_at` on the server is no older than this.
        let claim_sent = matches!(mark, Some(CommitMark::Counter { claim: true, .. }))
            .then(std::time::Instant::now);
        let work = async {
            let Some(mark) = &mark else {
                let committed = client.batch_execute("COMMIT").await;
                return committed.map(|()| false).map_err(Sent::Commit);
            };
            // Back to back: should the mark fail, the COMMIT that follows only ends the
            // aborted transaction, and the mark's error is what the caller sees.
            let send = async {
                match (mark, &prepared) {
                    (CommitMark::Marker { marker, .. }, Some(statement)) => {
                        client.execute(statement, &[marker]).await.map(|_| false)
                    }
                    (CommitMark::Marker { sql, marker }, None) => client
                        .execute_typed(sql, &[(marker, Type::TEXT)])
                        .await
                        .map(|_| false),
                    (CommitMark::Counter { .. }, Some(statement)) => client
                        .query_one(statement, &[&counter.id, &counter.committed, &next])
                        .await
                        .map(|row| row.get::<_, i64>(0) > 0),
                    (CommitMark::Counter { sql, .. }, None) => client
                        .query_typed_one(
                            sql,
                            &[
                                (&counter.id, Type::INT8),
                                (&counter.committed, Type::INT8),
                                (&next, Type::INT8),
                            ],
                        )
                        .await
                        .map(|row| row.get::<_, i64>(0) > 0),
                }
            };
            let (moved, committed) =
                futures_util::future::join(send, client.batch_execute("COMMIT")).await;
            let moved = moved.map_err(Sent::Mark)?;
            committed.map_err(Sent::Commit)?;
            Ok(moved)
        };
        let result = match bounded(&mut self.in_flight, self.deadline, work).await {
            Ok(Ok(moved)) => {
                if moved {
                    let counter = &mut self.conn.counter;
                    counter.committed = next;
                    counter.claimed_at = claim_sent.or(counter.claimed_at);
                }
                return Ok(());
            }
            // The mark failed, so COMMIT only ended an aborted transaction.
            Ok(Err(Sent::Mark(e))) => {
                let error = to_tx_error(e, Phase::Commit);
                match mark {
                    Some(CommitMark::Counter { .. }) if counter_missed(&error) => {
                        counter_moved(counter, &error)
                    }
                    _ if prepared.is_some() => self.lost_statement(error),
                    _ => error,
                }
            }
            Ok(Err(Sent::Commit(e))) => to_tx_error(e, Phase::Commit),
            Err(()) => client_timeout(Phase::Commit, self.timer),
        };
        if result.failure().discards_connection() {
            self.conn.condemn();
        }
        Err(result)
    }

    /// The connection, for work on the same session once the transaction has ended
    /// (COMMIT returned, or ROLLBACK queued ahead of what is sent next); `None` before
    /// that, or while a request is in flight.
    pub(crate) fn ended_connection(&mut self) -> Option<&mut PgConnection> {
        (self.finished && !self.in_flight).then_some(&mut *self.conn)
    }

    /// This connection's commit counter, as the next COMMIT's compare-and-set will
    /// find it.
    pub(crate) fn commit_counter(&self) -> CommitCounter {
        self.conn.counter
    }

    /// Whether a statement of this transaction may have queued a notification
    /// (`NOTIFY`, `pg_notify`): an effect that gets the transaction an id only at
    /// COMMIT, so a mark that looks for the id would miss it.
    pub(crate) fn may_notify(&self) -> bool {
        self.may_notify
    }

    /// A 26000 (no such prepared statement) or 42P05 (one of that name exists
    /// already) on a statement the runtime prepared: the server connection is not the
    /// one it was prepared on (a pooler in transaction mode). Switches the `Db` to
    /// unnamed statements, saying so once, and makes the error a retriable one.
    fn lost_statement(&self, error: TxError) -> TxError {
        let lost = error.sqlstate().is_some_and(|code| {
            *code == SqlState::INVALID_SQL_STATEMENT_NAME || *code == SqlState::DUPLICATE_PSTATEMENT
        });
        if !lost {
            return error;
        }
        if self.conn.statements.policy().stop_naming() {
            tracing::warn!(
                cause = error.message(),
                "prepared statements do not survive between transactions here (a pooler \
                 in transaction mode?): switching to unnamed statements; set \
                 DbBuilder::statement_cache(false) to start that way"
            );
        }
        TxError::with_details(
            Failure::StatementsLost,
            format!(
                "a prepared statement was not found on the server connection: {}",
                error.message()
            ),
            error.sqlstate().cloned(),
            None,
        )
    }

    /// The mark's cached statement, prepared on first use; `None` when named
    /// statements are off and it is sent unnamed.
    async fn mark_statement(&mut self, sql: &str) -> Result<Option<Statement>, TxError> {
        if !self.conn.statements.policy().named() {
            return Ok(None);
        }
        self.prepare(sql).await.map(Some)
    }

    /// Ends the transaction without waiting: ROLLBACK is queued on the connection ahead
    /// of anything its next user sends, and its reply is discarded.
    pub(crate) fn rollback(&mut self) {
        if self.finished || self.pending_begin.is_some() {
            self.finished = true;
            return;
        }
        self.finished = true;
        if self.in_flight || self.conn.is_unusable() {
            self.conn.condemn();
            return;
        }
        // The first poll of a simple query puts it on the connection's queue; what
        // follows is waiting for a reply nobody needs.
        let _ = self.conn.client.batch_execute("ROLLBACK").now_or_never();
    }

    /// Whether a statement error poisoned this transaction.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn usable(&self) -> Result<(), TxError> {
        match &self.poisoned {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Turns a bounded round trip's result into the caller's, poisoning the
    /// transaction and condemning the connection as the failure requires. `named`:
    /// the round trip used a statement the runtime prepared, so a missing or
    /// duplicate prepared statement is the runtime's, not the body's.
    fn settle<R>(
        &mut self,
        result: Result<Result<R, Failed>, ()>,
        named: bool,
    ) -> Result<R, TxError> {
        let (error, in_begin) = match result {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(failed)) => (to_tx_error(failed.error, Phase::Statement), failed.in_begin),
            Err(()) => (client_timeout(Phase::Statement, self.timer), false),
        };
        let error = match named {
            true => self.lost_statement(error),
            false => error,
        };
        let error = if in_begin && error.sqlstate() == Some(&SqlState::FEATURE_NOT_SUPPORTED) {
            // BEGIN's own settings failing as "not supported" is a standby refusing
            // SERIALIZABLE: the connection reached a server in recovery, like a 25006.
            TxError::with_details(
                Failure::ReadOnly,
                format!(
                    "the connection reached a standby, which cannot run this transaction: {}",
                    error.message()
                ),
                error.sqlstate().cloned(),
                None,
            )
        } else if error.failure() == Failure::ReadOnly && self.read_only && !in_begin {
            TxError::with_details(
                Failure::Database,
                format!(
                    "a read_only transaction tried to write: {}",
                    error.message()
                ),
                error.sqlstate().cloned(),
                None,
            )
        } else {
            error
        };
        let failure = error.failure();
        if failure.discards_connection() {
            self.conn.condemn();
        }
        if failure == Failure::StalePlan {
            self.conn.statements.policy().invalidate();
        }
        // Client-side checks (row counts, parameter conversion) leave the server's
        // transaction intact; everything else aborts it.
        let server_side = error.sqlstate().is_some() || failure != Failure::Database;
        if server_side {
            self.poisoned = Some(error.clone());
        }
        Err(error)
    }
}

/// Runs a round trip under the attempt's timer, marking it in flight meanwhile.
async fn bounded<F: Future>(
    in_flight: &mut bool,
    deadline: Instant,
    work: F,
) -> Result<F::Output, ()> {
    *in_flight = true;
    let result = tokio::time::timeout_at(deadline, work).await;
    *in_flight = false;
    result.map_err(|_| ())
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // A call cancelled mid-attempt (a dropped request future) must not hand a
        // connection with an open transaction, or with a COMMIT whose outcome nobody
        // will learn still running, to the next caller.
        if self.in_flight {
            self.conn.condemn();
        } else if !self.finished {
            self.rollback();
        }
    }
}

impl fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("begun", &self.pending_begin.is_none())
            .field("poisoned", &self.poisoned.is_some())
            .finish_non_exhaustive()
    }
}

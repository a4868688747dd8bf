//! # resilient-tx
//!
//! PostgreSQL transactions that survive what production databases do: restarts,
//! failovers, killed connections, partitions, deadlocks and serialization conflicts.
//!
//! ```no_run
//! use resilient_tx::{retriable_tx, Db, Tx, TxError};
//!
//! #[retriable_tx(retries = 5)]
//! async fn add_server(tx: &mut Tx<'_>, name: &str, url: &str) -> Result<i64, TxError> {
//!     let row = tx
//!         .query_one("INSERT INTO servers(name, url) VALUES ($1, $2) RETURNING id", &[&name, &url])
//!         .await?;
//!     Ok(row.get(0))
//! }
//!
//! # async fn run() -> Result<(), TxError> {
//! let db = Db::connect("postgres://app@db1,db2/app?target_session_attrs=read-write").await?;
//! // The generated function takes the pool in place of the transaction.
//! let id = add_server(&db, "alpha", "http://a").await?;
//! # Ok(()) }
//! ```
//!
//! Each call gets a connection, sends BEGIN with its first statement, runs the body and
//! commits. A failure is classified by what happened and when: conflicts and lost
//! connections are retried with exponential backoff and full jitter within a deadline;
//! a connection lost while COMMIT was in flight is never re-run blindly; everything
//! else returns at once as a [`TxError`] whose [`ErrorKind`] says what a caller can do.
//!
//! [`guide`] is the manual of [`retriable_tx`]: how to write the function, the error
//! types it can return, and a compiled example for each option. This page covers what happens around a call.
//!
//! # What happens to a failure
//!
//! | what happened | what the call does | kind when it gives up |
//! |---|---|---|
//! | serialization failure (40001), deadlock (40P01) | rolled back by the server; retried with backoff | [`Conflict`](ErrorKind::Conflict) |
//! | lock not available (55P03, 55006) | retried after the first and second attempts only | [`Conflict`](ErrorKind::Conflict) |
//! | connection lost before COMMIT was sent (restart, `pg_terminate_backend`, reset), or no connection could be made | connection discarded; retried on a fresh one | [`Unavailable`](ErrorKind::Unavailable) |
//! | server is read-only (25006: a standby, a demoted primary) | connection discarded; retried, reconnecting to the writable host | [`Unavailable`](ErrorKind::Unavailable) |
//! | the server stopped answering (with a `timeout` set) | the attempt timer abandons the connection; retried on a fresh one | [`Timeout`](ErrorKind::Timeout) |
//! | connection lost while COMMIT was in flight | never re-run blindly: [see below](#when-commits-outcome-is-unknown) | [`CommitUnknown`](ErrorKind::CommitUnknown) |
//! | statement timeout (57014) | returned at once; the connection stays usable | [`Timeout`](ErrorKind::Timeout) |
//! | no free connection within the pool timeout while the database answers | returned at once | [`PoolExhausted`](ErrorKind::PoolExhausted) |
//! | constraint, syntax, permission and other server errors; client-side errors such as `query_one` finding no row | returned at once | [`Database`](ErrorKind::Database) |
//!
//! Retries stop when `retries` are spent, when the next backoff would end past the
//! call's `deadline`, or, for retries that reconnect, when the [`Db`]'s shared retry
//! budget ([`RetryBudgetConfig`]) is empty: during a long outage calls fail fast with
//! `Unavailable` instead of multiplying the load. Dead pooled connections (after a
//! restart, a killed backend) are replaced at checkout without an error and without a
//! round trip on every checkout.
//!
//! # When COMMIT's outcome is unknown
//!
//! If the connection dies after COMMIT was sent and before its reply arrived (a crash,
//! a failover, a network cut, the attempt timer firing), the transaction may or may not
//! have been applied, and running the body again could apply it twice. The runtime
//! never re-runs such a body blindly. A function settles the outcome in one of three
//! ways:
//!
//! | | how an unknown outcome is settled | cost | use it when |
//! |---|---|---|---|
//! | `idempotency_key = expr` | the retry claims the key again: it finds the stored result if the first COMMIT landed, and runs the body if it did not | a row per key holding the result as JSON, kept until [`Db::purge_idempotency_keys`]; `T: Serialize + DeserializeOwned` | the *client* may send the same request again (an `Idempotency-Key` header, a redelivered message) and must get the same answer |
//! | automatic commit verification (the default) | a fresh connection asks the server about the call's transaction: committed → success; not committed → retry; no answer before the deadline, or no answer that can be trusted → `CommitUnknown` | by fenced counter (the default): one statement sent with COMMIT, rewriting the connection's own row if the transaction wrote; by marker row: the same, inserting a row per transaction; by transaction status: a `SELECT` inside BEGIN's query; none adds a round trip | any other write |
//! | `idempotent` | the body is run again | nothing | running the body twice does no harm (set a value, upsert fixed values, delete by id) |
//!
//! ## Idempotency keys: exactly once per key
//!
//! With `#[retriable_tx(idempotency_key = expr)]`, the first attempt claims the key by
//! inserting a row in the key table (`resilient_tx.idempotency_keys`,
//! [`DbBuilder::idempotency_table`]) and the body's result is stored in that row, all in
//! the body's own transaction: the key, the result and the body's writes commit
//! together or not at all. Any later call of the same function with the same key, be it
//! the runtime's retry after an unknown outcome or a client resending the request,
//! returns the stored result without running the body, provided it brings the same
//! arguments: a fingerprint of them is stored with the key, and the key coming back with
//! others is [`ErrorKind::KeyReused`]. See [the guide](guide#idempotency_key--expr) for
//! the details, and [the runtime's tables](guide#the-runtimes-tables) for a role that
//! may only read and write rows.
//!
//! ## Automatic commit verification
//!
//! A call with no idempotency key, not `idempotent` and not `read_only` settles an
//! ambiguous COMMIT itself, in one of three ways ([`CommitVerification`], set with
//! [`DbBuilder::commit_verification`]):
//!
//! **By fenced counter** (the default). Each pooled connection has a row of its own in
//! the counter table (`resilient_tx.commit_counters`,
//! [`DbBuilder::commit_counter_table`]) and remembers the value its last commit left
//! there. Sent together with COMMIT, a compare-and-set moves that value on by one, and
//! aborts the transaction if it finds another. After an ambiguous COMMIT a fresh
//! connection locks the row (waiting out the original if it is still open) and reads
//! it: moved → the transaction committed; not moved → it did not, and the reading
//! transaction *fences* the row, so that the original's messages, should a healed
//! network deliver them late, can no longer commit. Like a marker row, this settles
//! even a COMMIT that survived a crash or failover of the server at that very moment
//! (what counts is the row on the server that answers now), but at a constant cost: a
//! row is rewritten in place (a HOT update) rather than one added per transaction, so
//! the table holds one row per connection whatever the traffic, and each commit writes
//! far less WAL. A transaction that only read moves nothing (it has nothing to apply
//! twice, and is simply run again after a lost COMMIT); one that mentions `NOTIFY`
//! always moves it. Rows of connections that committed nothing for an hour are deleted
//! every 10 000 commits; [`Db::purge_commit_counters`] does it on demand. The proof
//! that every interleaving of the original, the check and a late delivery ends in the
//! truth is in the runtime's `outcome::counter` module.
//!
//! **By marker row** ([`CommitVerification::MarkerRow`], the default before the
//! counter). The call inserts a random
//! marker into the marker table (`resilient_tx.commit_markers`,
//! [`DbBuilder::commit_marker_table`]), sent together with COMMIT. After an ambiguous
//! COMMIT a fresh connection inserts the same marker: a conflict means the
//! transaction committed; success means it did not and now never can (its own insert
//! would conflict); a wait means it is still open, and the check repeats until the
//! deadline. What counts is whether the marker is on the server that answers now, so
//! this settles even a COMMIT that survived a crash or failover of the server at that
//! very moment, for one more row written per transaction that wrote anything (one
//! that only read is not marked: it has nothing to apply twice, and is simply run
//! again after a lost COMMIT). Calls delete markers older
//! than an hour every 10 000 commits; [`Db::purge_commit_markers`] does it on demand.
//!
//! **By transaction status** ([`CommitVerification::TransactionId`]). BEGIN's query
//! ends with `SELECT pg_current_xact_id()`, so the client knows the transaction's id
//! before it sends COMMIT, at no extra round trip; each connection also notes, once, which
//! server backend it talks to and that server's *history* (system identifier, start
//! time, timeline, last crash recovery). After a lost COMMIT reply, a fresh connection
//! reads the history again and the transaction's status:
//!
//! - same history: the status is the truth. Committed → the call returns the body's
//!   result; aborted → it retries as after a lost connection; still in progress and
//!   idle in its transaction (the network went silent before COMMIT arrived and the
//!   server has not noticed its client is gone) → after a second's grace the orphaned
//!   backend is terminated (matched by pid, transaction id and that state, nothing
//!   else is touched) and its final status decides; still executing its COMMIT (slow,
//!   or waiting for a synchronous standby) → it is never cut short, but waited for
//!   until the deadline, then `CommitUnknown`;
//! - the server restarted, crashed or failed over since BEGIN: a transaction that
//!   is not committed there did not commit → retry. A "committed" proves nothing,
//!   since a recovery that lost the WAL assigning an id can hand that id to another
//!   transaction: the call returns [`ErrorKind::CommitUnknown`] rather than guess;
//! - no answer before the call's deadline → `CommitUnknown`.
//!
//! It needs no table, and ends an orphaned transaction at once where a counter or
//! marker probe waits for its lock. Every such transaction gets an id, even one that turns out to
//! write nothing, so mark calls that only read `read_only`.
//!
//! [`CommitVerification::Off`] turns verification off: such calls return
//! `CommitUnknown` after an ambiguous COMMIT.
//!
//! When verification cannot settle a COMMIT (no answer before the deadline, say), the
//! `CommitUnknown` message says why and names the call's counter row, marker or
//! transaction id, so
//! that a person or a reconciliation job can settle it later:
//! [the guide](guide#settling-commitunknown-by-hand) shows how.
//!
//! ```no_run
//! # async fn example() -> Result<(), resilient_tx::TxError> {
//! use resilient_tx::{CommitVerification, Db};
//!
//! let db = Db::builder("postgres://app@localhost/app")
//!     .commit_verification(CommitVerification::TransactionId)
//!     .build()
//!     .await?;
//! # let _ = db;
//! # Ok(()) }
//! ```
//!
//! The key, counter and marker tables are looked up on first use (no DDL when they
//! exist) and created there where the role may; [`Db::migrate`] creates them ahead, for
//! example at deploy time as the schema's owner. If the verification table is missing
//! and the role may not create it, calls run without verification and one warning per
//! `Db` says so; a missing key table fails keyed calls with a `Config` error. See
//! [the runtime's tables](guide#the-runtimes-tables), with the SQL and grants for a
//! role that may only read and write rows. Verification by transaction status needs no
//! table.
//!
//! ## Which one to use
//!
//! - A request that a client may repeat: `idempotency_key`, with the key the client
//!   sends. Verification cannot help there: it knows only its own call's transaction.
//! - A write whose repetition would be visible (an insert, an increment, a transfer):
//!   the default verification is enough.
//! - A write whose repetition would be visible and must be settled even when the
//!   server crashes or fails over at the moment of COMMIT: the default counter (or
//!   `MarkerRow`), or a key; not `TransactionId`.
//! - A write that gives the same end state however often it runs: `idempotent`, to
//!   skip verification.
//! - `read_only` calls are not verified and cannot take `idempotent` or a key: they
//!   change nothing, so after an ambiguous COMMIT they are simply run again.
//!
//! # Handling errors
//!
//! Every failure reaches the caller as a [`TxError`], or inside the function's error
//! type: one of your own, a boxed error or an `anyhow::Error` (see
//! [the guide](guide#the-error-type)). Decide by
//! [`kind()`](TxError::kind); [`sqlstate()`](TxError::sqlstate) gives the server's code
//! when there is one, [`attempts()`](TxError::attempts) how many attempts were made, and
//! [`is_transient()`](TxError::is_transient) whether trying the whole call again later
//! may succeed (`Unavailable`, `PoolExhausted`, `Timeout`, `Conflict`). `Display` is a
//! sentence for a person; it never contains a password or the connection string.
//!
//! | [`ErrorKind`] | meaning | what a caller can do |
//! |---|---|---|
//! | `Unavailable` | the database could not be reached or the connection was lost, and retries, the deadline or the retry budget are spent | try later (503 with `Retry-After`) |
//! | `PoolExhausted` | no pooled connection became free within the pool timeout while the database answers | shed load, or enlarge the pool |
//! | `Timeout` | a statement ran past `timeout`, or attempts kept being abandoned by the attempt timer | try later, or allow more time |
//! | `Conflict` | serialization failures, deadlocks or lock timeouts outlasted the retries | try again |
//! | `CommitUnknown` | the transaction may or may not have been applied | retry with the same idempotency key, or check the data |
//! | `Database` | the server rejected the work for a reason retrying cannot fix | fix the input (a constraint) or the code |
//! | `Config` | the configuration is invalid, e.g. a malformed URL, or one of the runtime's tables is missing and the role may not create it | fix the configuration, or run [`Db::migrate`] as the schema's owner |
//! | `KeyReused` | an idempotency key came back with other arguments than its first call's | use a new key for a new request (422); never retried |
//! | `NotReplicated` | committed on the primary, but no standby confirmed it within `replicated` | repeat with the same idempotency key later (the stored result comes back once a standby has it); never re-run without one |
//!
//! `ErrorKind` is `#[non_exhaustive]`: a `match` needs a `_` arm. A sketch of an HTTP
//! mapping, free of any web framework:
//!
//! ```
//! use resilient_tx::tokio_postgres::error::SqlState;
//! use resilient_tx::{ErrorKind, TxError};
//!
//! /// The status to answer with, and whether to add `Retry-After`.
//! fn http_status(error: &TxError) -> (u16, bool) {
//!     match error.kind() {
//!         ErrorKind::Unavailable | ErrorKind::PoolExhausted => (503, true),
//!         // The client should retry with the same idempotency key to learn the outcome.
//!         ErrorKind::CommitUnknown => (503, true),
//!         ErrorKind::Timeout => (504, false),
//!         ErrorKind::Conflict => (409, true),
//!         ErrorKind::Database if error.sqlstate() == Some(&SqlState::UNIQUE_VIOLATION) => {
//!             (409, false)
//!         }
//!         ErrorKind::Database | ErrorKind::Config => (500, false),
//!         // The client sent another request under a key it already used.
//!         ErrorKind::KeyReused => (422, false),
//!         // Applied on the primary, not yet on a standby: the same key, a moment later.
//!         ErrorKind::NotReplicated => (503, true),
//!         _ => (500, false),
//!     }
//! }
//!
//! assert_eq!(http_status(&TxError::config("bad URL")), (500, false));
//! ```
//!
//! # Without the macro
//!
//! [`Db::transaction`] runs an async closure with the same attempt loop, under an
//! explicit [`Policy`] (the settings the attribute's options map to). The closure may
//! run more than once.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use resilient_tx::{Db, Isolation, Policy, TxError};
//!
//! # async fn example(db: &Db) -> Result<(), TxError> {
//! let policy = Policy::default()
//!     .isolation(Isolation::Serializable)
//!     .retries(8)
//!     .timeout(Duration::from_secs(2))
//!     .deadline(Duration::from_secs(10));
//! let (from, to, cents) = (1_i64, 2_i64, 500_i64);
//! let balance: i64 = db
//!     .transaction(&policy, async |tx| {
//!         tx.execute("UPDATE accounts SET cents = cents - $2 WHERE id = $1", &[&from, &cents])
//!             .await?;
//!         tx.execute("UPDATE accounts SET cents = cents + $2 WHERE id = $1", &[&to, &cents])
//!             .await?;
//!         let row = tx.query_one("SELECT cents FROM accounts WHERE id = $1", &[&from]).await?;
//!         Ok::<_, TxError>(row.get(0))
//!     })
//!     .await?;
//! # let _ = balance;
//! # Ok(()) }
//! ```
//!
//! The future of an async closure cannot yet be proven `Send`; inside `tokio::spawn` or
//! a web handler use a `#[retriable_tx]` function or [`Db::transaction_boxed`].
//! Idempotency keys are available only through the attribute.
//!
//! # Configuring a `Db`
//!
//! [`Db::connect`] uses the defaults; [`Db::builder`] sets the pool, the timeouts and
//! the default [`Policy`] of calls. Building never waits for the database, so an
//! application starts while its database is down; it fails only on invalid settings.
//! URLs are libpq URIs or key=value strings; with several hosts and
//! `target_session_attrs=read-write`, connections go to the writable one. Without it,
//! they go to the first host that answers until a write meets a read-only server
//! (a standby, a demoted primary): from then on new connections pass over read-only
//! hosts, as if the URL said `read-write`.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use resilient_tx::{Db, Policy, TxError};
//!
//! # async fn example() -> Result<(), TxError> {
//! let db = Db::builder("postgres://app@db1:5432,db2:5432/app?target_session_attrs=read-write")
//!     .max_size(20)
//!     .min_idle(2)
//!     .pool_timeout(Duration::from_secs(2))
//!     .connect_timeout(Duration::from_secs(3))
//!     .policy(
//!         Policy::default()
//!             .timeout(Duration::from_secs(5))
//!             .deadline(Duration::from_secs(20)),
//!     )
//!     .build()
//!     .await?;
//! # let _ = db;
//! # Ok(()) }
//! ```
//!
//! # Health, pool status and metrics
//!
//! - [`Db::health`] probes the database through the pool within the health timeout
//!   (1 s by default, [`DbBuilder::health_timeout`]) and never fails: it returns a
//!   [`Health`] with `healthy`, the probe's `latency`, the server's `role`
//!   ([`ServerRole::Primary`] or [`ServerRole::Standby`]), the `pool` and the
//!   `last_error`.
//! - [`Db::pool_status`] is a [`PoolStatus`] snapshot: `max_size`, `connections`,
//!   `idle`, `in_use`, and `waiting` callers.
//! - [`Db::metrics`] is a [`Metrics`] snapshot of counters since the `Db` was built:
//!   calls, attempts, commits, retries by cause, connections opened and discarded,
//!   stale connections replaced, ambiguous commits and how each was settled, give-ups
//!   and retry-budget refusals. Counters only grow; subtract two snapshots for rates.
//! - With the `metrics` cargo feature the same events, with pool gauges and call,
//!   attempt, connect and checkout durations, go through the `metrics` facade to the
//!   recorder the application installs (Prometheus, OpenTelemetry, …):
//!   [the guide](guide#metrics) lists every series.
//!
//! ```no_run
//! use resilient_tx::{Db, ServerRole};
//!
//! /// A readiness answer: status and a one-line body.
//! async fn ready(db: &Db) -> (u16, String) {
//!     let health = db.health().await;
//!     if health.healthy && health.role == Some(ServerRole::Primary) {
//!         let ms = health.latency.map_or(0, |latency| latency.as_millis());
//!         let pool = health.pool;
//!         (200, format!("ok in {ms} ms, {} of {} connections in use", pool.in_use, pool.max_size))
//!     } else {
//!         (503, health.last_error.unwrap_or_else(|| "not writable".to_owned()))
//!     }
//! }
//!
//! fn report(db: &Db) {
//!     let pool = db.pool_status();
//!     let metrics = db.metrics();
//!     println!(
//!         "pool {}/{} ({} waiting); {} calls, {} retries, {} unresolved commits",
//!         pool.in_use,
//!         pool.max_size,
//!         pool.waiting,
//!         metrics.calls,
//!         metrics.retries(),
//!         metrics.ambiguous_unresolved,
//!     );
//! }
//! ```

#![deny(missing_docs, missing_debug_implementations)]

#[doc(inline)]
pub use resilient_tx_macros::retriable_tx;
pub use resilient_tx_runtime::{
    AsTxError, BoxedBody, CommitVerification, Db, DbBuilder, ErrorKind, Health, Isolation, Metrics,
    Params, Policy, PoolStatus, RetryBudgetConfig, ServerRole, Tx, TxError, TxStatement,
    tokio_postgres,
};
#[cfg(feature = "metrics")]
pub use resilient_tx_runtime::{describe_metrics, record_pool_metrics};

#[doc = include_str!("../docs/guide.md")]
pub mod guide {}

/// Items the code generated by `#[retriable_tx]` refers to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use resilient_tx_runtime::__private::*;

    use resilient_tx_runtime::{AsTxError, TxError};

    /// An error type a `#[retriable_tx]` function can return: `?` turns a `TxError`
    /// into it, and the runtime finds the `TxError` in it again to classify it. One
    /// trait for both, so that a type with neither is one error, not two.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be the error type of a #[retriable_tx] function",
        label = "the runtime turns a `TxError` into this type and must find it in there again to retry",
        note = "these work: `TxError`; `Box<dyn std::error::Error + Send + Sync>`; `anyhow::Error` with resilient-tx's `anyhow` feature; a type of your own that implements `From<TxError>` and `resilient_tx::AsTxError`"
    )]
    pub trait ErrorType: From<TxError> + AsTxError {}

    // Not recommended, so that the error names `ErrorType`, whose message says what
    // works, instead of one of the two bounds.
    #[diagnostic::do_not_recommend]
    impl<E: From<TxError> + AsTxError> ErrorType for E {}

    /// `Result<T, E>`, also when written through an alias such as `anyhow::Result<T>`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a `Result`: a #[retriable_tx] function returns `Result<T, E>`"
    )]
    pub trait ReturnType {
        /// `E`.
        type Error;
    }

    impl<T, E> ReturnType for Result<T, E> {
        type Error = E;
    }

    /// A failed `begin` as the error of a function that returns `R`. Its bounds are
    /// the check of `R`'s error type: the generated code calls it before anything else
    /// that needs them, spanned on the error type, so that an unusable one is reported
    /// there, once.
    pub fn convert_error<R>(error: TxError) -> R::Error
    where
        R: ReturnType,
        R::Error: ErrorType,
    {
        From::from(error)
    }
}

//! The `#[retriable_tx]` attribute of [resilient-tx].
//!
//! Use it through the `resilient_tx` crate, which re-exports it together with the
//! runtime the generated code calls; this crate is not meant to be a dependency of its
//! own. See [`macro@retriable_tx`] for the options.
//!
//! [resilient-tx]: https://example.invalid/resilient-tx

#![deny(missing_docs)]

use proc_macro::TokenStream;

/// Runs an `async fn` as a PostgreSQL transaction that is retried until it commits.
///
/// The function takes a `tx: &mut Tx<'_>` parameter (any name, any position). The
/// generated function takes `&Db` in its place and, for each attempt, gets a pooled
/// connection, sends `BEGIN` with the body's first statement, runs the body with a fresh
/// `Tx`, and sends `COMMIT` if the body returned `Ok`. Failures that are safe to retry
/// (serialization failures, deadlocks, lost connections, a restarted or failed-over
/// server) start a new attempt after a backoff; a connection lost while `COMMIT` was in
/// flight is never re-run blindly; anything else is returned at once.
///
/// Every example on this page is compiled as a doctest in the facade's
/// [`resilient_tx::guide`](../resilient_tx/guide/index.html) module, which this page
/// follows; what happens around a call (unknown `COMMIT` outcomes, error kinds, health and
/// metrics) is in the [`resilient_tx`](../resilient_tx/index.html) crate docs.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx]
/// async fn rename_server(tx: &mut Tx<'_>, id: i64, name: &str) -> Result<u64, TxError> {
///     tx.execute("UPDATE servers SET name = $2 WHERE id = $1", &[&id, &name])
///         .await
/// }
///
/// let db = Db::connect("postgres://app@localhost/app").await?;
/// // `db: &Db` takes the place of `tx: &mut Tx<'_>`.
/// let updated = rename_server(&db, 7, "alpha").await?;
/// ```
///
/// # What the function may look like
///
/// - It must be `async` and return `Result<T, E>` where
///   `E: From<TxError> + resilient_tx::AsTxError`; `TxError` itself qualifies.
/// - **The body may run more than once.** Everything it did in the database in a failed
///   attempt was rolled back. Parameters passed by reference (`&T`, `&mut T`) are handed
///   to every attempt, so changes made through them by a failed attempt stay: reset such
///   state in the body. A parameter passed by value is cloned for each attempt, so its
///   type must be `Clone` (the compiler says so, on the parameter, when it is not). Any
///   pattern works (`(a, b): (u8, u8)`, `mut x: T`, `_: T`).
/// - Methods take `&self` or `&mut self`, never `self` by value; `&Db` takes the
///   transaction's place after the receiver.
/// - Generics, `where` clauses, visibility and attributes are kept. Doc comments stay
///   on the generated function; lint attributes (`allow`, `warn`, `deny`, `forbid`)
///   also cover the body, with `expect` relaxed to `allow`.
/// - A free function's body moves into an inner `async fn`. Methods, and functions
///   that mention `Self`, run their body in place instead, because an inner `fn` cannot
///   use `self`, `Self` or the generic parameters of an enclosing `impl` block; an
///   associated function without `self` that uses those parameters must mention `Self`
///   (for example `-> Result<Self, TxError>` or `Self::` in the body).
/// - The `&Db` parameter is called `db` (`__rtx_db` if a parameter already has that
///   name). Names starting with `__rtx_` are reserved for generated code.
///
/// By-value parameters are cloned for each attempt; `&mut` ones are shared by all:
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[derive(Clone)]
/// struct NewServer {
///     name: String,
///     url: String,
///     tags: Vec<String>,
/// }
///
/// /// `server` and `tags` are cloned for each attempt; `log` is the same `Vec` for all.
/// #[retriable_tx]
/// async fn add_server(
///     tx: &mut Tx<'_>,
///     server: NewServer,
///     log: &mut Vec<String>,
/// ) -> Result<i64, TxError> {
///     log.clear(); // whatever a failed attempt pushed
///     let row = tx
///         .query_one(
///             "INSERT INTO servers(name, url) VALUES ($1, $2) RETURNING id",
///             &[&server.name, &server.url],
///         )
///         .await?;
///     let id: i64 = row.get(0);
///     for tag in server.tags {
///         tx.execute("INSERT INTO tags(server_id, tag) VALUES ($1, $2)", &[&id, &tag])
///             .await?;
///         log.push(tag);
///     }
///     Ok(id)
/// }
///
/// let server = NewServer {
///     name: "alpha".into(),
///     url: "http://a".into(),
///     tags: vec!["eu".into()],
/// };
/// let mut log = Vec::new();
/// let id = add_server(&db, server, &mut log).await?;
/// ```
///
/// A method:
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// struct Inventory {
///     table: String,
/// }
///
/// impl Inventory {
///     #[retriable_tx(isolation = repeatable_read)]
///     async fn reserve(&self, tx: &mut Tx<'_>, sku: &str) -> Result<bool, TxError> {
///         let sql = format!(
///             "UPDATE {} SET reserved = reserved + 1 WHERE sku = $1 AND reserved < stock",
///             self.table
///         );
///         Ok(tx.execute(&sql, &[&sku]).await? == 1)
///     }
/// }
///
/// let inventory = Inventory { table: "stock".into() };
/// let reserved = inventory.reserve(&db, "sku-1").await?;
/// ```
///
/// An application's own error type. An error whose `as_tx_error` returns `Some` is
/// classified like that `TxError` (a conflict or a lost connection is retried); one that
/// returns `None` rolls the transaction back and is returned at once, unretried.
///
/// ```ignore
/// use resilient_tx::{AsTxError, Db, Tx, TxError, retriable_tx};
///
/// #[derive(Debug)]
/// enum AppError {
///     Db(TxError),
///     NotFound(i64),
///     InsufficientFunds,
/// }
///
/// impl From<TxError> for AppError {
///     fn from(error: TxError) -> Self {
///         AppError::Db(error)
///     }
/// }
///
/// impl AsTxError for AppError {
///     fn as_tx_error(&self) -> Option<&TxError> {
///         match self {
///             AppError::Db(error) => Some(error),
///             AppError::NotFound(_) | AppError::InsufficientFunds => None,
///         }
///     }
/// }
///
/// #[retriable_tx(isolation = serializable)]
/// async fn withdraw(tx: &mut Tx<'_>, account: i64, cents: i64) -> Result<i64, AppError> {
///     let row = tx
///         .query_opt("SELECT cents FROM accounts WHERE id = $1", &[&account])
///         .await?
///         .ok_or(AppError::NotFound(account))?;
///     let balance: i64 = row.get(0);
///     if balance < cents {
///         // Rolled back and returned at once: retrying would not change the answer.
///         return Err(AppError::InsufficientFunds);
///     }
///     tx.execute("UPDATE accounts SET cents = cents - $2 WHERE id = $1", &[&account, &cents])
///         .await?;
///     Ok(balance - cents)
/// }
///
/// match withdraw(&db, 1, 500).await {
///     Ok(left) => println!("{left} cents left"),
///     Err(AppError::Db(error)) => eprintln!("database: {error} ({})", error.kind()),
///     Err(other) => eprintln!("{other:?}"),
/// }
/// ```
///
/// # Options
///
/// Each option may be given at most once; an unknown or repeated option is a compile
/// error that lists the valid ones. Anything left out comes from the `Db`'s `Policy`
/// (`DbBuilder::policy`, or `Policy::default()`). Durations are strings: a whole number
/// and a unit, `ms`, `s` or `m` (`"20ms"`, `"2s"`, `"1m"`).
///
/// ## `retries = N`
///
/// Retries after the first attempt (default 5); `retries = 0` makes a single attempt.
/// The count covers every cause; a lock timeout (55P03, 55006) is retried only after the
/// first or second attempt. Retries that reconnect also draw on the `Db`'s shared retry
/// budget, and the call fails fast when it is spent.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(retries = 10)]
/// async fn bump(tx: &mut Tx<'_>, id: i64) -> Result<u64, TxError> {
///     tx.execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&id])
///         .await
/// }
///
/// bump(&db, 1).await?;
/// ```
///
/// ## `isolation = read_committed | repeatable_read | serializable`
///
/// The isolation level of `BEGIN` (default: the server's). Serialization failures and
/// deadlocks are rolled back by the server and retried; when they outlast the retries the
/// call returns `ErrorKind::Conflict`.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(isolation = serializable)]
/// async fn transfer(tx: &mut Tx<'_>, from: i64, to: i64, cents: i64) -> Result<(), TxError> {
///     tx.execute("UPDATE accounts SET cents = cents - $2 WHERE id = $1", &[&from, &cents])
///         .await?;
///     tx.execute("UPDATE accounts SET cents = cents + $2 WHERE id = $1", &[&to, &cents])
///         .await?;
///     Ok(())
/// }
///
/// transfer(&db, 1, 2, 500).await?;
/// ```
///
/// ## `read_only`
///
/// `BEGIN READ ONLY`: the server rejects any write in the transaction. Cannot be combined
/// with `idempotent` or `idempotency_key`.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(read_only)]
/// async fn count_servers(tx: &mut Tx<'_>) -> Result<i64, TxError> {
///     Ok(tx.query_one("SELECT count(*) FROM servers", &[]).await?.get(0))
/// }
///
/// let n = count_servers(&db).await?;
/// ```
///
/// ## `timeout = "2s"`
///
/// Per attempt: `SET LOCAL statement_timeout`, and a client-side timer (the timeout plus
/// 500 ms) that abandons and discards a connection that stops answering. A statement the
/// server cancels returns `ErrorKind::Timeout` at once; an attempt the timer abandons is
/// retried on a fresh connection. Must be greater than zero. Default: no statement
/// timeout, and the timer is bounded by the deadline alone.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(timeout = "500ms")]
/// async fn lookup(tx: &mut Tx<'_>, name: &str) -> Result<Option<i64>, TxError> {
///     let row = tx
///         .query_opt("SELECT id FROM servers WHERE name = $1", &[&name])
///         .await?;
///     Ok(row.map(|row| row.get(0)))
/// }
///
/// let id = lookup(&db, "alpha").await?;
/// ```
///
/// ## `deadline = "10s"`
///
/// Total time for all attempts and the backoff between them (default 30 s). No attempt
/// runs past it, and a retry whose backoff would end after it is not started. Must be
/// greater than zero.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(deadline = "10s")]
/// async fn remove(tx: &mut Tx<'_>, id: i64) -> Result<u64, TxError> {
///     tx.execute("DELETE FROM servers WHERE id = $1", &[&id]).await
/// }
///
/// remove(&db, 7).await?;
/// ```
///
/// ## `backoff_base = "20ms"`, `backoff_max = "2s"`
///
/// Exponential backoff with full jitter between attempts: the wait before retry `n` is
/// random in `0..=min(backoff_max, backoff_base * 2^(n-1))` (defaults 20 ms and 2 s).
/// Retries that reconnect use a base of at least 100 ms. When both are given,
/// `backoff_base` must not exceed `backoff_max`.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(backoff_base = "5ms", backoff_max = "200ms")]
/// async fn touch(tx: &mut Tx<'_>, id: i64) -> Result<u64, TxError> {
///     tx.execute("UPDATE servers SET seen_at = now() WHERE id = $1", &[&id])
///         .await
/// }
///
/// touch(&db, 7).await?;
/// ```
///
/// ## `idempotency_key = <expr>`
///
/// Exactly once per key: the key is claimed and the result stored in the body's own
/// transaction, and a later call of the same function with the same key (the runtime's
/// retry after an unknown `COMMIT` outcome, or the client sending the request again)
/// returns the stored result without running the body. The expression is evaluated once
/// per call, before the first attempt, from the function's parameters (`self` included);
/// its value must implement `Display`. `T` in `Result<T, E>` must be
/// `Serialize + DeserializeOwned`. Keys are scoped by the function's module path and name.
/// Cannot be combined with `idempotent` or `read_only`.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Order {
///     id: i64,
///     total_cents: i64,
/// }
///
/// #[retriable_tx(idempotency_key = request_id)]
/// async fn place_order(
///     tx: &mut Tx<'_>,
///     request_id: &str,
///     item: &str,
///     cents: i64,
/// ) -> Result<Order, TxError> {
///     let row = tx
///         .query_one(
///             "INSERT INTO orders(item, cents) VALUES ($1, $2) RETURNING id",
///             &[&item, &cents],
///         )
///         .await?;
///     Ok(Order { id: row.get(0), total_cents: cents })
/// }
///
/// // Any expression over the parameters works, `self` included.
/// struct Payments {
///     tenant: String,
/// }
///
/// impl Payments {
///     #[retriable_tx(idempotency_key = format!("{}:{order_id}", self.tenant))]
///     async fn pay(&self, tx: &mut Tx<'_>, order_id: i64) -> Result<bool, TxError> {
///         let n = tx
///             .execute("UPDATE orders SET paid = true WHERE id = $1 AND NOT paid", &[&order_id])
///             .await?;
///         Ok(n == 1)
///     }
/// }
///
/// // The request id comes from the client (an `Idempotency-Key` header, say): the same
/// // id always gets the same order back, however often the request is sent.
/// let order = place_order(&db, "req-7f3a", "book", 1200).await?;
/// let paid = Payments { tenant: "shop".into() }.pay(&db, order.id).await?;
/// ```
///
/// ## `idempotent`
///
/// Declares that running the body twice does no harm, so after an unknown `COMMIT`
/// outcome it is simply run again, without the commit-marker check (and without writing
/// a marker). Cannot be combined with `read_only` or `idempotency_key`.
///
/// ```ignore
/// use resilient_tx::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(idempotent)]
/// async fn set_url(tx: &mut Tx<'_>, id: i64, url: &str) -> Result<u64, TxError> {
///     tx.execute("UPDATE servers SET url = $2 WHERE id = $1", &[&id, &url])
///         .await
/// }
///
/// set_url(&db, 7, "http://b").await?;
/// ```
///
/// ## `crate = "path"`
///
/// The path of the `resilient_tx` crate in generated code (default `::resilient_tx`),
/// for a crate that renames the dependency or uses it through a re-export.
///
/// ```ignore
/// // The dependency under another name, e.g. `rtx = { package = "resilient-tx", … }`.
/// use resilient_tx as rtx;
///
/// #[rtx::retriable_tx(crate = "rtx")]
/// async fn ping(tx: &mut rtx::Tx<'_>) -> Result<(), rtx::TxError> {
///     tx.batch_execute("SELECT 1").await
/// }
///
/// // A module (or a platform crate) that re-exports resilient-tx.
/// mod platform {
///     pub mod db {
///         pub use resilient_tx::*;
///     }
/// }
///
/// use platform::db::{Db, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(crate = "crate::platform::db", retries = 2)]
/// async fn pong(tx: &mut Tx<'_>) -> Result<(), TxError> {
///     tx.batch_execute("SELECT 1").await
/// }
///
/// ping(&db).await?;
/// pong(&db).await?;
/// ```
///
/// ## Options together
///
/// Each option overrides only its own setting of the `Db`'s policy.
///
/// ```ignore
/// use std::time::Duration;
///
/// use resilient_tx::{Db, Policy, Tx, TxError, retriable_tx};
///
/// #[retriable_tx(
///     isolation = serializable,
///     retries = 8,
///     timeout = "2s",
///     deadline = "15s",
///     backoff_base = "10ms",
///     backoff_max = "1s"
/// )]
/// async fn rebalance(tx: &mut Tx<'_>, from: i64, to: i64) -> Result<(), TxError> {
///     tx.execute(
///         "UPDATE shards SET owner = $2 WHERE owner = $1 AND id % 2 = 0",
///         &[&from, &to],
///     )
///     .await?;
///     Ok(())
/// }
///
/// // Every call through this `Db` gets a 5 s timeout unless its attribute says otherwise.
/// let db = Db::builder("postgres://app@localhost/app")
///     .policy(Policy::default().timeout(Duration::from_secs(5)))
///     .build()
///     .await?;
/// rebalance(&db, 1, 2).await?;
/// ```
///
/// # When `COMMIT`'s outcome is unknown
///
/// A function with neither `idempotency_key` nor `idempotent` (and not `read_only`)
/// is verified after an ambiguous `COMMIT`: a fresh connection asks the server whether
/// its transaction committed: committed → the call succeeds, not committed → it
/// retries, no trustworthy answer before the deadline → `ErrorKind::CommitUnknown`.
/// `DbBuilder::commit_verification` chooses how (a marker row by default, or the
/// transaction's status) or turns it off. The
/// [crate docs](../resilient_tx/index.html#when-commits-outcome-is-unknown) say when to
/// use which.
#[proc_macro_attribute]
pub fn retriable_tx(attr: TokenStream, item: TokenStream) -> TokenStream {
    resilient_tx_macros_core::retriable_tx(attr.into(), item.into()).into()
}

//! The `#[retriable_tx]` attribute of [resilient-tx].
//!
//! Use it through the `resilient_tx` crate, which re-exports it together with the
//! runtime the generated code calls; this crate is not meant to be a dependency of its
//! own. See [`macro@retriable_tx`] for the options.
//!
//! [resilient-tx]: https://example.invalid/resilient-tx

#![deny(missing_docs)]

mod attr;
mod duration;
mod errors;
mod expand;
mod signature;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Runs an `async fn` as a PostgreSQL transaction that is retried until it commits.
///
/// The function takes a `tx: &mut Tx<'_>` parameter (any name, any position). The
/// generated function takes `&Db` in its place and, for each attempt, gets a connection,
/// `BEGIN`s, runs the body with a fresh `Tx`, and `COMMIT`s. Failures that are safe to
/// retry (serialization failures, deadlocks, lost connections, a restarted or failed-over
/// server) start a new attempt after a backoff; anything else is returned at once.
///
/// ```ignore
/// use resilient_tx::{retriable_tx, Db, Tx, TxError};
///
/// #[retriable_tx(retries = 5)]
/// async fn add_server(tx: &mut Tx<'_>, name: &str, url: &str) -> Result<i64, TxError> {
///     let row = tx
///         .query_one("INSERT INTO servers(name, url) VALUES ($1, $2) RETURNING id", &[&name, &url])
///         .await?;
///     Ok(row.get(0))
/// }
///
/// // The pool goes where the transaction was:
/// let id = add_server(&db, "alpha", "http://a").await?;
/// ```
///
/// # What the function may look like
///
/// - It must be `async` and return `Result<T, E>` where
///   `E: From<TxError> + resilient_tx::AsTxError`; `TxError` itself qualifies, and so
///   does an application's own error enum with those two impls. An error that is not
///   a database error rolls the transaction back and is returned unretried.
/// - **The body may run more than once.** Parameters passed by reference (`&T`,
///   `&mut T`) are reused by every attempt; a parameter passed by value is cloned for
///   each attempt, so its type must be `Clone` (the compiler says so, on the parameter,
///   when it is not). Any pattern works (`(a, b): (u8, u8)`, `mut x: T`, `_: T`).
/// - Methods take `&self` or `&mut self`, never `self` by value.
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
/// # Options
///
/// Each option may be given at most once; anything left out comes from the `Db`'s
/// `Policy`. Durations are strings: a whole number and a unit, `ms`, `s` or `m`
/// (`"20ms"`, `"2s"`, `"1m"`).
///
/// ## `retries = N`
///
/// Retries after the first attempt (default 5); `retries = 0` makes a single attempt.
///
/// ```ignore
/// #[retriable_tx(retries = 10)]
/// async fn bump(tx: &mut Tx<'_>, id: i64) -> Result<u64, TxError> {
///     tx.execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&id]).await
/// }
/// ```
///
/// ## `isolation = read_committed | repeatable_read | serializable`
///
/// The isolation level of `BEGIN` (default: the server's). Under `serializable`,
/// serialization failures are expected and retried.
///
/// ```ignore
/// #[retriable_tx(isolation = serializable)]
/// async fn transfer(tx: &mut Tx<'_>, from: i64, to: i64, cents: i64) -> Result<(), TxError> {
///     tx.execute("UPDATE accounts SET cents = cents - $2 WHERE id = $1", &[&from, &cents]).await?;
///     tx.execute("UPDATE accounts SET cents = cents + $2 WHERE id = $1", &[&to, &cents]).await?;
///     Ok(())
/// }
/// ```
///
/// ## `read_only`
///
/// `BEGIN READ ONLY`; the call may be served by a replica pool when the `Db` has one.
///
/// ```ignore
/// #[retriable_tx(read_only)]
/// async fn count_servers(tx: &mut Tx<'_>) -> Result<i64, TxError> {
///     Ok(tx.query_one("SELECT count(*) FROM servers", &[]).await?.get(0))
/// }
/// ```
///
/// ## `timeout = "2s"`
///
/// Per attempt: `SET LOCAL statement_timeout`, and a client-side timer that abandons
/// (and discards) a connection that stops answering. Must be greater than zero.
///
/// ```ignore
/// #[retriable_tx(timeout = "500ms")]
/// async fn lookup(tx: &mut Tx<'_>, name: &str) -> Result<Option<i64>, TxError> {
///     let row = tx.query_opt("SELECT id FROM servers WHERE name = $1", &[&name]).await?;
///     Ok(row.map(|row| row.get(0)))
/// }
/// ```
///
/// ## `deadline = "10s"`
///
/// Total time for all attempts and the backoff between them. Must be greater than zero.
///
/// ```ignore
/// #[retriable_tx(deadline = "10s")]
/// async fn remove(tx: &mut Tx<'_>, id: i64) -> Result<u64, TxError> {
///     tx.execute("DELETE FROM servers WHERE id = $1", &[&id]).await
/// }
/// ```
///
/// ## `backoff_base = "20ms"`, `backoff_max = "2s"`
///
/// Exponential backoff with full jitter between attempts: the wait before retry `n` is
/// random in `0..=min(backoff_max, backoff_base * 2^(n-1))` (defaults 20ms and 2s).
/// `backoff_base` must not exceed `backoff_max`.
///
/// ```ignore
/// #[retriable_tx(backoff_base = "5ms", backoff_max = "200ms")]
/// async fn touch(tx: &mut Tx<'_>, id: i64) -> Result<u64, TxError> {
///     tx.execute("UPDATE servers SET seen = now() WHERE id = $1", &[&id]).await
/// }
/// ```
///
/// ## `idempotency_key = <expr>`
///
/// Exactly once per key: the result is stored in the same transaction, and a later
/// call with the same key (a retry after an unknown `COMMIT` outcome, or the client
/// sending the request again) returns the stored result without running the body.
/// The expression is evaluated once per call, before the first attempt, from the
/// function's parameters; it must implement `Display`. `T` in `Result<T, E>` must be
/// `Serialize + DeserializeOwned`. Cannot be combined with `idempotent` or `read_only`.
///
/// ```ignore
/// #[retriable_tx(idempotency_key = request_id)]
/// async fn place_order(tx: &mut Tx<'_>, request_id: uuid::Uuid, item: &str) -> Result<i64, TxError> {
///     Ok(tx.query_one("INSERT INTO orders(item) VALUES ($1) RETURNING id", &[&item]).await?.get(0))
/// }
/// ```
///
/// ## `idempotent`
///
/// Declares that running the body twice does no harm, so it may be re-run even when a
/// `COMMIT`'s outcome is unknown, without the commit-marker check. Cannot be combined
/// with `read_only` (which needs no check) or `idempotency_key` (which already makes
/// retries safe).
///
/// ```ignore
/// #[retriable_tx(idempotent)]
/// async fn set_url(tx: &mut Tx<'_>, id: i64, url: &str) -> Result<u64, TxError> {
///     tx.execute("UPDATE servers SET url = $2 WHERE id = $1", &[&id, &url]).await
/// }
/// ```
///
/// ## `crate = "path"`
///
/// The path of the `resilient_tx` crate in generated code (default `::resilient_tx`),
/// for a crate that renames the dependency or re-exports it.
///
/// ```ignore
/// use my_platform::db::{retriable_tx, Tx, TxError};
///
/// #[retriable_tx(crate = "my_platform::db")]
/// async fn ping(tx: &mut Tx<'_>) -> Result<(), TxError> {
///     tx.batch_execute("SELECT 1").await
/// }
/// ```
///
/// # Methods
///
/// ```ignore
/// impl Inventory {
///     #[retriable_tx(isolation = repeatable_read)]
///     async fn reserve(&self, tx: &mut Tx<'_>, sku: &str) -> Result<bool, TxError> {
///         let n = tx.execute(&self.reserve_sql, &[&sku]).await?;
///         Ok(n == 1)
///     }
/// }
///
/// let reserved = inventory.reserve(&db, "sku-1").await?;
/// ```
#[proc_macro_attribute]
pub fn retriable_tx(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::retriable_tx(attr.into(), item.into()).into()
}

//! Idempotency keys: a call with a key takes effect once per key. The key is claimed
//! and the body's result stored in the same transaction as the body, so a retry after
//! an ambiguous COMMIT, or a client retrying the whole request, finds the stored result
//! instead of running the body again. The attempt loop ([`crate::call`]) decides when;
//! this module says how, on the attempt's [`Tx`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Failure, TxError};
use crate::tables::KeyTable;
use crate::tx::Tx;

/// How a keyed attempt starts: run the body, or return what a committed call with the
/// same key stored.
#[doc(hidden)]
#[derive(Debug)]
// Built once per attempt and matched at once: boxing the transaction would cost an
// allocation per keyed attempt for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Begin<'db, T> {
    /// The key is claimed by this attempt: run the body.
    Run(Tx<'db>),
    /// A call with this key already committed this result.
    Stored(T),
}

/// A key within the scope of one function.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'k> {
    pub(crate) scope: &'k str,
    pub(crate) key: &'k str,
}

/// Claims `key` in `tx`: `None` when this transaction now holds it (run the body),
/// the stored result when a committed call with the same key left one.
pub(crate) async fn claim<T: DeserializeOwned>(
    tx: &mut Tx<'_>,
    table: &KeyTable,
    key: Key<'_>,
) -> Result<Option<T>, TxError> {
    let Key { scope, key } = key;
    // A concurrent call with the same key blocks on this insert until the first one
    // commits (then this sees its row) or rolls back (then this claims it).
    if tx
        .query_opt(table.claim.as_str(), &[&scope, &key])
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let row = tx.query_one(table.stored.as_str(), &[&scope, &key]).await?;
    let json: Option<String> = row.get(0);
    let json = json.unwrap_or_else(|| "null".to_owned());
    serde_json::from_str(&json).map(Some).map_err(|e| {
        TxError::new(
            Failure::Database,
            format!(
                "the result stored for idempotency key {key:?} of {scope} does not match the \
                 function's result type: {e}"
            ),
        )
    })
}

/// Stores `value` as the result of `key`, in the transaction that claimed it.
pub(crate) async fn store<T: Serialize>(
    tx: &mut Tx<'_>,
    table: &KeyTable,
    key: Key<'_>,
    value: &T,
) -> Result<(), TxError> {
    let json = serde_json::to_string(value).map_err(|e| {
        TxError::new(
            Failure::Database,
            format!("the result could not be stored with its idempotency key: {e}"),
        )
    })?;
    let Key { scope, key } = key;
    tx.execute(table.store.as_str(), &[&scope, &key, &json])
        .await?;
    Ok(())
}

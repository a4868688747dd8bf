//! Idempotency keys: a call with a key takes effect once per key. The key is claimed
//! and the body's result stored in the same transaction as the body, so a retry after
//! an ambiguous COMMIT, or a client retrying the whole request, finds the stored result
//! instead of running the body again. A [`fingerprint`] of the arguments is stored with
//! the key, so that the key coming back with other arguments is an error
//! ([`ErrorKind::KeyReused`](crate::ErrorKind::KeyReused)) rather than someone else's
//! result. The attempt loop ([`crate::call`]) decides when; this module says how, on
//! the attempt's [`Tx`].

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Failure, TxError};
use crate::tables::{KeyTable, Shape};
use crate::tx::Tx;

mod fingerprint;

pub use fingerprint::{Fingerprint, FingerprintArg, SerializedArg, UnserializedArg};

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

/// The key of one call, as the call holds it.
#[derive(Debug)]
pub(crate) struct CallKey {
    pub(crate) key: String,
    /// Where the key is unique: the function's path (a method's includes its type).
    pub(crate) scope: Cow<'static, str>,
    /// The arguments' fingerprint (`None`: not compared), or why it could not be made.
    pub(crate) fingerprint: Option<Result<String, TxError>>,
}

impl CallKey {
    /// `key` within the scope of the function named `function`, no fingerprint yet.
    pub(crate) fn new(key: String, function: &'static str) -> CallKey {
        CallKey {
            key,
            scope: Cow::Borrowed(function),
            fingerprint: None,
        }
    }

    /// The scope of a method of type `self_type`: its type's path and the method's
    /// name (the last segment of `function`), so that methods of the same name on two
    /// types of one module do not share keys.
    pub(crate) fn scope_of_type(&mut self, self_type: &str, function: &str) {
        let method = function.rsplit("::").next().unwrap_or(function);
        self.scope = Cow::Owned(format!("{self_type}::{method}"));
    }

    /// The borrowed form the statements take; the fingerprint's error, if making it
    /// failed.
    pub(crate) fn as_key(&self) -> Result<Key<'_>, TxError> {
        let fingerprint = match &self.fingerprint {
            None => None,
            Some(Ok(fingerprint)) => Some(fingerprint.as_str()),
            Some(Err(error)) => return Err(error.clone()),
        };
        Ok(Key {
            scope: &self.scope,
            key: &self.key,
            fingerprint,
        })
    }
}

/// A key within its scope, and the fingerprint of the arguments it came with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'k> {
    pub(crate) scope: &'k str,
    pub(crate) key: &'k str,
    pub(crate) fingerprint: Option<&'k str>,
}

/// Claims `key` in `tx`: `None` when this transaction now holds it (run the body),
/// the stored result when a committed call with the same key and the same arguments
/// left one, [`Failure::KeyReused`] when it came with other arguments. `shape` says
/// whether the table stores fingerprints (an older one does not: nothing is compared).
pub(crate) async fn claim<T: DeserializeOwned>(
    tx: &mut Tx<'_>,
    table: &KeyTable,
    shape: Shape,
    key: Key<'_>,
) -> Result<Option<T>, TxError> {
    let Key {
        scope,
        key,
        fingerprint,
    } = key;
    // A concurrent call with the same key blocks on this insert until the first one
    // commits (then this sees its row) or rolls back (then this claims it).
    let claimed = match shape {
        Shape::Current => {
            tx.query_opt(table.claim(shape), &[&scope, &key, &fingerprint])
                .await?
        }
        Shape::Older => tx.query_opt(table.claim(shape), &[&scope, &key]).await?,
    };
    if claimed.is_some() {
        return Ok(None);
    }
    let row = tx.query_one(table.stored(shape), &[&scope, &key]).await?;
    let json: Option<String> = row.get(0);
    let stored_fingerprint: Option<String> = row.get(1);
    // A key stored without a fingerprint (by an older version, or by a call that
    // had none) cannot be compared: its result stands.
    if let (Some(stored), Some(ours)) = (stored_fingerprint.as_deref(), fingerprint) {
        if stored != ours {
            return Err(TxError::new(
                Failure::KeyReused,
                format!(
                    "idempotency key {key:?} of {scope} was already used with other arguments: \
                     a key stands for one request, and repeating it returns that request's \
                     result only when the arguments are the same; use a new key for a new \
                     request"
                ),
            ));
        }
    }
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
    let Key { scope, key, .. } = key;
    tx.execute(table.store.as_str(), &[&scope, &key, &json])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_is_scoped_by_its_type_and_name() {
        let mut key = CallKey::new("k".to_owned(), "shop::orders::create");
        assert_eq!(key.scope, "shop::orders::create");
        key.scope_of_type("shop::orders::Refunds", "shop::orders::create");
        assert_eq!(key.scope, "shop::orders::Refunds::create");
    }

    #[test]
    fn a_fingerprint_that_could_not_be_made_fails_the_call() {
        let mut key = CallKey::new("k".to_owned(), "f");
        assert!(key.as_key().is_ok_and(|k| k.fingerprint.is_none()));
        key.fingerprint = Some(Err(TxError::config("no JSON")));
        assert!(key.as_key().is_err());
    }
}

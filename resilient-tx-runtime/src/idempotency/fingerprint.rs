//! The fingerprint of a keyed call's arguments, stored with its key so that the key
//! coming back with other arguments is told apart from the same request repeated.
//!
//! The fingerprint is the SHA-256, in hex, of canonical JSON: object keys sorted at
//! every level, no whitespace. By default the value is an object of the function's
//! parameters (by name) other than the transaction and the key parameter, each as
//! `serde_json` serializes it; a parameter whose type does not implement `Serialize`
//! contributes nothing. The generated code tells which is which at compile time with
//! autoref specialization: [`SerializedArg`] is implemented for a [`FingerprintArg`]
//! of a `Serialize` type, [`UnserializedArg`] for a reference to any `FingerprintArg`,
//! and the method call `(&FingerprintArg(name, &value)).add_to(…)` picks the first
//! that applies. `key_fingerprint = expr` replaces the object with `expr`'s value
//! ([`Fingerprint::of`]).
//!
//! Sorting keys makes the hash independent of the order in which a `HashMap` (or
//! serde_json's `preserve_order` feature) yields entries, so the same arguments give
//! the same fingerprint in every process.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::error::{Failure, TxError};

/// The arguments of one keyed call, gathered for hashing.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Fingerprint {
    value: Gathered,
}

#[derive(Debug)]
enum Gathered {
    /// Parameters by name.
    Args(serde_json::Map<String, Value>),
    /// The value of `key_fingerprint = expr`.
    Whole(Value),
    /// A value that does not serialize to JSON: the call fails, naming it.
    Failed(String),
}

impl Default for Gathered {
    fn default() -> Self {
        Gathered::Args(serde_json::Map::new())
    }
}

impl Fingerprint {
    /// No arguments yet.
    pub fn new() -> Fingerprint {
        Fingerprint::default()
    }

    /// `key_fingerprint = expr`: the fingerprint of `value` alone.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Fingerprint {
        let value = match serde_json::to_value(value) {
            Ok(value) => Gathered::Whole(value),
            Err(e) => Gathered::Failed(format!(
                "the value of `key_fingerprint` does not serialize to JSON: {e}"
            )),
        };
        Fingerprint { value }
    }

    /// Adds parameter `name`.
    fn add<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        let Gathered::Args(args) = &mut self.value else {
            return;
        };
        match serde_json::to_value(value) {
            Ok(value) => {
                args.insert(name.to_owned(), value);
            }
            Err(e) => {
                self.value = Gathered::Failed(format!(
                    "parameter `{name}` does not serialize to JSON ({e}), so it cannot be \
                     part of the idempotency key's fingerprint; give the function \
                     `key_fingerprint = <expr>` to say what identifies a request"
                ));
            }
        }
    }

    /// The hex SHA-256 of the canonical JSON, or a `Config` error naming the value
    /// that does not serialize.
    pub(crate) fn finish(self) -> Result<String, TxError> {
        let value = match self.value {
            Gathered::Args(args) => Value::Object(args),
            Gathered::Whole(value) => value,
            Gathered::Failed(why) => return Err(TxError::new(Failure::Config, why)),
        };
        let mut json = String::new();
        canonical(&value, &mut json);
        let digest = Sha256::digest(json.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest.iter() {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        Ok(hex)
    }
}

/// One parameter of a keyed call, for the generated code's autoref specialization.
#[doc(hidden)]
#[derive(Debug)]
pub struct FingerprintArg<'a, T: ?Sized>(pub &'static str, pub &'a T);

/// A parameter whose type is `Serialize`: part of the fingerprint.
#[doc(hidden)]
pub trait SerializedArg {
    /// Adds the parameter to `fingerprint`.
    fn add_to(&self, fingerprint: &mut Fingerprint);
}

impl<T: Serialize + ?Sized> SerializedArg for FingerprintArg<'_, T> {
    fn add_to(&self, fingerprint: &mut Fingerprint) {
        fingerprint.add(self.0, self.1);
    }
}

/// A parameter whose type is not `Serialize`: not part of the fingerprint.
#[doc(hidden)]
pub trait UnserializedArg {
    /// Leaves `fingerprint` as it is.
    fn add_to(&self, fingerprint: &mut Fingerprint);
}

impl<T: ?Sized> UnserializedArg for &FingerprintArg<'_, T> {
    fn add_to(&self, _: &mut Fingerprint) {}
}

/// `value` as JSON with every object's keys in order.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (at, (key, value)) in entries.into_iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                // A `Value`'s Display is its JSON, escapes included.
                let _ = write!(out, "{}:", Value::String(key.clone()));
                canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (at, item) in items.iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use super::*;

    /// What the generated code does for each parameter.
    macro_rules! fingerprint {
        ($($name:ident),*) => {{
            #[allow(unused_imports)]
            use super::{SerializedArg as _, UnserializedArg as _};
            let mut fingerprint = Fingerprint::new();
            $((&FingerprintArg(stringify!($name), &$name)).add_to(&mut fingerprint);)*
            fingerprint.finish().expect("serializable")
        }};
    }

    #[test]
    fn the_same_arguments_give_the_same_fingerprint_and_others_another() {
        let (item, qty) = ("book", 2);
        let first = fingerprint!(item, qty);
        assert_eq!(first.len(), 64);
        assert_eq!(first, fingerprint!(item, qty));
        let qty = 3;
        assert_ne!(first, fingerprint!(item, qty));
    }

    #[test]
    fn parameters_are_told_apart_by_name() {
        let (a, b) = (1, 2);
        let swapped = {
            let (a, b) = (b, a);
            fingerprint!(a, b)
        };
        assert_ne!(fingerprint!(a, b), swapped);
    }

    #[test]
    fn map_order_does_not_matter() {
        let sorted: BTreeMap<String, i32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
        let hashed: HashMap<String, i32> = sorted.clone().into_iter().collect();
        let map = sorted;
        let from_btree = fingerprint!(map);
        let map = hashed;
        assert_eq!(from_btree, fingerprint!(map));
    }

    #[test]
    fn a_parameter_that_is_not_serialize_contributes_nothing() {
        struct Handle;
        let item = "book";
        let handle = Handle;
        let with_handle = fingerprint!(item, handle);
        assert_eq!(with_handle, fingerprint!(item));
        let mutex = Mutex::new(1);
        // `Mutex<T>` is `Serialize` (serde serializes its content): it counts.
        assert_ne!(fingerprint!(item, mutex), fingerprint!(item));
    }

    #[test]
    fn the_canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": [{"y": 1, "x": "\"q\""}], "a": null});
        let mut out = String::new();
        canonical(&value, &mut out);
        assert_eq!(out, r#"{"a":null,"b":[{"x":"\"q\"","y":1}]}"#);
        assert_eq!(
            Fingerprint::of(&value).finish().expect("json"),
            Fingerprint::of(&serde_json::json!({"a": null, "b": [{"x": "\"q\"", "y": 1}]}))
                .finish()
                .expect("json")
        );
    }

    #[test]
    fn a_value_that_does_not_serialize_is_a_config_error_naming_it() {
        let map: HashMap<(i32, i32), i32> = [((1, 2), 3)].into_iter().collect();
        let mut fingerprint = Fingerprint::new();
        // Written as the generated code writes it: the borrow picks the trait.
        #[allow(clippy::needless_borrow)]
        (&FingerprintArg("map", &map)).add_to(&mut fingerprint);
        let error = fingerprint.finish().expect_err("tuple keys are not JSON");
        assert_eq!(error.kind(), crate::ErrorKind::Config);
        assert!(
            error
                .message()
                .contains("parameter `map` does not serialize"),
            "{error}"
        );
        assert!(
            error.message().contains("key_fingerprint = <expr>"),
            "{error}"
        );
    }
}

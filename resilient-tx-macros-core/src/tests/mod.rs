//! Unit tests of parsing and checking, on `proc_macro2` streams.
//!
//! They live apart from the modules they test so that each module reads as the code
//! it owns; `tests/expand.rs` snapshots whole expansions.

mod attr;
mod duration;
mod expand;
mod fallback;
mod return_type;
mod signature;

/// Every message in a (combined) error.
fn messages(error: syn::Error) -> Vec<String> {
    error.into_iter().map(|e| e.to_string()).collect()
}

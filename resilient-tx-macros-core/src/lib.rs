//! The expansion of resilient-tx's `#[retriable_tx]` attribute, as an ordinary library
//! on `proc_macro2` streams.
//!
//! The `resilient-tx-macros` proc-macro crate is a shim over [`retriable_tx`]; keeping
//! the work here lets it be unit- and snapshot-tested like any other code. This is not
//! an API of its own: use the attribute through the `resilient-tx` crate.
//!
//! The pipeline is the file list: `attr` parses the options (with `duration` for their
//! durations), `signature` reads the function (with `return_type` for what it returns),
//! `expand` generates the code around the signature `outer` makes, `fallback` stands in
//! for a function with errors, and `errors` collects what went wrong along the way.

#![deny(missing_docs, missing_debug_implementations)]

mod attr;
mod duration;
mod errors;
mod expand;
mod fallback;
mod outer;
mod return_type;
mod signature;

#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

/// Expands `#[retriable_tx(attr)] item`. Never panics: on an error it returns the best
/// expansion it can, followed by a `compile_error!` for each problem.
pub fn retriable_tx(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::retriable_tx(attr, item)
}

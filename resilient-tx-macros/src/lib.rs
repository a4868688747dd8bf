//! The `#[retriable_tx]` attribute of [resilient-tx].
//!
//! Use it through the `resilient_tx` crate, which re-exports it together with the
//! runtime the generated code calls; this crate is not meant to be a dependency of its
//! own. It is a shim: the expansion lives in `resilient-tx-macros-core`, an ordinary
//! library that can be tested like one.
//!
//! [resilient-tx]: https://example.invalid/resilient-tx

#![deny(missing_docs)]

use proc_macro::TokenStream;

#[doc = include_str!("../docs/retriable_tx.md")]
#[proc_macro_attribute]
pub fn retriable_tx(attr: TokenStream, item: TokenStream) -> TokenStream {
    resilient_tx_macros_core::retriable_tx(attr.into(), item.into()).into()
}

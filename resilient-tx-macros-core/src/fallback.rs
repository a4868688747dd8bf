//! What a rejected function becomes: the signature its callers expect over a body that
//! never runs, so that the macro's own error is the only one. Callers keep
//! type-checking against `&Db` instead of failing on a parameter the macro would have
//! replaced.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

use crate::outer;
use crate::signature::Analysis;

/// The stand-in for `func`; the errors that rejected it are emitted beside it.
pub(crate) fn fallback(func: &ItemFn, krate: &syn::Path) -> TokenStream {
    let analysis = Analysis::of(func);
    let db = analysis.db_name();
    let sig = outer::signature(func, &analysis, &db, krate);
    let attrs = func.attrs.iter().map(outer::attr);
    let vis = &func.vis;
    // The transaction's type is still named, so that its `use` is not reported unused.
    let tx_types = analysis
        .params
        .iter()
        .filter(|param| param.takes_tx())
        .map(|param| param.ty());
    quote! {
        #(#attrs)*
        #[allow(unused_variables)]
        #vis #sig {
            let _: ::core::marker::PhantomData<fn(#(#tx_types),*)>;
            ::core::unimplemented!()
        }
    }
}

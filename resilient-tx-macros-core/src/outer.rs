//! The signature callers see: the user's, with `&Db` where the transaction was. It is
//! made for a function with errors too, so that its callers still type-check.

use proc_macro2::{Ident, TokenStream};
use quote::quote;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Attribute, FnArg, ItemFn, Signature};

use crate::signature::{Analysis, Param, PassBy};

/// The caller-facing signature. For a function the macro rejected it is the nearest
/// one that makes sense: `async`, without `const`, an ABI or `...`, and one `&Db` in
/// place of the first parameter that takes a transaction, the right way or not (first,
/// when none does).
pub(crate) fn signature(
    func: &ItemFn,
    analysis: &Analysis,
    db: &Ident,
    krate: &syn::Path,
) -> Signature {
    let mut sig = func.sig.clone();
    sig.asyncness = Some(Default::default());
    sig.constness = None;
    sig.abi = None;
    sig.variadic = None;

    let db_param: FnArg = syn::parse_quote!(#db: &#krate::Db);
    let tx = analysis
        .params
        .iter()
        .position(|param| param.pass == PassBy::Tx)
        .or_else(|| analysis.params.iter().position(Param::takes_tx));
    let mut inputs = Punctuated::new();
    let mut params = analysis.params.iter().enumerate();
    for input in &func.sig.inputs {
        match input {
            FnArg::Receiver(_) => inputs.push(input.clone()),
            FnArg::Typed(_) => {
                let Some((index, param)) = params.next() else {
                    continue;
                };
                if tx.is_none() && index == 0 {
                    inputs.push(db_param.clone());
                }
                if Some(index) == tx {
                    inputs.push(db_param.clone());
                } else if param.pass != PassBy::Tx {
                    inputs.push(outer_input(param));
                }
            }
        }
    }
    if tx.is_none() && analysis.params.is_empty() {
        inputs.push(db_param);
    }
    sig.inputs = inputs;
    sig
}

/// A parameter other than the transaction, under a plain name (patterns are
/// destructured per attempt, not here).
fn outer_input(param: &Param) -> FnArg {
    let mut arg = param.arg.clone();
    let name = &param.name;
    arg.pat = Box::new(syn::parse_quote!(#name));
    FnArg::Typed(arg)
}

/// Attributes of the caller-facing function: all of them, with `expect` relaxed to
/// `allow` (see [`lint_attr`]).
pub(crate) fn attr(attr: &Attribute) -> TokenStream {
    lint_attr(attr).unwrap_or_else(|| quote!(#attr))
}

/// Lint attributes also apply to the inner `fn`, where the body's code now lives.
/// `#[expect]` becomes `#[allow]`: a lint fires in one of the two functions only, and
/// the other would report the expectation as unfulfilled.
pub(crate) fn lint_attr(attr: &Attribute) -> Option<TokenStream> {
    let path = attr.path();
    if path.is_ident("expect") {
        let mut allow = attr.clone();
        if let syn::Meta::List(list) = &mut allow.meta {
            list.path = syn::parse_quote_spanned!(path.span()=> allow);
        }
        return Some(quote!(#allow));
    }
    ["allow", "warn", "deny", "forbid"]
        .iter()
        .any(|lint| path.is_ident(lint))
        .then(|| quote!(#attr))
}

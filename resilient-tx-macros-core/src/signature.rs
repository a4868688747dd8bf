//! Reads the user's function: which parameter is the transaction, how every other
//! parameter reaches each attempt, and whether the function is one the macro can wrap.

use std::collections::BTreeSet;

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident};
use syn::{Expr, FnArg, ItemFn, Pat, ReturnType, Type};

use crate::errors::Errors;
use crate::return_type::{self, Output, WHAT_WORKS};

/// The user's function, understood.
pub(crate) struct Analysis {
    /// The parameters after the receiver, in order.
    pub(crate) params: Vec<Param>,
    /// `self` is `&mut self`: the attempt's async block must borrow, not move, `self`.
    pub(crate) mut_self: bool,
    /// The body is run as an async block in the function itself instead of an inner
    /// `fn`, because a nested `fn` cannot name `self` or `Self`.
    pub(crate) in_place: bool,
    /// The return type, checked: where an error about its error type should point.
    pub(crate) output: Output,
    /// Names the caller-facing signature binds, for checking `idempotency_key = name`.
    names: BTreeSet<String>,
    /// Names bound only inside destructuring patterns.
    pattern_names: BTreeSet<String>,
}

/// How a parameter is handed to each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassBy {
    /// The `&mut Tx` parameter; the caller passes `&Db` instead.
    Tx,
    /// `&T`: the same reference every attempt.
    Shared,
    /// `&mut T`: reborrowed for every attempt.
    Unique,
    /// By value: cloned for every attempt.
    Value,
}

/// One parameter after the receiver.
pub(crate) struct Param {
    /// The parameter as written; the inner `fn` takes it unchanged.
    pub(crate) arg: syn::PatType,
    /// How each attempt gets it.
    pub(crate) pass: PassBy,
    /// The name it has in the generated, caller-facing signature.
    pub(crate) name: Ident,
}

impl Param {
    /// The pattern as written.
    pub(crate) fn pat(&self) -> &Pat {
        &self.arg.pat
    }

    /// The type as written.
    pub(crate) fn ty(&self) -> &Type {
        &self.arg.ty
    }

    /// The parameter is a transaction, taken the right way or not (`&mut Tx`, `&Tx`,
    /// `Tx`): the caller passes `&Db` in its place.
    pub(crate) fn takes_tx(&self) -> bool {
        match strip(self.ty()) {
            Type::Reference(r) => is_tx(&r.elem),
            ty => is_tx(ty),
        }
    }

    /// The pattern is a plain name (`x` or `mut x`) that the outer signature can use.
    pub(crate) fn is_plain(&self) -> bool {
        plain_name(&self.arg.pat).is_some()
    }
}

/// Checks the function and sorts its parameters. All problems are reported together.
pub(crate) fn analyze(item: &ItemFn) -> syn::Result<Analysis> {
    let sig = &item.sig;
    let mut analysis = Analysis::of(item);
    let mut errors = Errors::default();

    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token.span,
            "`#[retriable_tx]` needs an `async fn`: write `async fn` (the generated function awaits the database)",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.on(constness, "a `#[retriable_tx]` function cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.on(unsafety, "a `#[retriable_tx]` function cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.on(
            abi,
            "a `#[retriable_tx]` function cannot have an `extern` ABI",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.on(variadic, "a `#[retriable_tx]` function cannot be variadic");
    }
    if let ReturnType::Default = sig.output {
        errors.on(
            signature_head(item),
            format!(
                "a `#[retriable_tx]` function returns a `Result`: write the return type, e.g. `-> Result<i64, TxError>`. These work: {WHAT_WORKS}"
            ),
        );
    }
    if let Some(output) = errors.ok(return_type::check(&sig.output)) {
        analysis.output = output;
    }

    if let Some(r) = receiver(item) {
        if !matches!(strip(&r.ty), Type::Reference(_)) {
            errors.on(
                r,
                "a `#[retriable_tx]` method must take `&self` or `&mut self`: the body may run more than once, so it cannot take `self` by value",
            );
        }
    }

    let mut txs = analysis.params.iter().filter(|p| p.pass == PassBy::Tx);
    match txs.next() {
        None => errors.push(missing_tx(item, &analysis.params)),
        Some(_) => {
            for extra in txs {
                errors.on(
                    &extra.arg,
                    "a `#[retriable_tx]` function takes exactly one `&mut Tx<'_>` parameter; the generated function takes one `&Db` in its place",
                );
            }
        }
    }
    errors.finish(analysis)
}

/// The `self` parameter, if any.
fn receiver(item: &ItemFn) -> Option<&syn::Receiver> {
    item.sig.inputs.iter().find_map(|input| match input {
        FnArg::Receiver(r) => Some(r),
        FnArg::Typed(_) => None,
    })
}

impl Analysis {
    /// The function's parameters, sorted, whatever else is wrong with it.
    pub(crate) fn of(item: &ItemFn) -> Analysis {
        let sig = &item.sig;
        let receiver = receiver(item);
        let params: Vec<Param> = sig
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(index, input)| match input {
                FnArg::Receiver(_) => None,
                FnArg::Typed(arg) => Some(Param {
                    pass: pass_by(&arg.ty),
                    name: plain_name(&arg.pat)
                        .cloned()
                        .unwrap_or_else(|| format_ident!("__rtx_arg{}", index)),
                    arg: arg.clone(),
                }),
            })
            .collect();

        let mut names = BTreeSet::new();
        let mut pattern_names = BTreeSet::new();
        for param in &params {
            if param.is_plain() {
                names.insert(param.name.to_string());
            } else {
                collect_idents(param.pat().to_token_stream(), &mut pattern_names);
            }
        }
        if receiver.is_some() {
            names.insert("self".to_owned());
        }

        let mentions_self = contains_self_type(sig.to_token_stream())
            || contains_self_type(item.block.to_token_stream());
        Analysis {
            // syn gives `&mut self` the type `&mut Self`, like `self: &mut Self`.
            mut_self: receiver.is_some_and(
                |r| matches!(strip(&r.ty), Type::Reference(ty) if ty.mutability.is_some()),
            ),
            in_place: receiver.is_some() || mentions_self,
            output: Output {
                blame: Span::call_site(),
                tx_error: false,
            },
            params,
            names,
            pattern_names,
        }
    }

    /// The name of the `&Db` parameter: `db`, unless the user already has a `db`.
    pub(crate) fn db_name(&self) -> Ident {
        if self.names.contains("db") || self.pattern_names.contains("db") {
            format_ident!("__rtx_db")
        } else {
            format_ident!("db")
        }
    }

    /// The transaction parameter.
    pub(crate) fn tx(&self) -> Option<&Param> {
        self.params.iter().find(|p| p.pass == PassBy::Tx)
    }

    /// `idempotency_key = name` must name a parameter the key can be computed from.
    pub(crate) fn check_key(&self, key: &Expr, fn_name: &Ident) -> syn::Result<()> {
        let Expr::Path(path) = key else {
            return Ok(());
        };
        let Some(ident) = path.path.get_ident().filter(|_| path.qself.is_none()) else {
            return Ok(());
        };
        let name = ident.to_string();
        let message = if self.tx().is_some_and(|tx| tx.name == name) {
            format!(
                "`{name}` is the transaction, which does not exist yet when the key is computed; the key must come from the other parameters"
            )
        } else if self.names.contains(&name) {
            return Ok(());
        } else if self.pattern_names.contains(&name) {
            format!(
                "`{name}` is bound inside a pattern, but the key is computed before the body runs; bind the parameter to a plain name and use that"
            )
        } else {
            format!(
                "`{name}` is not a parameter of `{fn_name}`; the idempotency key is computed from the function's parameters (for an item in scope, write a path such as `self::{name}`)"
            )
        };
        Err(syn::Error::new(ident.span(), message))
    }
}

/// How a parameter of this type reaches each attempt.
fn pass_by(ty: &Type) -> PassBy {
    match strip(ty) {
        Type::Reference(r) if r.mutability.is_some() && is_tx(&r.elem) => PassBy::Tx,
        Type::Reference(r) if r.mutability.is_some() => PassBy::Unique,
        Type::Reference(_) => PassBy::Shared,
        _ => PassBy::Value,
    }
}

/// The type names `Tx` (by its last path segment, so `Tx<'_>`, `resilient_tx::Tx<'a>`).
fn is_tx(ty: &Type) -> bool {
    match strip(ty) {
        Type::Path(path) => {
            path.qself.is_none() && path.path.segments.last().is_some_and(|s| s.ident == "Tx")
        }
        _ => false,
    }
}

/// Looks through invisible groups (from `macro_rules!`) and parentheses.
fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => strip(&group.elem),
        Type::Paren(paren) => strip(&paren.elem),
        _ => ty,
    }
}

/// `x` or `mut x`: the name the outer signature can reuse.
fn plain_name(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(&p.ident),
        _ => None,
    }
}

/// The error for a function without a `&mut Tx<'_>` parameter, spanned on a `Tx`
/// parameter taken the wrong way if there is one, else on the signature.
fn missing_tx(item: &ItemFn, params: &[Param]) -> syn::Error {
    let wrong_way = params.iter().find(|p| p.takes_tx());
    match wrong_way {
        Some(param) => {
            syn::Error::new_spanned(param.ty(), "the transaction must be taken as `&mut Tx<'_>`")
        }
        None => syn::Error::new_spanned(
            signature_head(item),
            "a `#[retriable_tx]` function needs a transaction parameter: add `tx: &mut Tx<'_>` (callers pass `&Db` in its place)",
        ),
    }
}

/// `fn name(...)`: the part of the signature an error about the whole of it points at.
fn signature_head(item: &ItemFn) -> TokenStream {
    let sig = &item.sig;
    let mut tokens = TokenStream::new();
    sig.fn_token.to_tokens(&mut tokens);
    sig.ident.to_tokens(&mut tokens);
    sig.paren_token
        .surround(&mut tokens, |tokens| sig.inputs.to_tokens(tokens));
    tokens
}

/// Whether `Self` appears anywhere, macro arguments included.
fn contains_self_type(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => contains_self_type(group.stream()),
        _ => false,
    })
}

/// Every identifier in a pattern (over-approximates bindings; only used in messages).
fn collect_idents(tokens: TokenStream, into: &mut BTreeSet<String>) {
    for token in tokens {
        match token {
            TokenTree::Ident(ident) => {
                into.insert(ident.to_string());
            }
            TokenTree::Group(group) => collect_idents(group.stream(), into),
            _ => {}
        }
    }
}

//! The return type. What is certainly not `Result<T, E>` with an `E` that can carry a
//! `TxError` is rejected here, by its syntax: a primitive, a `String`, a reference, a
//! tuple. Any other type may be an alias or a user's error type, so it is left to the
//! trait bound, and this module finds the token its error should point at.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{GenericArgument, PathArguments, ReturnType, Type, TypePath};

/// What the error messages offer instead of a type that cannot work.
pub(crate) const WHAT_WORKS: &str = "`Result<T, TxError>`, `Result<T, E>` with an error type of your own that implements `From<TxError>` and `AsTxError`, `Result<T, Box<dyn std::error::Error + Send + Sync>>`, or `anyhow::Result<T>` (with resilient-tx's `anyhow` feature)";

/// Types of the standard library's prelude that are certainly not a `Result`. Nor can
/// they be the error type, `Box<dyn Error + Send + Sync>` aside: only the runtime could
/// implement `AsTxError` for them, and it does so for that box alone.
const NOT_RESULT: [&str; 4] = ["String", "Option", "Vec", "Box"];

/// Primitive types.
const PRIMITIVES: [&str; 17] = [
    "bool", "char", "str", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64",
    "u128", "usize", "f32", "f64",
];

/// A return type that may work; whether it does is up to the trait bound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// The token a bound on the error type is reported at: the error type's name in
    /// `Result<T, E>`, else the name of the whole type (`anyhow::Result<T>`).
    pub(crate) blame: Span,
    /// The error type is written `TxError`, which has every trait the runtime needs.
    pub(crate) tx_error: bool,
}

/// Checks a function's return type.
pub(crate) fn check(output: &ReturnType) -> syn::Result<Output> {
    let ty = match output {
        ReturnType::Type(_, ty) => strip(ty),
        // `signature::analyze` reports a missing return type, spanned on the signature.
        ReturnType::Default => {
            return Ok(Output {
                blame: Span::call_site(),
                tx_error: false,
            });
        }
    };
    if let Some(error) = result_error_type(ty) {
        let error = strip(error);
        if certainly_not_an_error(error) {
            return Err(syn::Error::new_spanned(
                error,
                format!(
                    "`{shown}` cannot be the error type of a `#[retriable_tx]` function: the runtime must find a `TxError` in the error to retry conflicts and lost connections, and a `{shown}` cannot hold one. These work: {WHAT_WORKS}; a boxed error is made from a message with `Err(\"…\".into())`",
                    shown = display(error)
                ),
            ));
        }
        return Ok(Output {
            blame: name_span(error),
            tx_error: last_ident(error).is_some_and(|ident| ident == "TxError"),
        });
    }
    if certainly_not_a_result(ty) {
        let shown = display(ty);
        let instead = match shown.contains(' ') {
            true => "`-> Result<T, TxError>`".to_owned(),
            false => format!("`-> Result<{shown}, TxError>`"),
        };
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "a `#[retriable_tx]` function returns a `Result`, not `{shown}`, since every call can fail (the database may be down): write {instead}. These work: {WHAT_WORKS}"
            ),
        ));
    }
    Ok(Output {
        blame: name_span(ty),
        tx_error: false,
    })
}

/// `E` of `Result<T, E>` (any path ending in `Result` with two type arguments).
fn result_error_type(ty: &Type) -> Option<&Type> {
    let Type::Path(TypePath { qself: None, path }) = ty else {
        return None;
    };
    let last = path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(_), Some(error), None) => Some(error),
        _ => None,
    }
}

/// A type that is not a `Result` whatever is in scope.
fn certainly_not_a_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => is_std(path, &PRIMITIVES) || is_std(path, &NOT_RESULT),
        // A macro may expand to anything; `Group` and `Paren` were looked through.
        Type::Macro(_) | Type::Verbatim(_) => false,
        _ => true,
    }
}

/// A type that cannot be the error type: nothing but the runtime could make it carry
/// a `TxError`, and the runtime does so only for `Box<dyn Error + Send + Sync>`.
fn certainly_not_an_error(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => {
            is_std(path, &PRIMITIVES) || (is_std(path, &NOT_RESULT) && !is_std(path, &["Box"]))
        }
        Type::Macro(_) | Type::Verbatim(_) => false,
        _ => true,
    }
}

/// The path names one of `names` as the prelude or the standard library does: a bare
/// name, or a path from `std`, `core` or `alloc`.
fn is_std(path: &TypePath, names: &[&str]) -> bool {
    let segments = &path.path.segments;
    let Some(last) = segments.last() else {
        return false;
    };
    let bare = segments.len() == 1 && path.path.leading_colon.is_none();
    let from_std = segments.first().is_some_and(|first| {
        ["std", "core", "alloc"]
            .iter()
            .any(|krate| first.ident == krate)
    });
    path.qself.is_none() && (bare || from_std) && names.iter().any(|name| last.ident == name)
}

/// The last identifier of a path type.
fn last_ident(ty: &Type) -> Option<&proc_macro2::Ident> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|segment| &segment.ident),
        _ => None,
    }
}

/// The span of a type's name (`Error` in `anyhow::Error`): one token, because a span
/// that covers several cannot be made on stable Rust, and a bound's error is shown at
/// one span only if every use of the bound has that very span.
fn name_span(ty: &Type) -> Span {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map_or_else(|| syn::spanned::Spanned::span(path), |s| s.ident.span()),
        Type::Macro(mac) => mac
            .mac
            .path
            .segments
            .last()
            .map_or_else(Span::call_site, |segment| segment.ident.span()),
        _ => syn::spanned::Spanned::span(ty),
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

/// A type as a person writes it (`&'static str`, not `& 'static str`).
fn display(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (spaced, tight) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
}

//! Generates the caller-facing function: the user's signature with `&Db` in place of
//! the transaction, a static `CallOptions`, and a loop that runs one attempt per turn.
//!
//! A free function's body moves, unchanged, into an inner `async fn __rtx_body`.
//! A method's body cannot (a nested `fn` cannot name `self` or `Self`), so it runs as
//! an async block whose output type is pinned by tracing-attributes' "fake return".

use proc_macro2::{Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens as _, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Expr, FnArg, ItemFn, ReturnType};

use crate::attr::Args;
use crate::duration::DurationLit;
use crate::errors::Errors;
use crate::fallback::fallback;
use crate::outer;
use crate::signature::{self, Analysis, Param, PassBy};

/// The whole macro on `proc_macro2` streams. It never panics: on error it returns the
/// best expansion it can plus `compile_error!`s, so IDEs and callers keep working.
pub(crate) fn retriable_tx(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let mut args = match Args::parse(attr) {
        Ok(args) => args,
        Err(invalid) => {
            errors.push(invalid.error);
            Args::with_crate(invalid.krate)
        }
    };
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(error) => {
            // Not a function at all: keep the item as written.
            errors.push(error);
            return with_errors(item, errors);
        }
    };
    let analysis = match signature::analyze(&func) {
        Ok(analysis) => analysis,
        Err(error) => {
            errors.push(error);
            return with_errors(fallback(&func, &args.krate), errors);
        }
    };
    if let Some(key) = &args.idempotency_key {
        if let Err(error) = analysis.check_key(key, &func.sig.ident) {
            errors.push(error);
            args.idempotency_key = None;
        }
    }
    with_errors(generate(&func, &analysis, &args), errors)
}

/// `tokens` followed by a `compile_error!` per error (tokio's `token_stream_with_error`).
fn with_errors(mut tokens: TokenStream, errors: Errors) -> TokenStream {
    if let Some(error) = errors.into_error() {
        tokens.extend(error.into_compile_error());
    }
    tokens
}

/// The generated function, for a signature that passed every check.
fn generate(func: &ItemFn, analysis: &Analysis, args: &Args) -> TokenStream {
    let krate = &args.krate;
    let private = quote!(#krate::__private);
    let db = analysis.db_name();
    // Every use of the error type's bounds is spanned on the error type's name, with
    // the macro's hygiene: the compiler then reports an unsatisfied bound once, there.
    let blame = Span::call_site().located_at(analysis.output.blame);
    let blamed_private = respan(private.clone(), blame);

    let attrs = func.attrs.iter().map(outer::attr);
    let vis = &func.vis;
    let sig = outer::signature(func, analysis, &db, krate);

    let options = options(func, args);
    // `TxError` has the bounds the runtime needs. Any other error type is converted to
    // by a function whose bounds check it, so that a type without them is one error
    // that says what works.
    let convert = match (&func.sig.output, analysis.output.tx_error) {
        (ReturnType::Type(_, ty), false) => {
            let ty = respan(ty.to_token_stream(), blame);
            Some(quote_spanned!(blame=> .map_err(#blamed_private::convert_error::<#ty>)))
        }
        _ => None,
    };
    let with_key = args
        .idempotency_key
        .as_ref()
        .map(|key| keyed_call(key, args, analysis, &private));
    let keyed = args.idempotency_key.is_some();
    let begin = begin(keyed, &private, convert, blame);
    let end = Ident::new(if keyed { "end_keyed" } else { "end" }, blame);
    let end = quote_spanned!(blame=> __rtx_call.#end(__rtx_tx, __rtx_result).await);
    let (inner_fn, attempt) = if analysis.in_place {
        (None, in_place_attempt(func, analysis, &private))
    } else {
        let (inner_fn, attempt) =
            inner_fn_attempt(func, analysis, &private, args.idempotency_key.as_ref());
        (Some(inner_fn), attempt)
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #inner_fn
            #options
            let mut __rtx_call = #private::Call::new(#db, &__RTX_OPTIONS)#with_key;
            loop {
                #begin
                let __rtx_result = #attempt;
                if let ::core::ops::ControlFlow::Break(__rtx_done) = #end {
                    return __rtx_done;
                }
            }
        }
    }
}

/// `tokens` with every token, nested ones too, at `span`: a bound is reported once
/// only where all of its uses have the very same span.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut inner = Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = TokenTree::Group(inner);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// `static __RTX_OPTIONS`: the options given, the rest left to the `Db`'s policy.
fn options(func: &ItemFn, args: &Args) -> TokenStream {
    let private = {
        let krate = &args.krate;
        quote!(#krate::__private)
    };
    let some = |value: TokenStream| quote!(::core::option::Option::Some(#value));
    let duration = |d: &DurationLit| {
        let millis = Literal::u64_unsuffixed(d.millis);
        some(quote!(#private::Duration::from_millis(#millis)))
    };
    let mut fields = Vec::new();
    if let Some(retries) = args.retries {
        let retries = Literal::u32_unsuffixed(retries);
        fields.push(("retries", some(quote!(#retries))));
    }
    if let Some(isolation) = args.isolation {
        let variant = Ident::new(isolation.variant(), Span::call_site());
        fields.push(("isolation", some(quote!(#private::Isolation::#variant))));
    }
    if args.read_only {
        fields.push(("read_only", quote!(true)));
    }
    for (name, value) in [
        ("timeout", &args.timeout),
        ("deadline", &args.deadline),
        ("backoff_base", &args.backoff_base),
        ("backoff_max", &args.backoff_max),
        ("replicated", &args.replicated),
    ] {
        if let Some(value) = value {
            fields.push((name, duration(value)));
        }
    }
    if args.idempotent {
        fields.push(("idempotent", quote!(true)));
    }

    let name = format!("::{}", func.sig.ident);
    let named = quote! {
        #private::CallOptions::named(::core::concat!(::core::module_path!(), #name))
    };
    let value = if fields.is_empty() {
        named
    } else {
        let fields = fields.into_iter().map(|(field, value)| {
            let field = Ident::new(field, Span::call_site());
            quote!(#field: #value,)
        });
        quote!(#private::CallOptions { #(#fields)* ..#named })
    };
    quote! {
        static __RTX_OPTIONS: #private::CallOptions = #value;
    }
}

/// What a keyed call adds to its `Call`: the key, its scope where the function's path
/// is not enough, and the fingerprint of the arguments.
fn keyed_call(key: &Expr, args: &Args, analysis: &Analysis, private: &TokenStream) -> TokenStream {
    let borrowed = borrow(key);
    // A method's path is its module's and its name: two types of one module would
    // share keys. Generated code can name the impl's type even though the attribute
    // cannot see the impl. A function that never mentions `Self` may be free or
    // associated; it keeps its module path unless `key_scope` says otherwise.
    let scope = match &args.key_scope {
        Some(scope) => quote!(.key_scope(#scope)),
        None if analysis.in_place => quote!(.key_scope_of::<Self>()),
        None => TokenStream::new(),
    };
    let fingerprint = fingerprint(key, args, analysis, private);
    quote!(.with_idempotency_key(#borrowed) #scope #fingerprint)
}

/// `.key_fingerprint(…)`: `key_fingerprint`'s value, or else every parameter but the
/// transaction and the key itself, each counted only if its type is `Serialize`
/// (autoref specialization: `SerializedArg` applies to the value, `UnserializedArg`
/// only to a reference to it). Nothing when there is no such parameter.
fn fingerprint(key: &Expr, args: &Args, analysis: &Analysis, private: &TokenStream) -> TokenStream {
    if let Some(value) = &args.key_fingerprint {
        let value = borrow(value);
        return quote!(.key_fingerprint(#private::Fingerprint::of(#value)));
    }
    let key_param = match key {
        Expr::Path(path) if path.qself.is_none() => path.path.get_ident(),
        _ => None,
    };
    let adds: Vec<TokenStream> = analysis
        .params
        .iter()
        .filter(|param| param.pass != PassBy::Tx && Some(&param.name) != key_param)
        .map(|param| {
            let name = &param.name;
            let label = Literal::string(&name.to_string());
            quote! {
                (&#private::FingerprintArg(#label, &#name)).add_to(&mut __rtx_fingerprint);
            }
        })
        .collect();
    if adds.is_empty() {
        return TokenStream::new();
    }
    quote! {
        .key_fingerprint({
            #[allow(unused_imports)]
            use #private::{SerializedArg as _, UnserializedArg as _};
            let mut __rtx_fingerprint = #private::Fingerprint::new();
            #(#adds)*
            __rtx_fingerprint
        })
    }
}

/// `&key`, parenthesised unless the key is a single term. Spanned on the key, so a key
/// that is not `Display` (or a fingerprint that is not `Serialize`) is reported there.
fn borrow(key: &Expr) -> TokenStream {
    let span = key.span();
    match key {
        Expr::Path(_)
        | Expr::Field(_)
        | Expr::MethodCall(_)
        | Expr::Call(_)
        | Expr::Macro(_)
        | Expr::Lit(_)
        | Expr::Paren(_)
        | Expr::Tuple(_)
        | Expr::Reference(_) => quote_spanned!(span=> &#key),
        _ => quote_spanned!(span=> &(#key)),
    }
}

/// The statement that begins an attempt's transaction: with an idempotency key, a
/// result stored by an earlier call is returned instead.
fn begin(
    keyed: bool,
    private: &TokenStream,
    convert: Option<TokenStream>,
    blame: Span,
) -> TokenStream {
    if keyed {
        let begin = quote_spanned!(blame=> __rtx_call.begin_keyed().await #convert ?);
        quote! {
            let mut __rtx_tx = match #begin {
                #private::Begin::Run(__rtx_tx) => __rtx_tx,
                #private::Begin::Stored(__rtx_stored) => {
                    return ::core::result::Result::Ok(__rtx_stored);
                }
            };
        }
    } else {
        let begin = quote_spanned!(blame=> __rtx_call.begin().await #convert ?);
        quote! {
            let mut __rtx_tx = #begin;
        }
    }
}

/// For a free function: the inner `fn` holding the body verbatim, and the expression
/// that runs one attempt of it.
fn inner_fn_attempt(
    func: &ItemFn,
    analysis: &Analysis,
    private: &TokenStream,
    key: Option<&Expr>,
) -> (TokenStream, TokenStream) {
    let lints = func.attrs.iter().filter_map(outer::lint_attr);
    let mut sig = func.sig.clone();
    sig.ident = Ident::new("__rtx_body", Span::call_site());
    // A parameter that only serves as the idempotency key is used by the outer
    // function; the body need not mention it.
    if let Some(Expr::Path(path)) = key {
        if let Some(key) = path.path.get_ident() {
            for input in sig.inputs.iter_mut() {
                if let FnArg::Typed(typed) = input {
                    if matches!(&*typed.pat, syn::Pat::Ident(p) if p.ident == *key) {
                        typed
                            .attrs
                            .push(syn::parse_quote!(#[allow(unused_variables)]));
                    }
                }
            }
        }
    }
    let block = &func.block;

    let type_args: Vec<TokenStream> = func
        .sig
        .generics
        .params
        .iter()
        .filter_map(|param| match param {
            syn::GenericParam::Type(t) => Some(t.ident.to_token_stream()),
            syn::GenericParam::Const(c) => Some(c.ident.to_token_stream()),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    let turbofish = (!type_args.is_empty()).then(|| quote!(::<#(#type_args),*>));
    let call_args = analysis.params.iter().map(|param| {
        let name = &param.name;
        match param.pass {
            PassBy::Tx => quote!(&mut __rtx_tx),
            PassBy::Shared => quote!(#name),
            PassBy::Unique => quote!(&mut *#name),
            PassBy::Value => attempt_clone(param, private),
        }
    });

    let inner_fn = quote! {
        #(#lints)*
        #sig #block
    };
    let attempt = quote! {
        __rtx_call.run(__rtx_body #turbofish (#(#call_args),*)).await
    };
    (inner_fn, attempt)
}

/// For a method (or anything naming `Self`): a block that binds each parameter as the
/// body expects it and runs the body as an async block.
fn in_place_attempt(func: &ItemFn, analysis: &Analysis, private: &TokenStream) -> TokenStream {
    let bindings = analysis.params.iter().filter_map(|param| {
        let (pat, name) = (param.pat(), &param.name);
        match param.pass {
            PassBy::Tx => Some(quote!(let #pat = &mut __rtx_tx;)),
            PassBy::Shared if param.is_plain() => None,
            PassBy::Shared => Some(quote!(let #pat = #name;)),
            PassBy::Unique => Some(quote!(let #pat = &mut *#name;)),
            PassBy::Value => {
                let clone = attempt_clone(param, private);
                Some(quote!(let #pat = #clone;))
            }
        }
    });
    let output = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.as_ref(),
        // `signature::analyze` rejects a missing return type.
        ReturnType::Default => return quote!(()),
    };
    let block = &func.block;
    // `&mut self` cannot be moved into the block: the next attempt needs it again.
    let capture = (!analysis.mut_self).then(|| quote!(move));
    quote! {
        {
            #(#bindings)*
            __rtx_call.run(async #capture {
                #[allow(
                    unknown_lints,
                    unreachable_code,
                    clippy::diverging_sub_expression,
                    clippy::empty_loop,
                    clippy::let_unit_value,
                    clippy::let_with_type_underscore,
                    clippy::needless_return,
                    clippy::unreachable
                )]
                if false {
                    let __rtx_fake: #output = loop {};
                    return __rtx_fake;
                }
                #block
            })
            .await
        }
    }
}

/// A fresh copy of a by-value parameter for one attempt, spanned on the parameter's
/// type so a non-`Clone` type is reported there.
fn attempt_clone(param: &Param, private: &TokenStream) -> TokenStream {
    let name = &param.name;
    quote_spanned! {param.ty().span()=>
        #private::AttemptClone::attempt_clone(&#name)
    }
}

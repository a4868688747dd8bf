//! The options inside `#[retriable_tx(...)]`, parsed into a typed [`Args`].
//!
//! Parsing runs in two phases. [`RawArgs`] reads the options one by one, checking only
//! what each one says on its own (set at most once, a value of the right shape) and
//! keeps going after an error so a build shows every mistake at once. [`RawArgs::build`]
//! then checks the rules that involve several options together.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser as _;
use syn::spanned::Spanned as _;
use syn::{Expr, Lit, LitStr, Token};

use crate::duration::{self, DurationLit};
use crate::errors::Errors;

/// Every option, in the order the documentation lists them.
pub(crate) const KEYS: [&str; 13] = [
    "retries",
    "isolation",
    "read_only",
    "timeout",
    "deadline",
    "backoff_base",
    "backoff_max",
    "idempotency_key",
    "key_scope",
    "key_fingerprint",
    "idempotent",
    "replicated",
    "crate",
];

/// The isolation levels, as written in the attribute and as the runtime's variant.
const ISOLATIONS: [(&str, Isolation); 3] = [
    ("read_committed", Isolation::ReadCommitted),
    ("repeatable_read", Isolation::RepeatableRead),
    ("serializable", Isolation::Serializable),
];

/// `isolation = ...`: the level `BEGIN` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// `read_committed`
    ReadCommitted,
    /// `repeatable_read`
    RepeatableRead,
    /// `serializable`
    Serializable,
}

impl Isolation {
    /// The name of the runtime's `Isolation` variant.
    pub(crate) fn variant(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "ReadCommitted",
            Isolation::RepeatableRead => "RepeatableRead",
            Isolation::Serializable => "Serializable",
        }
    }
}

/// The options of one `#[retriable_tx]`, checked; `None`/`false` means "not given".
#[derive(Debug, Clone)]
pub(crate) struct Args {
    /// `crate = "..."`: the path generated code uses for the facade.
    pub(crate) krate: syn::Path,
    /// `retries = N`
    pub(crate) retries: Option<u32>,
    /// `isolation = ...`
    pub(crate) isolation: Option<Isolation>,
    /// `read_only`
    pub(crate) read_only: bool,
    /// `timeout = "..."`
    pub(crate) timeout: Option<DurationLit>,
    /// `deadline = "..."`
    pub(crate) deadline: Option<DurationLit>,
    /// `backoff_base = "..."`
    pub(crate) backoff_base: Option<DurationLit>,
    /// `backoff_max = "..."`
    pub(crate) backoff_max: Option<DurationLit>,
    /// `idempotency_key = <expr>`
    pub(crate) idempotency_key: Option<Expr>,
    /// `key_scope = "..."`: where keys are unique, in place of the function's path.
    pub(crate) key_scope: Option<LitStr>,
    /// `key_fingerprint = <expr>`: what identifies a request, in place of the
    /// parameters.
    pub(crate) key_fingerprint: Option<Expr>,
    /// `idempotent`
    pub(crate) idempotent: bool,
    /// `replicated = "..."`
    pub(crate) replicated: Option<DurationLit>,
}

/// Options that did not pass.
pub(crate) struct InvalidArgs {
    /// Every problem found.
    pub(crate) error: syn::Error,
    /// `crate = ...` if it was valid: the function is still generated, with no options,
    /// so callers keep type-checking while the user fixes the attribute.
    pub(crate) krate: syn::Path,
}

impl Args {
    /// No options: every setting comes from the `Db`'s policy.
    pub(crate) fn with_crate(krate: syn::Path) -> Args {
        Args {
            krate,
            retries: None,
            isolation: None,
            read_only: false,
            timeout: None,
            deadline: None,
            backoff_base: None,
            backoff_max: None,
            idempotency_key: None,
            key_scope: None,
            key_fingerprint: None,
            idempotent: false,
            replicated: None,
        }
    }

    /// Parses the tokens between the attribute's parentheses.
    pub(crate) fn parse(tokens: TokenStream) -> Result<Args, InvalidArgs> {
        let mut raw = RawArgs::default();
        let syntax = syn::meta::parser(|meta| raw.option(meta)).parse2(tokens);
        if let Err(error) = syntax {
            raw.errors.push(error);
        }
        raw.build()
    }
}

/// The default `crate = ...`.
pub(crate) fn default_crate() -> syn::Path {
    syn::parse_quote!(::resilient_tx)
}

/// Phase one: each option as written, checked on its own.
#[derive(Default)]
struct RawArgs {
    /// Where each option was first given, to reject repeats and to span combination errors.
    keys: HashMap<&'static str, Span>,
    krate: Option<syn::Path>,
    retries: Option<u32>,
    isolation: Option<Isolation>,
    timeout: Option<DurationLit>,
    deadline: Option<DurationLit>,
    backoff_base: Option<DurationLit>,
    backoff_max: Option<DurationLit>,
    idempotency_key: Option<Expr>,
    key_scope: Option<LitStr>,
    key_fingerprint: Option<Expr>,
    replicated: Option<DurationLit>,
    errors: Errors,
}

impl RawArgs {
    /// Reads one option. Only a malformed attribute stops parsing (`Err`); a wrong value
    /// is recorded and parsing goes on.
    fn option(&mut self, meta: ParseNestedMeta<'_>) -> syn::Result<()> {
        let path = &meta.path;
        let Some(key) = path
            .get_ident()
            .and_then(|ident| KEYS.into_iter().find(|key| ident == key))
        else {
            self.errors.on(path, unknown_key_message(path));
            return skip_value(&meta);
        };
        if self.keys.contains_key(key) {
            self.errors.on(
                path,
                format!("`{key}` is set twice; each option may be given at most once"),
            );
            return skip_value(&meta);
        }
        self.keys.insert(key, path.span());

        match key {
            "read_only" | "idempotent" => {
                if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                    self.errors.on(
                        path,
                        format!("`{key}` is a flag and takes no value: write just `{key}`"),
                    );
                    return skip_value(&meta);
                }
            }
            _ => {
                let Some(value) = self.value(&meta, key)? else {
                    return Ok(());
                };
                self.set(key, value);
            }
        }
        Ok(())
    }

    /// The expression after `=`, or `None` (with an error) when the `=` is missing.
    fn value(&mut self, meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<Option<Expr>> {
        if meta.input.peek(Token![=]) {
            return meta.value()?.parse().map(Some);
        }
        self.errors.on(
            &meta.path,
            format!("`{key}` needs a value: write `{key} = {}`", example(key)),
        );
        skip_value(meta)?;
        Ok(None)
    }

    /// Checks the value of a `key = value` option and stores it.
    fn set(&mut self, key: &str, value: Expr) {
        let errors = &mut self.errors;
        match key {
            "retries" => self.retries = errors.ok(retries(&value)),
            "isolation" => self.isolation = errors.ok(isolation(&value)),
            "timeout" => self.timeout = errors.ok(positive_duration(key, &value)),
            "deadline" => self.deadline = errors.ok(positive_duration(key, &value)),
            "backoff_base" => self.backoff_base = errors.ok(duration(key, &value)),
            "backoff_max" => self.backoff_max = errors.ok(duration(key, &value)),
            "idempotency_key" => self.idempotency_key = Some(value),
            "key_scope" => self.key_scope = errors.ok(key_scope(&value)),
            "key_fingerprint" => self.key_fingerprint = Some(value),
            "replicated" => self.replicated = errors.ok(positive_duration(key, &value)),
            "crate" => self.krate = errors.ok(crate_path(&value)),
            // Flags carry no value; `option` handles them.
            _ => {}
        }
    }

    /// Phase two: rules between options.
    fn build(mut self) -> Result<Args, InvalidArgs> {
        let span = |key: &str| self.keys.get(key).copied();
        let read_only = span("read_only");
        let idempotent = span("idempotent");
        let idempotency_key = span("idempotency_key");
        let mut errors = std::mem::take(&mut self.errors);

        if let (Some(idempotent), Some(_)) = (idempotent, read_only) {
            errors.at(
                idempotent,
                "`idempotent` has no effect with `read_only`: a read-only transaction writes nothing, so re-running it is always safe; remove `idempotent`",
            );
        }
        if let (Some(idempotent), Some(_)) = (idempotent, idempotency_key) {
            errors.at(
                idempotent,
                "`idempotent` cannot be combined with `idempotency_key`: an idempotency key already makes retries safe; remove `idempotent`",
            );
        }
        if let (Some(key), Some(_)) = (idempotency_key, read_only) {
            errors.at(
                key,
                "`idempotency_key` cannot be combined with `read_only`: the key's result is stored by the transaction itself, and a read-only transaction has nothing to store",
            );
        }
        if let (Some(replicated), Some(_)) = (span("replicated"), read_only) {
            errors.at(
                replicated,
                "`replicated` has no effect with `read_only`: a read-only transaction commits nothing for a standby to receive; remove `replicated`",
            );
        }
        if idempotency_key.is_none() {
            for key in ["key_scope", "key_fingerprint"] {
                if let Some(span) = span(key) {
                    errors.at(
                        span,
                        format!(
                            "`{key}` belongs to an idempotency key: add `idempotency_key = <expr>`, or remove `{key}`"
                        ),
                    );
                }
            }
        }
        if let (Some(base), Some(max)) = (&self.backoff_base, &self.backoff_max) {
            if base.millis > max.millis {
                errors.at(
                    base.lit.span(),
                    format!(
                        "`backoff_base` ({}) is larger than `backoff_max` ({}); the first backoff step must not exceed the largest",
                        base.lit.value(),
                        max.lit.value()
                    ),
                );
            }
        }

        let krate = self.krate.unwrap_or_else(default_crate);
        match errors.into_error() {
            Some(error) => Err(InvalidArgs { error, krate }),
            None => Ok(Args {
                krate,
                retries: self.retries,
                isolation: self.isolation,
                read_only: read_only.is_some(),
                timeout: self.timeout,
                deadline: self.deadline,
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
                idempotency_key: self.idempotency_key,
                key_scope: self.key_scope,
                key_fingerprint: self.key_fingerprint,
                idempotent: idempotent.is_some(),
                replicated: self.replicated,
            }),
        }
    }
}

/// Consumes whatever follows a key that was rejected, so parsing can go on.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

/// A value to show in "write `key = ...`" hints.
fn example(key: &str) -> &'static str {
    match key {
        "retries" => "3",
        "isolation" => "serializable",
        "timeout" => "\"2s\"",
        "deadline" => "\"10s\"",
        "backoff_base" => "\"20ms\"",
        "backoff_max" => "\"2s\"",
        "idempotency_key" => "request_id",
        "key_scope" => "\"billing::refunds::create\"",
        "key_fingerprint" => "(&order.items, order.total)",
        "replicated" => "\"2s\"",
        "crate" => "\"::resilient_tx\"",
        _ => "...",
    }
}

/// "unknown option", the closest valid key when one is close, and every valid key.
fn unknown_key_message(path: &syn::Path) -> String {
    let written = quote::quote!(#path).to_string().replace(' ', "");
    let valid = KEYS.map(|key| format!("`{key}`")).join(", ");
    let closest = KEYS
        .into_iter()
        .map(|key| (edit_distance(&written, key), key))
        .filter(|&(distance, key)| distance <= 3 || key.contains(written.as_str()))
        .min();
    match closest {
        Some((_, key)) if !written.is_empty() => {
            format!("unknown option `{written}`, did you mean `{key}`? The options are {valid}")
        }
        _ => format!("unknown option `{written}`; the options are {valid}"),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// `retries = N`: a whole number that fits in `u32`.
fn retries(value: &Expr) -> syn::Result<u32> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(int), ..
        }) => int.base10_parse::<u32>().map_err(|_| {
            syn::Error::new(
                int.span(),
                format!("`retries` is too large; at most {} is allowed", u32::MAX),
            )
        }),
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => Err(syn::Error::new_spanned(
            value,
            "`retries` cannot be negative; write `retries = 0` for a single attempt",
        )),
        _ => Err(syn::Error::new_spanned(
            value,
            "`retries` expects a whole number (retries after the first attempt), e.g. `retries = 3`",
        )),
    }
}

/// `isolation = read_committed | repeatable_read | serializable`.
fn isolation(value: &Expr) -> syn::Result<Isolation> {
    let names = "`read_committed`, `repeatable_read` or `serializable`";
    let written = match value {
        Expr::Path(path) if path.qself.is_none() => path.path.get_ident().map(|i| i.to_string()),
        _ => None,
    };
    if let Some(&(_, level)) = written
        .as_deref()
        .and_then(|written| ISOLATIONS.iter().find(|(name, _)| *name == written))
    {
        return Ok(level);
    }
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(s), ..
    }) = value
    {
        if let Some((name, _)) = ISOLATIONS.iter().find(|(name, _)| *name == s.value()) {
            return Err(syn::Error::new(
                s.span(),
                format!("write the isolation level without quotes: `isolation = {name}`"),
            ));
        }
    }
    Err(syn::Error::new_spanned(
        value,
        format!("unknown isolation level; expected {names}"),
    ))
}

/// A duration option: a string literal such as `"2s"`.
fn duration(key: &str, value: &Expr) -> syn::Result<DurationLit> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => duration::parse(s),
        _ => Err(syn::Error::new_spanned(
            value,
            format!(
                "`{key}` expects a duration in a string, e.g. `{key} = {}`",
                example(key)
            ),
        )),
    }
}

/// `timeout`/`deadline`/`replicated`: a duration that is not zero.
fn positive_duration(key: &str, value: &Expr) -> syn::Result<DurationLit> {
    let parsed = duration(key, value)?;
    if parsed.millis == 0 {
        return Err(syn::Error::new(
            parsed.lit.span(),
            format!("`{key}` must be greater than zero; leave it out to use the `Db`'s policy"),
        ));
    }
    Ok(parsed)
}

/// `key_scope = "..."`: a non-empty string.
fn key_scope(value: &Expr) -> syn::Result<LitStr> {
    let hint = "`key_scope` expects the scope in a string, e.g. `key_scope = \"billing::refunds::create\"`";
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) if s.value().trim().is_empty() => Err(syn::Error::new(
            s.span(),
            "`key_scope` cannot be empty: it keeps this function's keys apart from every other function's",
        )),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        _ => Err(syn::Error::new_spanned(value, hint)),
    }
}

/// `crate = "path"`.
fn crate_path(value: &Expr) -> syn::Result<syn::Path> {
    let hint = "`crate` expects a path in a string, e.g. `crate = \"::resilient_tx\"`";
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => parse_path(s).map_err(|_| syn::Error::new(s.span(), hint)),
        _ => Err(syn::Error::new_spanned(value, hint)),
    }
}

/// A path in a string literal; its tokens take the literal's span, so they resolve
/// where the user wrote them.
fn parse_path(lit: &LitStr) -> syn::Result<syn::Path> {
    lit.parse_with(syn::Path::parse_mod_style)
}

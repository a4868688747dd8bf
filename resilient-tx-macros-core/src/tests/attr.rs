use proc_macro2::TokenStream;
use quote::{ToTokens as _, quote};

use super::messages;
use crate::attr::{Args, Isolation, KEYS};

fn parse(tokens: TokenStream) -> Args {
    match Args::parse(tokens) {
        Ok(args) => args,
        Err(invalid) => panic!("unexpected errors: {:?}", messages(invalid.error)),
    }
}

fn errors(tokens: TokenStream) -> Vec<String> {
    match Args::parse(tokens) {
        Ok(args) => panic!("expected errors, got {args:?}"),
        Err(invalid) => messages(invalid.error),
    }
}

/// The single error for `tokens`, which must contain every one of `parts`.
fn assert_error(tokens: TokenStream, parts: &[&str]) {
    let errors = errors(tokens);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    for part in parts {
        assert!(
            errors[0].contains(part),
            "{:?} should contain {part:?}",
            errors[0]
        );
    }
}

#[test]
fn no_options_leaves_everything_to_the_policy() {
    let args = parse(quote!());
    assert_eq!(args.krate.to_token_stream().to_string(), ":: resilient_tx");
    assert_eq!(args.retries, None);
    assert_eq!(args.isolation, None);
    assert!(!args.read_only && !args.idempotent);
    assert!(args.timeout.is_none() && args.deadline.is_none());
    assert!(args.backoff_base.is_none() && args.backoff_max.is_none());
    assert!(args.idempotency_key.is_none());
    assert!(args.replicated.is_none());
}

#[test]
fn every_option_parses() {
    let args = parse(quote!(
        retries = 3,
        isolation = repeatable_read,
        timeout = "2s",
        deadline = "1m",
        backoff_base = "20ms",
        backoff_max = "2s",
        idempotent,
        replicated = "500ms",
        crate = "my::rtx",
    ));
    assert_eq!(args.retries, Some(3));
    assert_eq!(args.isolation, Some(Isolation::RepeatableRead));
    assert_eq!(args.timeout.map(|d| d.millis), Some(2_000));
    assert_eq!(args.deadline.map(|d| d.millis), Some(60_000));
    assert_eq!(args.backoff_base.map(|d| d.millis), Some(20));
    assert_eq!(args.backoff_max.map(|d| d.millis), Some(2_000));
    assert!(args.idempotent);
    assert_eq!(args.replicated.map(|d| d.millis), Some(500));
    assert_eq!(args.krate.to_token_stream().to_string(), "my :: rtx");

    let args = parse(quote!(read_only, retries = 0, isolation = serializable));
    assert!(args.read_only);
    assert_eq!(args.retries, Some(0));
    assert_eq!(args.isolation, Some(Isolation::Serializable));

    let args = parse(quote!(
        idempotency_key = format!("{}-{}", a, b),
        isolation = read_committed
    ));
    assert_eq!(
        args.idempotency_key.to_token_stream().to_string(),
        "format ! (\"{}-{}\" , a , b)"
    );
    assert_eq!(args.isolation, Some(Isolation::ReadCommitted));
}

#[test]
fn unknown_key_lists_every_valid_key() {
    let errors = errors(quote!(retry = 3));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("unknown option `retry`, did you mean `retries`?"));
    for key in KEYS {
        assert!(
            errors[0].contains(&format!("`{key}`")),
            "{} lacks {key}",
            errors[0]
        );
    }
    assert_error(
        quote!(frobnicate),
        &["unknown option `frobnicate`; the options are `retries`"],
    );
    assert_error(quote!(foo::bar = 1), &["unknown option `foo::bar`"]);
}

#[test]
fn repeated_key_is_an_error() {
    assert_error(
        quote!(retries = 3, retries = 4),
        &["`retries` is set twice"],
    );
    assert_error(quote!(read_only, read_only), &["`read_only` is set twice"]);
    assert_error(
        quote!(crate = "a", crate = "b"),
        &["`crate` is set twice; each option may be given at most once"],
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let errors = errors(quote!(
        retries = "3",
        isolation = snapshot,
        timeout = "2 seconds",
        nope,
        retries = 2,
    ));
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn retries_must_be_a_whole_number() {
    assert_error(
        quote!(retries = "3"),
        &["`retries` expects a whole number", "retries = 3"],
    );
    assert_error(quote!(retries = 2.5), &["`retries` expects a whole number"]);
    assert_error(quote!(retries = n), &["`retries` expects a whole number"]);
    assert_error(quote!(retries = -1), &["`retries` cannot be negative"]);
    assert_error(quote!(retries = 99999999999), &["`retries` is too large"]);
    assert_error(
        quote!(retries),
        &["`retries` needs a value: write `retries = 3`"],
    );
}

#[test]
fn isolation_must_be_a_known_level() {
    assert_error(
        quote!(isolation = snapshot),
        &[
            "unknown isolation level; expected `read_committed`, `repeatable_read` or `serializable`",
        ],
    );
    assert_error(
        quote!(isolation = "serializable"),
        &["without quotes: `isolation = serializable`"],
    );
    assert_error(
        quote!(isolation = Serializable),
        &["unknown isolation level"],
    );
}

#[test]
fn durations_must_be_strings_with_a_unit() {
    for (tokens, part) in [
        (quote!(timeout = "2 seconds"), "no space"),
        (quote!(deadline = "5h"), "hours are not supported"),
        (quote!(backoff_base = "-1s"), "cannot be negative"),
        (quote!(backoff_max = "1.5s"), "fractions"),
        (
            quote!(timeout = 2),
            "`timeout` expects a duration in a string, e.g. `timeout = \"2s\"`",
        ),
        (
            quote!(timeout = "0ms"),
            "`timeout` must be greater than zero",
        ),
        (
            quote!(deadline = "0s"),
            "`deadline` must be greater than zero",
        ),
        (
            quote!(replicated = "0ms"),
            "`replicated` must be greater than zero",
        ),
        (
            quote!(replicated = 2),
            "`replicated` expects a duration in a string, e.g. `replicated = \"2s\"`",
        ),
    ] {
        assert_error(tokens, &[part]);
    }
    // A zero backoff is allowed: retry at once.
    assert_eq!(
        parse(quote!(backoff_base = "0ms"))
            .backoff_base
            .unwrap()
            .millis,
        0
    );
}

#[test]
fn flags_take_no_value() {
    assert_error(
        quote!(read_only = true),
        &["`read_only` is a flag and takes no value: write just `read_only`"],
    );
    assert_error(quote!(idempotent(yes)), &["`idempotent` is a flag"]);
}

#[test]
fn crate_must_be_a_path_in_a_string() {
    assert_error(
        quote!(crate = my::rtx),
        &["`crate` expects a path in a string"],
    );
    assert_error(
        quote!(crate = "not a path"),
        &["`crate` expects a path in a string"],
    );
}

#[test]
fn combinations() {
    assert_error(
        quote!(read_only, idempotent),
        &["`idempotent` has no effect with `read_only`"],
    );
    assert_error(
        quote!(idempotency_key = id, idempotent),
        &["an idempotency key already makes retries safe"],
    );
    assert_error(
        quote!(read_only, idempotency_key = id),
        &[
            "`idempotency_key` cannot be combined with `read_only`",
            "nothing to store",
        ],
    );
    assert_error(
        quote!(read_only, replicated = "2s"),
        &[
            "`replicated` has no effect with `read_only`",
            "commits nothing for a standby",
        ],
    );
    parse(quote!(idempotency_key = id, replicated = "2s"));
    parse(quote!(idempotent, replicated = "2s"));
    assert_error(
        quote!(backoff_base = "5s", backoff_max = "2s"),
        &["`backoff_base` (5s) is larger than `backoff_max` (2s)"],
    );
    parse(quote!(backoff_base = "2s", backoff_max = "2s"));
}

#[test]
fn a_valid_crate_survives_errors_for_the_fallback_expansion() {
    let invalid = Args::parse(quote!(crate = "my::rtx", retries = x)).unwrap_err();
    assert_eq!(invalid.krate.to_token_stream().to_string(), "my :: rtx");
}

#[test]
fn malformed_attribute_is_an_error_not_a_panic() {
    assert!(Args::parse(quote!(retries 3)).is_err());
    assert!(Args::parse(quote!(3)).is_err());
    assert!(Args::parse(quote!("retries" = 3)).is_err());
    assert!(Args::parse(quote!(retries = )).is_err());
}

#[test]
fn key_scope_and_key_fingerprint_go_with_a_key() {
    let args = parse(quote!(
        idempotency_key = id,
        key_scope = "billing::refunds::create",
        key_fingerprint = (&order.items, order.total)
    ));
    assert_eq!(
        args.key_scope.map(|s| s.value()).as_deref(),
        Some("billing::refunds::create")
    );
    assert_eq!(
        args.key_fingerprint.to_token_stream().to_string(),
        "(& order . items , order . total)"
    );
    assert_error(
        quote!(key_scope = "x"),
        &[
            "`key_scope` belongs to an idempotency key",
            "idempotency_key = <expr>",
        ],
    );
    assert_error(
        quote!(key_fingerprint = body),
        &["`key_fingerprint` belongs to an idempotency key"],
    );
    assert_error(
        quote!(idempotency_key = id, key_scope = billing),
        &["`key_scope` expects the scope in a string"],
    );
    assert_error(
        quote!(idempotency_key = id, key_scope = " "),
        &["`key_scope` cannot be empty"],
    );
    assert_error(
        quote!(idempotency_key = id, key_scope),
        &["`key_scope` needs a value: write `key_scope = \"billing::refunds::create\"`"],
    );
}

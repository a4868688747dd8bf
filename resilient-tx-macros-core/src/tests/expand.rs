use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::retriable_tx;

fn expand(attr: TokenStream, item: TokenStream) -> String {
    retriable_tx(attr, item).to_string()
}

#[test]
fn valid_input_has_no_compile_error() {
    let out = expand(
        quote!(retries = 3),
        quote!(
            async fn f(tx: &mut Tx<'_>) -> Result<(), TxError> {
                Ok(())
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(
        out.contains("async fn f (db : & :: resilient_tx :: Db)"),
        "{out}"
    );
}

#[test]
fn bad_options_still_generate_the_function() {
    // Callers keep type-checking against `&Db` while the attribute is being fixed.
    let out = expand(
        quote!(retries = "x", crate = "my::rtx"),
        quote!(
            async fn f(tx: &mut Tx<'_>) -> Result<(), TxError> {
                Ok(())
            }
        ),
    );
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("db : & my :: rtx :: Db"), "{out}");
    assert!(!out.contains("retries :"), "{out}");
}

#[test]
fn a_bad_signature_still_gives_callers_the_function() {
    let out = expand(
        quote!(read_only, idempotent),
        quote!(
            fn f(tx: &mut Tx<'_>, id: i64) -> Result<(), TxError> {
                Ok(())
            }
        ),
    );
    assert!(
        out.starts_with(
            "# [allow (unused_variables)] async fn f (db : & :: resilient_tx :: Db , id : i64) -> Result < () , TxError >"
        ),
        "{out}"
    );
    assert!(out.contains(":: core :: unimplemented ! ()"), "{out}");
    assert!(!out.contains("Call"), "{out}");
    // The option error and the signature error are both reported.
    assert_eq!(out.matches("compile_error").count(), 2, "{out}");
}

#[test]
fn a_return_type_that_cannot_work_is_one_error_and_the_callers_signature() {
    for (ret, part) in [
        (quote!(i64), "returns a `Result`, not `i64`"),
        (
            quote!(Result<i64, String>),
            "`String` cannot be the error type",
        ),
    ] {
        let out = expand(
            quote!(),
            quote!(
                pub async fn f(tx: &mut Tx<'_>) -> #ret {
                    Ok(1)
                }
            ),
        );
        let signature = format!("pub async fn f (db : & :: resilient_tx :: Db) -> {ret}");
        assert!(out.contains(&signature), "{out}");
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains(part), "{out}");
    }
}

#[test]
fn an_error_type_other_than_tx_error_is_checked_where_it_is_converted_to() {
    let out = expand(
        quote!(),
        quote!(
            async fn f(tx: &mut Tx<'_>) -> anyhow::Result<i64> {
                Ok(1)
            }
        ),
    );
    assert!(
        out.contains(
            "__rtx_call . begin () . await . map_err (:: resilient_tx :: __private :: convert_error :: < anyhow :: Result < i64 > >) ?"
        ),
        "{out}"
    );
    let out = expand(
        quote!(),
        quote!(
            async fn f(tx: &mut Tx<'_>) -> Result<i64, resilient_tx::TxError> {
                Ok(1)
            }
        ),
    );
    assert!(out.contains("__rtx_call . begin () . await ?"), "{out}");
}

#[test]
fn not_a_function_is_an_error_not_a_panic() {
    let out = expand(
        quote!(),
        quote!(
            struct S;
        ),
    );
    assert!(out.contains("compile_error"), "{out}");
    let out = expand(
        quote!(),
        quote!(
            async fn f(&self, tx: &mut Tx<'_>) -> R;
        ),
    );
    assert!(out.contains("compile_error"), "{out}");
}

#[test]
fn an_unknown_key_name_drops_the_key_but_still_generates() {
    let out = expand(
        quote!(idempotency_key = nope),
        quote!(
            async fn f(tx: &mut Tx<'_>, id: u64) -> Result<(), TxError> {
                Ok(())
            }
        ),
    );
    assert!(out.contains("`nope` is not a parameter of `f`"), "{out}");
    assert!(!out.contains("with_idempotency_key"), "{out}");
    assert!(out.contains("begin ()"), "{out}");
}

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
fn a_bad_signature_keeps_the_item_as_written() {
    let item = quote!(
        fn f(tx: &mut Tx<'_>) -> Result<(), TxError> {
            Ok(())
        }
    );
    let out = expand(quote!(read_only, idempotent), item.clone());
    assert!(out.starts_with(&item.to_string()), "{out}");
    // The option error and the signature error are both reported.
    assert_eq!(out.matches("compile_error").count(), 2, "{out}");
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

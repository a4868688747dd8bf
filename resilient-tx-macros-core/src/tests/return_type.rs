use syn::{ReturnType, Type};

use crate::return_type::check;

fn returning(ty: Type) -> ReturnType {
    syn::parse_quote!(-> #ty)
}

fn rejected(ty: Type) -> String {
    match check(&returning(ty.clone())) {
        Ok(_) => panic!("`{}` should be rejected", quote::quote!(#ty)),
        Err(error) => error.to_string(),
    }
}

#[test]
fn rejects_what_is_certainly_not_a_result() {
    for ty in [
        syn::parse_quote!(i64),
        syn::parse_quote!(bool),
        syn::parse_quote!(()),
        syn::parse_quote!((i64, i64)),
        syn::parse_quote!(&'static str),
        syn::parse_quote!(String),
        syn::parse_quote!(std::string::String),
        syn::parse_quote!(Option<i64>),
        syn::parse_quote!(Vec<u8>),
        syn::parse_quote!(Box<dyn std::error::Error>),
        syn::parse_quote!([u8; 4]),
        syn::parse_quote!(impl Sized),
        syn::parse_quote!(!),
    ] {
        let message = rejected(ty);
        assert!(message.contains("returns a `Result`, not"), "{message}");
        assert!(message.contains("`anyhow::Result<T>`"), "{message}");
    }
}

#[test]
fn suggests_the_result_of_a_simple_type() {
    let message = rejected(syn::parse_quote!(i64));
    assert!(
        message.contains("not `i64`, since every call can fail (the database may be down): write `-> Result<i64, TxError>`"),
        "{message}"
    );
    let message = rejected(syn::parse_quote!(Vec<u8>));
    assert!(message.contains("not `Vec<u8>`"), "{message}");
    assert!(
        message.contains("write `-> Result<Vec<u8>, TxError>`"),
        "{message}"
    );
    let message = rejected(syn::parse_quote!((i64, bool)));
    assert!(
        message.contains("write `-> Result<T, TxError>`"),
        "{message}"
    );
}

#[test]
fn rejects_error_types_that_cannot_hold_a_tx_error() {
    for (ty, shown) in [
        (syn::parse_quote!(Result<i64, String>), "String"),
        (
            syn::parse_quote!(std::result::Result<(), alloc::string::String>),
            "alloc::string::String",
        ),
        (syn::parse_quote!(Result<i64, &'static str>), "&'static str"),
        (syn::parse_quote!(Result<i64, &str>), "&str"),
        (syn::parse_quote!(Result<i64, i32>), "i32"),
        (syn::parse_quote!(Result<i64, ()>), "()"),
        (
            syn::parse_quote!(Result<i64, Option<String>>),
            "Option<String>",
        ),
    ] {
        let message = rejected(ty);
        assert!(
            message.starts_with(&format!(
                "`{shown}` cannot be the error type of a `#[retriable_tx]` function"
            )),
            "{message}"
        );
        assert!(message.contains("`Err(\"…\".into())`"), "{message}");
    }
}

#[test]
fn leaves_anything_else_to_the_trait_bound() {
    for (ty, tx_error) in [
        (syn::parse_quote!(Result<i64, TxError>), true),
        (syn::parse_quote!(Result<i64, resilient_tx::TxError>), true),
        (syn::parse_quote!(Result<i64, AppError>), false),
        (
            syn::parse_quote!(Result<i64, Box<dyn std::error::Error + Send + Sync>>),
            false,
        ),
        // Not boxed right, but only the trait bound can tell.
        (
            syn::parse_quote!(Result<i64, Box<dyn std::error::Error>>),
            false,
        ),
        (syn::parse_quote!(Result<i64, std::io::Error>), false),
        (syn::parse_quote!(anyhow::Result<i64>), false),
        (syn::parse_quote!(std::io::Result<i64>), false),
        (syn::parse_quote!(AppResult<i64>), false),
        // A user's own type that happens to share a prelude name's path.
        (syn::parse_quote!(my::Option<i64>), false),
        (syn::parse_quote!(result!(i64)), false),
        (syn::parse_quote!((Result<i64, TxError>)), true),
    ] {
        match check(&returning(ty)) {
            Ok(output) => assert_eq!(output.tx_error, tx_error),
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
}

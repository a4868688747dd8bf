use quote::quote;
use syn::ItemFn;

use super::messages;
use crate::signature::{Analysis, PassBy, analyze};

fn analysis(item: ItemFn) -> Analysis {
    match analyze(&item) {
        Ok(analysis) => analysis,
        Err(error) => panic!("unexpected errors: {:?}", messages(error)),
    }
}

fn errors(item: ItemFn) -> Vec<String> {
    match analyze(&item) {
        Ok(_) => panic!("expected errors"),
        Err(error) => messages(error),
    }
}

fn assert_error(item: ItemFn, part: &str) {
    let errors = errors(item);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains(part),
        "{:?} should contain {part:?}",
        errors[0]
    );
}

#[test]
fn sorts_parameters_by_how_attempts_get_them() {
    let a = analysis(syn::parse_quote! {
        async fn f(
            name: &str,
            tx: &mut Tx<'_>,
            out: &mut Vec<u8>,
            tags: Vec<String>,
            (a, b): (u8, u8),
            mut n: u32,
            _: Marker,
        ) -> Result<(), TxError> {}
    });
    let sorted: Vec<_> = a
        .params
        .iter()
        .map(|p| (p.pass, p.name.to_string()))
        .collect();
    assert_eq!(
        sorted,
        [
            (PassBy::Shared, "name".to_owned()),
            (PassBy::Tx, "tx".to_owned()),
            (PassBy::Unique, "out".to_owned()),
            (PassBy::Value, "tags".to_owned()),
            (PassBy::Value, "__rtx_arg4".to_owned()),
            (PassBy::Value, "n".to_owned()),
            (PassBy::Value, "__rtx_arg6".to_owned()),
        ]
    );
    assert!(!a.in_place);
    assert_eq!(a.db_name(), "db");
}

#[test]
fn finds_tx_by_its_last_path_segment() {
    for item in [
        syn::parse_quote!(
            async fn f(t: &mut resilient_tx::Tx<'_>) -> R {}
        ),
        syn::parse_quote!(
            async fn f<'a>(t: &'a mut Tx<'a>) -> R {}
        ),
        syn::parse_quote!(
            async fn f(t: &mut (Tx<'_>)) -> R {}
        ),
    ] {
        assert_eq!(
            analysis(item).tx().map(|p| p.name.to_string()).as_deref(),
            Some("t")
        );
    }
}

#[test]
fn methods_and_self_run_in_place() {
    let a = analysis(syn::parse_quote!(
        async fn f(&self, tx: &mut Tx<'_>) -> R {}
    ));
    assert!(a.in_place && !a.mut_self);
    let a = analysis(syn::parse_quote!(
        async fn f(&mut self, tx: &mut Tx<'_>) -> R {}
    ));
    assert!(a.in_place && a.mut_self);
    let a = analysis(syn::parse_quote!(
        async fn f(self: &Self, tx: &mut Tx<'_>) -> R {}
    ));
    assert!(a.in_place && !a.mut_self);
    let a = analysis(syn::parse_quote!(
        async fn f(self: &mut Self, tx: &mut Tx<'_>) -> R {}
    ));
    assert!(a.in_place && a.mut_self);
    // An associated function that names `Self` cannot use a nested `fn` either.
    let a = analysis(syn::parse_quote!(
        async fn f(tx: &mut Tx<'_>) -> Result<Self, E> {}
    ));
    assert!(a.in_place);
    let a = analysis(syn::parse_quote!(
        async fn f(tx: &mut Tx<'_>) -> R {
            m!(Self::X)
        }
    ));
    assert!(a.in_place);
}

#[test]
fn db_is_renamed_when_taken() {
    let a = analysis(syn::parse_quote!(
        async fn f(tx: &mut Tx<'_>, db: u8) -> R {}
    ));
    assert_eq!(a.db_name(), "__rtx_db");
    let a = analysis(syn::parse_quote!(
        async fn f(tx: &mut Tx<'_>, (db, x): (u8, u8)) -> R {}
    ));
    assert_eq!(a.db_name(), "__rtx_db");
}

#[test]
fn rejects_what_cannot_be_wrapped() {
    assert_error(
        syn::parse_quote!(
            fn f(tx: &mut Tx<'_>) -> R {}
        ),
        "`#[retriable_tx]` needs an `async fn`",
    );
    assert_error(
        syn::parse_quote!(
            async fn f(x: u8) -> R {}
        ),
        "needs a transaction parameter: add `tx: &mut Tx<'_>`",
    );
    assert_error(
        syn::parse_quote!(
            async fn f(tx: &Tx<'_>) -> R {}
        ),
        "the transaction must be taken as `&mut Tx<'_>`",
    );
    assert_error(
        syn::parse_quote!(
            async fn f(tx: &mut Tx<'_>, other: &mut Tx<'_>) -> R {}
        ),
        "takes exactly one `&mut Tx<'_>` parameter",
    );
    assert_error(
        syn::parse_quote!(
            async fn f(tx: &mut Tx<'_>) {}
        ),
        "returns a `Result`: write the return type",
    );
    assert_error(
        syn::parse_quote!(
            async fn f(self, tx: &mut Tx<'_>) -> R {}
        ),
        "must take `&self` or `&mut self`",
    );
    assert_error(
        syn::parse_quote!(
            async fn f(self: Box<Self>, tx: &mut Tx<'_>) -> R {}
        ),
        "must take `&self` or `&mut self`",
    );
    assert_error(
        syn::parse_quote!(
            async unsafe fn f(tx: &mut Tx<'_>) -> R {}
        ),
        "cannot be `unsafe`",
    );
    // Everything at once.
    assert_eq!(
        errors(syn::parse_quote!(
            fn f(self, x: u8) {}
        ))
        .len(),
        4
    );
}

#[test]
fn idempotency_key_must_name_a_parameter() {
    let item: ItemFn = syn::parse_quote! {
        async fn add_server(&self, tx: &mut Tx<'_>, id: u64, (a, b): (u8, u8)) -> R {}
    };
    let a = analysis(item.clone());
    let check = |key: syn::Expr| {
        a.check_key(&key, &item.sig.ident)
            .map_err(|e| e.to_string())
    };
    assert_eq!(check(syn::parse_quote!(id)), Ok(()));
    assert_eq!(check(syn::parse_quote!(self)), Ok(()));
    assert_eq!(check(syn::parse_quote!(self.id)), Ok(()));
    assert_eq!(check(syn::parse_quote!(crate::KEY)), Ok(()));
    assert_eq!(check(syn::parse_quote!(format!("{id}"))), Ok(()));
    assert!(
        check(syn::parse_quote!(foo))
            .unwrap_err()
            .starts_with("`foo` is not a parameter of `add_server`")
    );
    assert!(
        check(syn::parse_quote!(tx))
            .unwrap_err()
            .starts_with("`tx` is the transaction")
    );
    assert!(
        check(syn::parse_quote!(a))
            .unwrap_err()
            .starts_with("`a` is bound inside a pattern")
    );
}

#[test]
fn analysis_is_a_value_not_a_borrow() {
    // The expansion keeps using the analysis after the item is re-emitted.
    fn assert_static<T: 'static>(_: &T) {}
    let a = analysis(syn::parse_quote!(
        async fn f(tx: &mut Tx<'_>) -> R {}
    ));
    assert_static(&a);
    let _ = quote!();
}

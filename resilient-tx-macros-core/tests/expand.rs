//! Expansion snapshots: what `cargo expand` shows for representative inputs, so a
//! change to the generated code is reviewed as a diff of readable Rust.
//!
//! Refresh with `INSTA_UPDATE=always cargo test -p resilient-tx-macros-core --test expand`
//! and read the diff of `tests/snapshots/`.

use proc_macro2::TokenStream;
use quote::quote;
use resilient_tx_macros_core::retriable_tx;

/// `#[retriable_tx(attr)] item`, expanded and pretty-printed, and the attribute as a
/// description for the snapshot.
fn expand(attr: TokenStream, item: TokenStream) -> (String, String) {
    let description = match attr.is_empty() {
        true => "#[retriable_tx]".to_owned(),
        false => format!("#[retriable_tx({attr})]"),
    };
    let tokens = retriable_tx(attr, item);
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => (description, prettyplease::unparse(&file)),
        Err(error) => panic!("the expansion is not valid Rust ({error}):\n{tokens}"),
    }
}

/// Snapshots an expansion under the name of the test it is called from.
macro_rules! assert_expansion {
    ($attr:expr, $item:expr $(,)?) => {{
        let (description, expanded) = expand($attr, $item);
        insta::with_settings!({ description => description, omit_expression => true }, {
            insta::assert_snapshot!(expanded);
        });
    }};
}

#[test]
fn free_fn_with_options() {
    assert_expansion!(
        quote!(retries = 3, isolation = serializable, timeout = "2s"),
        quote! {
            /// Adds a server.
            pub async fn add_server(tx: &mut Tx<'_>, name: &str, tags: Vec<String>) -> Result<i64, TxError> {
                let row = tx
                    .query_one("INSERT INTO servers(name, tags) VALUES ($1, $2) RETURNING id", &[&name, &tags])
                    .await?;
                Ok(row.get(0))
            }
        },
    );
}

#[test]
fn no_options() {
    assert_expansion!(
        quote!(),
        quote! {
            async fn count(tx: &mut Tx<'_>) -> Result<i64, TxError> {
                Ok(tx.query_one("SELECT count(*) FROM servers", &[]).await?.get(0))
            }
        },
    );
}

#[test]
fn every_option() {
    assert_expansion!(
        quote!(
            retries = 0,
            isolation = repeatable_read,
            timeout = "500ms",
            deadline = "1m",
            backoff_base = "5ms",
            backoff_max = "200ms",
            replicated = "2s",
            idempotent,
        ),
        quote! {
            async fn set_url(tx: &mut Tx<'_>, id: i64, url: &str) -> Result<u64, TxError> {
                tx.execute("UPDATE servers SET url = $2 WHERE id = $1", &[&id, &url]).await
            }
        },
    );
}

#[test]
fn by_value_params_and_patterns() {
    assert_expansion!(
        quote!(read_only),
        quote! {
            #[allow(clippy::too_many_arguments)]
            #[expect(unused_variables)]
            pub(crate) async fn report(
                (from, to): (i64, i64),
                mut limit: u32,
                _: Marker,
                out: &mut Vec<String>,
                tx: &mut Tx<'_>,
                Filter { name, .. }: &Filter,
                db: String,
            ) -> Result<(), TxError> {
                limit += 1;
                Ok(())
            }
        },
    );
}

#[test]
fn generic_fn() {
    assert_expansion!(
        quote!(),
        quote! {
            async fn insert_all<'a, T, const N: usize>(
                rows: [T; N],
                txn: &mut Tx<'_>,
                label: &'a str,
                sink: impl Fn(&T) + Clone,
            ) -> Result<&'a str, TxError>
            where
                T: ToSql + Sync + Clone,
            {
                for row in &rows {
                    txn.execute("INSERT INTO t VALUES ($1)", &[row]).await?;
                }
                Ok(label)
            }
        },
    );
}

#[test]
fn method_with_ref_self() {
    assert_expansion!(
        quote!(isolation = read_committed),
        quote! {
            pub async fn rename(&self, tx: &mut Tx<'_>, id: i64, name: String) -> Result<Self, TxError> {
                tx.execute(&self.rename_sql, &[&id, &name]).await?;
                Ok(Self { rename_sql: self.rename_sql.clone() })
            }
        },
    );
}

#[test]
fn method_with_mut_self() {
    assert_expansion!(
        quote!(),
        quote! {
            async fn next(&mut self, tx: &mut Tx<'_>, (a, b): &(u8, u8), seen: &mut u32) -> Result<u64, MyError> {
                self.calls += 1;
                *seen += u32::from(*a + *b);
                Ok(tx.execute("SELECT 1", &[]).await?)
            }
        },
    );
}

#[test]
fn idempotency_key() {
    assert_expansion!(
        quote!(idempotency_key = request_id, retries = 10),
        quote! {
            async fn place_order(tx: &mut Tx<'_>, request_id: Uuid, item: &str) -> Result<i64, TxError> {
                Ok(tx.query_one("INSERT INTO orders(item) VALUES ($1) RETURNING id", &[&item]).await?.get(0))
            }
        },
    );
}

#[test]
fn idempotency_key_expression() {
    assert_expansion!(
        quote!(idempotency_key = self.prefix.clone() + &order.id.to_string()),
        quote! {
            async fn pay(&self, order: Order, tx: &mut Tx<'_>) -> Result<Receipt, PayError> {
                self.charge(tx, order).await
            }
        },
    );
}

#[test]
fn keyed_method_is_scoped_by_its_type() {
    assert_expansion!(
        quote!(idempotency_key = key),
        quote! {
            async fn create(&self, tx: &mut Tx<'_>, key: &str, amount: i64) -> Result<i64, TxError> {
                Ok(tx.query_one(&self.insert_sql, &[&amount]).await?.get(0))
            }
        },
    );
}

#[test]
fn keyed_function_with_its_own_scope_and_fingerprint() {
    assert_expansion!(
        quote!(
            idempotency_key = key,
            key_scope = "billing::refunds::create",
            key_fingerprint = (&refund.order, refund.cents)
        ),
        quote! {
            async fn create(tx: &mut Tx<'_>, key: &str, refund: &Refund, note: &str) -> Result<i64, TxError> {
                Ok(tx.query_one("INSERT INTO refunds(note) VALUES ($1) RETURNING id", &[&note]).await?.get(0))
            }
        },
    );
}

#[test]
fn keyed_function_with_only_its_key_has_no_fingerprint() {
    assert_expansion!(
        quote!(idempotency_key = key),
        quote! {
            async fn touch(tx: &mut Tx<'_>, key: &str) -> Result<(), TxError> {
                tx.batch_execute("SELECT 1").await
            }
        },
    );
}

#[test]
fn crate_path() {
    assert_expansion!(
        quote!(crate = "my_platform::db", deadline = "10s"),
        quote! {
            async fn ping(tx: &mut Tx<'_>) -> Result<(), TxError> {
                tx.batch_execute("SELECT 1").await
            }
        },
    );
}

#[test]
fn invalid_options_still_generate_the_function() {
    assert_expansion!(
        quote!(retries = "3", crate = "my_platform::db"),
        quote! {
            async fn ping(tx: &mut Tx<'_>) -> Result<(), TxError> {
                tx.batch_execute("SELECT 1").await
            }
        },
    );
}

#[test]
fn invalid_signature_still_gives_callers_the_function() {
    assert_expansion!(
        quote!(retries = 3),
        quote! {
            fn ping(tx: &mut Tx<'_>) -> Result<(), TxError> {
                Ok(())
            }
        },
    );
}

#[test]
fn return_type_that_cannot_work_still_gives_callers_the_function() {
    assert_expansion!(
        quote!(),
        quote! {
            /// Counts servers.
            pub async fn count(tx: &mut Tx<'_>, (a, b): (i64, i64)) -> Result<i64, String> {
                Ok(tx.query_one("SELECT count(*) FROM servers", &[]).await.map_err(|e| e.to_string())?.get(0))
            }
        },
    );
}

#[test]
fn error_type_through_an_alias() {
    assert_expansion!(
        quote!(),
        quote! {
            async fn count(tx: &mut Tx<'_>) -> anyhow::Result<i64> {
                Ok(tx.query_one("SELECT count(*) FROM servers", &[]).await?.get(0))
            }
        },
    );
}

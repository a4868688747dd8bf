use syn::ItemFn;

use crate::attr::default_crate;
use crate::fallback::fallback;

fn stand_in(item: ItemFn) -> String {
    fallback(&item, &default_crate()).to_string()
}

fn signature(out: &str) -> &str {
    let end = out.find('{').unwrap_or(out.len());
    out[..end].trim()
}

#[test]
fn takes_db_where_the_transaction_was() {
    let out = stand_in(syn::parse_quote!(
        fn f(id: i64, tx: &mut Tx<'_>, (a, b): (u8, u8)) -> Result<i64, TxError> {
            Ok(id)
        }
    ));
    assert_eq!(
        signature(&out),
        "# [allow (unused_variables)] async fn f (id : i64 , db : & :: resilient_tx :: Db , __rtx_arg2 : (u8 , u8)) -> Result < i64 , TxError >"
    );
    assert!(out.contains(":: core :: unimplemented ! ()"), "{out}");
    // The user's body, which may not compile now, is gone.
    assert!(!out.contains("Ok (id)"), "{out}");
}

#[test]
fn a_transaction_taken_the_wrong_way_is_replaced_too() {
    for ty in [quote::quote!(&Tx<'_>), quote::quote!(Tx<'_>)] {
        let out = stand_in(syn::parse_quote!(
            async fn f(tx: #ty, n: u8) -> i64 {
                1
            }
        ));
        assert_eq!(
            signature(&out),
            "# [allow (unused_variables)] async fn f (db : & :: resilient_tx :: Db , n : u8) -> i64"
        );
        // Still named, so that its `use` stays used.
        let named = format!("PhantomData < fn ({ty}) >");
        assert!(out.contains(&named), "{out}");
    }
}

#[test]
fn one_db_for_several_transactions_and_one_for_none() {
    let out = stand_in(syn::parse_quote!(
        async fn f(a: &mut Tx<'_>, b: &mut Tx<'_>, n: u8) -> R {}
    ));
    assert_eq!(
        signature(&out),
        "# [allow (unused_variables)] async fn f (db : & :: resilient_tx :: Db , n : u8) -> R"
    );
    let out = stand_in(syn::parse_quote!(
        async fn f(&self, n: u8) -> R {}
    ));
    assert_eq!(
        signature(&out),
        "# [allow (unused_variables)] async fn f (& self , db : & :: resilient_tx :: Db , n : u8) -> R"
    );
    let out = stand_in(syn::parse_quote!(
        async fn f(self) -> R {}
    ));
    assert_eq!(
        signature(&out),
        "# [allow (unused_variables)] async fn f (self , db : & :: resilient_tx :: Db) -> R"
    );
}

#[test]
fn drops_what_an_async_fn_cannot_have_and_keeps_the_rest() {
    let out = stand_in(syn::parse_quote!(
        /// Docs.
        #[expect(dead_code)]
        pub(crate) const unsafe extern "C" fn f<T: Clone>(tx: &mut Tx<'_>, t: T) -> R
        where
            T: Send,
        {
        }
    ));
    assert_eq!(
        signature(&out),
        "# [doc = r\" Docs.\"] # [allow (dead_code)] # [allow (unused_variables)] pub (crate) async unsafe fn f < T : Clone > (db : & :: resilient_tx :: Db , t : T) -> R where T : Send ,"
    );
}

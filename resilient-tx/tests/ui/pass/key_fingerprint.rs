//! The arguments' fingerprint: parameters of any type, `Serialize` or not (a generic
//! one without the bound, a closure, a pool handle), `key_scope`, and
//! `key_fingerprint = <expr>` over the parameters.

use std::fmt::Display;

use resilient_tx::{Db, Tx, TxError, retriable_tx};

struct Handle;

#[retriable_tx(idempotency_key = key)]
async fn generic<T: Display + Sync>(
    tx: &mut Tx<'_>,
    key: &str,
    label: &T,
    notify: &(dyn Fn(&str) + Sync),
    handle: &Handle,
    count: i64,
) -> Result<String, TxError> {
    let _ = handle;
    notify(key);
    tx.execute("SELECT $1", &[&count]).await?;
    Ok(label.to_string())
}

struct Repo;

impl Repo {
    #[retriable_tx(
        idempotency_key = key,
        key_scope = "repo::open",
        key_fingerprint = (name, amount)
    )]
    async fn open(tx: &mut Tx<'_>, key: &str, name: &str, amount: i64) -> Result<i64, TxError> {
        let row = tx.query_one("SELECT $1::int8", &[&amount]).await?;
        let _ = name;
        Ok(row.get(0))
    }

    #[retriable_tx(idempotency_key = key, key_fingerprint = ())]
    async fn touch(&self, tx: &mut Tx<'_>, key: &str, note: String) -> Result<(), TxError> {
        tx.execute("SELECT $1", &[&note]).await?;
        Ok(())
    }
}

async fn callers(db: &Db) -> Result<(), TxError> {
    let _: String = generic(db, "k", &7, &|_| {}, &Handle, 1).await?;
    let _: i64 = Repo::open(db, "k", "alpha", 5).await?;
    Repo.touch(db, "k", "note".to_owned()).await?;
    Ok(())
}

fn main() {
    let _ = callers;
}

//! `anyhow::Result<T>` works as the return type with the `anyhow` feature: `?` and
//! `.context(…)` wrap a `TxError`, and the runtime finds it under the context again.

use anyhow::{Context as _, bail};
use resilient_tx::{Db, Tx, retriable_tx};

#[retriable_tx(retries = 3)]
async fn rename(tx: &mut Tx<'_>, id: i64, name: &str) -> anyhow::Result<u64> {
    if name.is_empty() {
        bail!("a server needs a name");
    }
    let updated = tx
        .execute("UPDATE servers SET name = $2 WHERE id = $1", &[&id, &name])
        .await
        .with_context(|| format!("renaming server {id}"))?;
    Ok(updated)
}

#[retriable_tx]
async fn count(tx: &mut Tx<'_>) -> Result<i64, anyhow::Error> {
    Ok(tx.query_one("SELECT count(*) FROM servers", &[]).await?.get(0))
}

async fn callers(db: &Db) -> anyhow::Result<i64> {
    let _: u64 = rename(db, 7, "alpha").await?;
    count(db).await
}

fn assert_send<F: Send>(_: &F) {}

fn main() {
    let _ = |db: &'static Db| {
        let call = callers(db);
        assert_send(&call);
        call
    };
}

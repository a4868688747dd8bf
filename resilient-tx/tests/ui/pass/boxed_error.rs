//! `Box<dyn Error + Send + Sync>` works as the error type: `?` boxes a `TxError`, and
//! the runtime finds it in the box again to classify it.

use resilient_tx::{Db, Tx, retriable_tx};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[retriable_tx(retries = 3)]
async fn rename(tx: &mut Tx<'_>, id: i64, name: &str) -> Result<u64, BoxError> {
    if name.is_empty() {
        return Err("a server needs a name".into());
    }
    let port: u16 = "5432".parse()?;
    let updated = tx
        .execute(
            "UPDATE servers SET name = $2, port = $3 WHERE id = $1",
            &[&id, &name, &i32::from(port)],
        )
        .await?;
    Ok(updated)
}

#[retriable_tx]
async fn count(tx: &mut Tx<'_>) -> Result<i64, Box<dyn std::error::Error + Send + Sync + 'static>> {
    Ok(tx.query_one("SELECT count(*) FROM servers", &[]).await?.get(0))
}

async fn callers(db: &Db) -> Result<i64, BoxError> {
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

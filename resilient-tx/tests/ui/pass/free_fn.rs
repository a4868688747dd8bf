//! The contract's example: `tx: &mut Tx<'_>` becomes `&Db` in the generated function.

use resilient_tx::{Db, Tx, TxError, retriable_tx};

/// Adds a server; doc comments stay on the generated function.
#[retriable_tx(retries = 3, isolation = serializable, timeout = "2s")]
pub async fn add_server(tx: &mut Tx<'_>, name: &str, url: &str) -> Result<i64, TxError> {
    let row = tx
        .query_one(
            "INSERT INTO servers(name, url) VALUES ($1, $2) RETURNING id",
            &[&name, &url],
        )
        .await?;
    Ok(row.get(0))
}

#[retriable_tx(
    read_only,
    deadline = "10s",
    backoff_base = "5ms",
    backoff_max = "200ms"
)]
async fn count_servers(tx: &mut Tx<'_>) -> Result<i64, TxError> {
    Ok(tx
        .query_one("SELECT count(*) FROM servers", &[])
        .await?
        .get(0))
}

#[retriable_tx(idempotent, retries = 0, isolation = repeatable_read)]
async fn set_url(id: i64, url: &str, tx: &mut Tx<'_>) -> Result<u64, TxError> {
    tx.execute("UPDATE servers SET url = $2 WHERE id = $1", &[&id, &url])
        .await
}

async fn callers(db: &Db) -> Result<(), TxError> {
    let id = add_server(db, "alpha", "http://a").await?;
    let _: i64 = count_servers(db).await?;
    let _: u64 = set_url(id, "http://b", db).await?;
    Ok(())
}

fn assert_send<F: Send>(_: &F) {}

fn main() {
    // Type-checks the calls and that the futures can be spawned; nothing is run.
    let _ = |db: &'static Db| {
        let call = callers(db);
        assert_send(&call);
        call
    };
}

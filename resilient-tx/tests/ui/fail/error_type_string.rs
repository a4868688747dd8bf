//! A `String` cannot hold the `TxError` the runtime must find to retry: one error, on
//! the error type, saying what works.

use resilient_tx::{Db, Tx, retriable_tx};

#[retriable_tx]
async fn count(tx: &mut Tx<'_>) -> Result<i64, String> {
    let row = tx
        .query_one("SELECT count(*) FROM servers", &[])
        .await
        .map_err(|error| error.to_string())?;
    Ok(row.get(0))
}

async fn caller(db: &Db) -> Result<i64, String> {
    count(db).await
}

fn main() {
    let _ = caller;
}

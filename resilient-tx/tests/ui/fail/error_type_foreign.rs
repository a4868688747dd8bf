//! An error type from another crate that cannot hold a `TxError`, written through an
//! alias the macro cannot see through: the trait bound reports it, once, on the type.

use resilient_tx::{Db, Tx, retriable_tx};

#[retriable_tx]
async fn count(tx: &mut Tx<'_>) -> std::io::Result<i64> {
    let _ = tx;
    Ok(1)
}

async fn caller(db: &Db) -> std::io::Result<i64> {
    count(db).await
}

fn main() {
    let _ = caller;
}

//! A return type that is not a `Result` is one error, on that type; callers that use
//! the function as written see no error of their own.

use resilient_tx::{Db, Tx, retriable_tx};

#[retriable_tx]
async fn count(tx: &mut Tx<'_>) -> i64 {
    let _ = tx;
    1
}

async fn caller(db: &Db) -> i64 {
    count(db).await
}

fn main() {
    let _ = caller;
}

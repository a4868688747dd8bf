//! An error type with neither `From<TxError>` nor `AsTxError` is one error, on the
//! type, saying what works; the call site sees none.

use resilient_tx::{Db, Tx, retriable_tx};

#[derive(Debug)]
enum AppError {
    NotFound,
}

#[retriable_tx]
async fn find(tx: &mut Tx<'_>) -> Result<u64, AppError> {
    let _ = tx;
    Err(AppError::NotFound)
}

async fn caller(db: &Db) -> Result<u64, AppError> {
    find(db).await
}

fn main() {
    let _ = caller;
}

//! `From<TxError>` alone is not enough: the runtime must find the `TxError` again.

use resilient_tx::{Db, Tx, TxError, retriable_tx};

#[derive(Debug)]
enum AppError {
    Db(TxError),
}

impl From<TxError> for AppError {
    fn from(error: TxError) -> Self {
        AppError::Db(error)
    }
}

#[retriable_tx]
async fn count(tx: &mut Tx<'_>) -> Result<i64, AppError> {
    let row = tx.query_one("SELECT count(*) FROM servers", &[]).await?;
    Ok(row.get(0))
}

async fn caller(db: &Db) -> Result<i64, AppError> {
    count(db).await
}

fn main() {
    let _ = caller;
}

//! An application's own error type works when it converts from `TxError` and lets the
//! runtime see the database error inside it.

use resilient_tx::{AsTxError, Db, Tx, TxError, retriable_tx};

#[derive(Debug)]
enum AppError {
    Db(TxError),
    NotFound(i64),
}

impl From<TxError> for AppError {
    fn from(error: TxError) -> Self {
        AppError::Db(error)
    }
}

impl AsTxError for AppError {
    fn as_tx_error(&self) -> Option<&TxError> {
        match self {
            AppError::Db(error) => Some(error),
            AppError::NotFound(_) => None,
        }
    }
}

#[retriable_tx(retries = 3)]
async fn server_name(tx: &mut Tx<'_>, id: i64) -> Result<String, AppError> {
    let row = tx
        .query_opt("SELECT name FROM servers WHERE id = $1", &[&id])
        .await?;
    row.map(|row| row.get(0)).ok_or(AppError::NotFound(id))
}

async fn callers(db: &Db) -> Result<String, AppError> {
    server_name(db, 7).await
}

fn main() {
    let _ = callers;
}

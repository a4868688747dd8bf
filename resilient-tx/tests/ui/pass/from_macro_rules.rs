//! Functions written by `macro_rules!`, with the error type passed in or named through
//! `$crate`: the generated code resolves its own names and the user's alike.

use resilient_tx::{Db, Tx, retriable_tx};

mod errors {
    use resilient_tx::{AsTxError, TxError};

    #[derive(Debug)]
    pub struct AppError(pub TxError);

    impl From<TxError> for AppError {
        fn from(error: TxError) -> Self {
            AppError(error)
        }
    }

    impl AsTxError for AppError {
        fn as_tx_error(&self) -> Option<&TxError> {
            Some(&self.0)
        }
    }
}

macro_rules! counter {
    ($name:ident, $error:ty) => {
        #[retriable_tx(retries = 2)]
        async fn $name(tx: &mut Tx<'_>) -> Result<i64, $error> {
            Ok(tx.query_one("SELECT 1::int8", &[]).await?.get(0))
        }
    };
}

counter!(one, errors::AppError);

macro_rules! crate_counter {
    () => {
        #[retriable_tx]
        async fn two(tx: &mut Tx<'_>) -> Result<i64, $crate::errors::AppError> {
            Ok(tx.query_one("SELECT 2::int8", &[]).await?.get(0))
        }
    };
}

crate_counter!();

async fn callers(db: &Db) -> Result<i64, errors::AppError> {
    Ok(one(db).await? + two(db).await?)
}

fn main() {
    let _ = callers;
}

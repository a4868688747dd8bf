use resilient_tx::{Tx, retriable_tx};

#[derive(Debug)]
enum AppError {
    NotFound,
}

#[retriable_tx]
async fn find(tx: &mut Tx<'_>) -> Result<u64, AppError> {
    let _ = tx;
    Err(AppError::NotFound)
}

fn main() {}

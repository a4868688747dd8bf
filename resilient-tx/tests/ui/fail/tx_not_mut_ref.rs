use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx]
async fn count(tx: &Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

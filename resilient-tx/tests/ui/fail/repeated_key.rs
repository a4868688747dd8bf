use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(retries = 3, timeout = "1s", retries = 5)]
async fn bump(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

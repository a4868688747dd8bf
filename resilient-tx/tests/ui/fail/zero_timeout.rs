use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(timeout = "0ms", deadline = "0s")]
async fn bump(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

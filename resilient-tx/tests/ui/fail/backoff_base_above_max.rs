use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(backoff_base = "5s", backoff_max = "2s")]
async fn bump(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

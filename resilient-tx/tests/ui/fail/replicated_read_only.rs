use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(read_only, replicated = "2s")]
async fn count(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(isolation = snapshot)]
async fn bump(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

#[retriable_tx(isolation = "serializable")]
async fn bump_again(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

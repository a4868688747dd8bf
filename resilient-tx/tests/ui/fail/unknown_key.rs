use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(retry = 3)]
async fn bump(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

#[retriable_tx(max_attempts = 3)]
async fn bump_again(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(retries = "3")]
async fn bump(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

#[retriable_tx(retries = 2.5)]
async fn bump_again(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

#[retriable_tx(retries = -1)]
async fn bump_once_more(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

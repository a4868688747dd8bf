use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(
    timeout = "2 seconds",
    deadline = "5h",
    backoff_base = "-1s",
    backoff_max = "1.5s"
)]
async fn bump(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

#[retriable_tx(timeout = 2)]
async fn bump_again(tx: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = tx;
    Ok(1)
}

fn main() {}

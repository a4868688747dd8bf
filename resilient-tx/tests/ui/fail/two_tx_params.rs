use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx]
async fn copy(from: &mut Tx<'_>, to: &mut Tx<'_>) -> Result<u64, TxError> {
    let _ = (from, to);
    Ok(1)
}

fn main() {}

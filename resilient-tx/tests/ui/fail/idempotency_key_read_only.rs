use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(read_only, idempotency_key = id)]
async fn count(tx: &mut Tx<'_>, id: u64) -> Result<u64, TxError> {
    let _ = (tx, id);
    Ok(1)
}

fn main() {}

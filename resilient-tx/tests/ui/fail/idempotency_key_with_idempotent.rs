use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(idempotency_key = id, idempotent)]
async fn add_server(tx: &mut Tx<'_>, id: u64) -> Result<u64, TxError> {
    let _ = (tx, id);
    Ok(1)
}

fn main() {}

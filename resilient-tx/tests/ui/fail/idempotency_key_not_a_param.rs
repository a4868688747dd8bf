use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(idempotency_key = request_id)]
async fn add_server(tx: &mut Tx<'_>, id: u64, name: &str) -> Result<u64, TxError> {
    let _ = (tx, id, name);
    Ok(1)
}

#[retriable_tx(idempotency_key = tx)]
async fn add_client(tx: &mut Tx<'_>, id: u64) -> Result<u64, TxError> {
    let _ = (tx, id);
    Ok(1)
}

fn main() {}

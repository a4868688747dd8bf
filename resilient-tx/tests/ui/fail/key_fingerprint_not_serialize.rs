use resilient_tx::{Tx, TxError, retriable_tx};

struct Handle;

#[retriable_tx(idempotency_key = key, key_fingerprint = handle)]
async fn touch(tx: &mut Tx<'_>, key: &str, handle: &Handle) -> Result<(), TxError> {
    let _ = handle;
    tx.batch_execute("SELECT 1").await
}

fn main() {}

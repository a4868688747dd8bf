use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx(key_scope = "billing::refunds::create")]
async fn refund(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.batch_execute("SELECT 1").await
}

fn main() {}

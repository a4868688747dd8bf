use resilient_tx::{Tx, TxError, retriable_tx};

struct Order {
    id: i64,
}

impl Order {
    #[retriable_tx]
    async fn save(self, tx: &mut Tx<'_>) -> Result<i64, TxError> {
        let _ = tx;
        Ok(self.id)
    }
}

fn main() {}

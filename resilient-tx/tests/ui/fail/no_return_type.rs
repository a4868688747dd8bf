use resilient_tx::{Tx, retriable_tx};

#[retriable_tx]
async fn touch(tx: &mut Tx<'_>) {
    let _ = tx;
}

fn main() {}

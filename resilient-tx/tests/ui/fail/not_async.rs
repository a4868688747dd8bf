use resilient_tx::{Tx, TxError, retriable_tx};

#[retriable_tx]
fn add_server(tx: &mut Tx<'_>, name: &str) -> Result<u64, TxError> {
    let _ = (tx, name);
    Ok(1)
}

fn main() {}

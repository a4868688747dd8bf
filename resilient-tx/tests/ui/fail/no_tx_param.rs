use resilient_tx::{TxError, retriable_tx};

#[retriable_tx]
async fn add_server(name: &str) -> Result<u64, TxError> {
    let _ = name;
    Ok(1)
}

fn main() {}

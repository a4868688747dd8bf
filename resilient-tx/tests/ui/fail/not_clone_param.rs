use resilient_tx::{Tx, TxError, retriable_tx};

/// Owns a socket: must not be duplicated behind the caller's back.
struct Upload {
    bytes: Vec<u8>,
}

#[retriable_tx]
async fn store(tx: &mut Tx<'_>, name: &str, upload: Upload) -> Result<u64, TxError> {
    let _ = (tx, name, upload.bytes);
    Ok(1)
}

fn main() {}

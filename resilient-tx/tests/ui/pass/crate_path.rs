//! `crate = "..."`: the facade reached through a re-export or a renamed import.

mod platform {
    pub mod db {
        pub use resilient_tx::*;
    }
}

use platform::db::{Db, Tx, TxError, retriable_tx};

#[retriable_tx(crate = "crate::platform::db", retries = 2)]
async fn ping(tx: &mut Tx<'_>) -> Result<(), TxError> {
    tx.batch_execute("SELECT 1").await
}

use resilient_tx as rtx;

#[rtx::retriable_tx(crate = "rtx")]
async fn pong(tx: &mut rtx::Tx<'_>) -> Result<(), rtx::TxError> {
    tx.batch_execute("SELECT 1").await
}

async fn callers(db: &Db) -> Result<(), TxError> {
    ping(db).await?;
    pong(db).await?;
    Ok(())
}

fn main() {
    let _ = callers;
}

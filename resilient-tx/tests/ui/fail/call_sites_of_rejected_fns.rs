//! Whatever the macro rejects, it still emits the function its callers expect (`&Db`
//! in place of the transaction, the same return type), so the only errors are the
//! macro's own, none at these call sites.

use resilient_tx::{Db, Tx, TxError, retriable_tx};

#[retriable_tx]
async fn count(tx: &mut Tx<'_>, table: &str) -> i64 {
    let _ = (tx, table);
    1
}

#[retriable_tx]
async fn label(tx: &mut Tx<'_>, id: i64) -> Result<String, &'static str> {
    let _ = (tx, id);
    Err("no label")
}

#[retriable_tx]
fn not_async(tx: &mut Tx<'_>, n: i64) -> Result<i64, TxError> {
    let _ = tx;
    Ok(n)
}

#[retriable_tx]
async fn shared_tx(tx: &Tx<'_>, n: i64) -> Result<i64, TxError> {
    let _ = tx;
    Ok(n)
}

#[retriable_tx]
async fn no_tx(n: i64) -> Result<i64, TxError> {
    Ok(n)
}

struct Server;

impl Server {
    #[retriable_tx]
    async fn save(self, tx: &mut Tx<'_>) -> Result<i64, TxError> {
        let _ = tx;
        Ok(1)
    }
}

async fn callers(db: &Db) -> Result<i64, TxError> {
    let n: i64 = count(db, "servers").await;
    let _: Result<String, &'static str> = label(db, n).await;
    let m = not_async(db, n).await?;
    let o = shared_tx(db, m).await?;
    let p = no_tx(db, o).await?;
    let q = Server.save(db).await?;
    Ok(p + q)
}

fn main() {
    let _ = callers;
}

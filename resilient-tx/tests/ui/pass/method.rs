//! Methods: `&self` and `&mut self` receivers, `Self` in types and bodies, and an
//! associated function that names `Self`.

use resilient_tx::{Db, Tx, TxError, retriable_tx};

#[derive(Clone)]
struct Servers {
    table: String,
    calls: u32,
}

impl Servers {
    #[retriable_tx(isolation = read_committed)]
    async fn rename(&self, tx: &mut Tx<'_>, id: i64, name: String) -> Result<u64, TxError> {
        let sql = format!("UPDATE {} SET name = $2 WHERE id = $1", self.table);
        tx.execute(&sql, &[&id, &name]).await
    }

    #[retriable_tx]
    async fn count(&mut self, tx: &mut Tx<'_>) -> Result<i64, TxError> {
        self.calls += 1;
        let sql = format!("SELECT count(*) FROM {}", self.table);
        Ok(tx.query_one(&sql, &[]).await?.get(0))
    }

    /// Returns data borrowed from `self` across attempts.
    #[retriable_tx(read_only)]
    async fn table(&self, tx: &mut Tx<'_>) -> Result<&str, TxError> {
        tx.execute("SELECT 1", &[]).await?;
        Ok(&self.table)
    }

    #[retriable_tx]
    async fn reset(self: &mut Self, tx: &mut Tx<'_>) -> Result<(), TxError> {
        self.calls = 0;
        tx.batch_execute("SELECT 1").await
    }

    #[retriable_tx]
    async fn copy(self: &Self, tx: &mut Tx<'_>) -> Result<Self, TxError> {
        tx.execute("SELECT 1", &[]).await?;
        Ok(Self::clone(self))
    }

    #[retriable_tx]
    async fn load(tx: &mut Tx<'_>, table: &str) -> Result<Self, TxError> {
        tx.execute("SELECT 1", &[]).await?;
        Ok(Self {
            table: table.to_owned(),
            calls: 0,
        })
    }
}

async fn callers(db: &Db) -> Result<(), TxError> {
    let mut servers = Servers::load(db, "servers").await?;
    let _: u64 = servers.rename(db, 1, "alpha".to_owned()).await?;
    let _: i64 = servers.count(db).await?;
    let _: &str = servers.table(db).await?;
    let _: Servers = servers.copy(db).await?;
    servers.reset(db).await?;
    Ok(())
}

fn main() {
    let _ = callers;
}

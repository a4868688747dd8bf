//! Generics, lifetimes, const generics, `where` clauses and `impl Trait` arguments.

use resilient_tx::tokio_postgres::types::ToSql;
use resilient_tx::{Db, Tx, TxError, retriable_tx};

#[retriable_tx]
async fn insert_all<'a, T, const N: usize>(
    rows: [T; N],
    txn: &mut Tx<'_>,
    label: &'a str,
    on_row: impl Fn(&T) + Clone + Send + Sync,
) -> Result<&'a str, TxError>
where
    T: ToSql + Sync + Send + Clone,
{
    for row in &rows {
        on_row(row);
        txn.execute("INSERT INTO t VALUES ($1)", &[row]).await?;
    }
    Ok(label)
}

#[retriable_tx]
async fn first<T>(tx: &mut Tx<'_>, sql: &str) -> Result<T, TxError>
where
    T: for<'r> resilient_tx::tokio_postgres::types::FromSql<'r>,
{
    Ok(tx.query_one(sql, &[]).await?.get(0))
}

/// In a generic `impl`, an associated function that mentions `Self` can use `T`.
struct Repo<T> {
    default: T,
}

impl<T: Default + Send> Repo<T> {
    #[retriable_tx]
    async fn open(tx: &mut Tx<'_>) -> Result<Self, TxError> {
        tx.batch_execute("SELECT 1").await?;
        Ok(Self {
            default: T::default(),
        })
    }

    #[retriable_tx]
    async fn reset(&mut self, tx: &mut Tx<'_>, value: T) -> Result<(), TxError>
    where
        T: Clone,
    {
        tx.batch_execute("SELECT 1").await?;
        self.default = value;
        Ok(())
    }
}

async fn callers(db: &Db) -> Result<(), TxError> {
    let _: &str = insert_all([1_i32, 2, 3], db, "numbers", |_: &i32| {}).await?;
    let _: i64 = first(db, "SELECT 1::int8").await?;
    let mut repo = Repo::<String>::open(db).await?;
    repo.reset(db, repo.default.clone()).await?;
    Ok(())
}

fn main() {
    let _ = callers;
}

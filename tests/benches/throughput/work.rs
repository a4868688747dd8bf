//! The two transactions, written the way users of each library write them: the
//! small write (UPDATE, SELECT, INSERT) and the read (one SELECT), each in a
//! transaction of its own.

use resilient_tx::{Tx, TxError, retriable_tx};
use sqlx::PgPool;
use tokio_postgres::NoTls;

pub const UPDATE: &str = "UPDATE bench_counters SET n = n + 1 WHERE id = $1";
pub const SELECT: &str = "SELECT n FROM bench_counters WHERE id = $1";
pub const INSERT: &str = "INSERT INTO bench_log(counter, n) VALUES ($1, $2)";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A bb8-postgres pool, plain text.
pub type Bb8Pool = bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>;

#[retriable_tx]
pub async fn bump(tx: &mut Tx<'_>, id: i32) -> Result<i64, TxError> {
    tx.execute(UPDATE, &[&id]).await?;
    let n: i64 = tx.query_one(SELECT, &[&id]).await?.get(0);
    tx.execute(INSERT, &[&id, &n]).await?;
    Ok(n)
}

/// The read-only-in-effect transaction: not declared `read_only`, so commit
/// verification is on for it, as for most reads in an application.
#[retriable_tx]
pub async fn peek(tx: &mut Tx<'_>, id: i32) -> Result<i64, TxError> {
    Ok(tx.query_one(SELECT, &[&id]).await?.get(0))
}

/// bb8-postgres: checkout (a ping), `transaction()`, unprepared statements.
pub async fn bump_bb8(pool: &Bb8Pool, id: i32) -> Result<i64, Error> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    tx.execute(UPDATE, &[&id]).await?;
    let n: i64 = tx.query_one(SELECT, &[&id]).await?.get(0);
    tx.execute(INSERT, &[&id, &n]).await?;
    tx.commit().await?;
    Ok(n)
}

pub async fn peek_bb8(pool: &Bb8Pool, id: i32) -> Result<i64, Error> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let n: i64 = tx.query_one(SELECT, &[&id]).await?.get(0);
    tx.commit().await?;
    Ok(n)
}

/// deadpool-postgres: checkout without a ping, statements prepared once per
/// connection (`prepare_cached`).
pub async fn bump_deadpool(pool: &deadpool_postgres::Pool, id: i32) -> Result<i64, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let update = tx.prepare_cached(UPDATE).await?;
    let select = tx.prepare_cached(SELECT).await?;
    let insert = tx.prepare_cached(INSERT).await?;
    tx.execute(&update, &[&id]).await?;
    let n: i64 = tx.query_one(&select, &[&id]).await?.get(0);
    tx.execute(&insert, &[&id, &n]).await?;
    tx.commit().await?;
    Ok(n)
}

pub async fn peek_deadpool(pool: &deadpool_postgres::Pool, id: i32) -> Result<i64, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let select = tx.prepare_cached(SELECT).await?;
    let n: i64 = tx.query_one(&select, &[&id]).await?.get(0);
    tx.commit().await?;
    Ok(n)
}

/// sqlx: `PgPool` with its defaults (a ping on every acquire, statements prepared
/// once per connection by its statement cache), `begin()`, `commit()`.
pub async fn bump_sqlx(pool: &PgPool, id: i32) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(UPDATE).bind(id).execute(&mut *tx).await?;
    let n: i64 = sqlx::query_scalar(SELECT)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(INSERT)
        .bind(id)
        .bind(n)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

pub async fn peek_sqlx(pool: &PgPool, id: i32) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n: i64 = sqlx::query_scalar(SELECT)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

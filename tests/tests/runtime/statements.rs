//! Prepared statements: none at all with `statement_cache(false)`, a switch to unnamed
//! statements when the server connection loses them, and schema changes that make
//! every pooled connection's cached statement stale at once.

use std::time::Duration;

use resilient_tx::{Db, Tx, TxError, retriable_tx};
use resilient_tx_testkit::PgCluster;

use crate::common::{cluster, exec};

/// The session's named prepared statements as the server sees them from inside the
/// body (the body's own statement included, when it is prepared), together with a
/// write, a key claim and everything else a call sends.
#[retriable_tx]
async fn prepared_here(tx: &mut Tx<'_>, label: &str, n: i64) -> Result<i64, TxError> {
    tx.execute(
        "INSERT INTO notes(label, n, at) VALUES ($1, $2, $3)",
        &[&label, &n, &std::time::SystemTime::now()],
    )
    .await?;
    let row = tx
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await?;
    Ok(row.get(0))
}

#[retriable_tx(idempotency_key = key)]
async fn keyed_note(tx: &mut Tx<'_>, key: &str) -> Result<i64, TxError> {
    let row = tx
        .query_one(
            "INSERT INTO notes(label, n) VALUES ($1, 1) RETURNING id",
            &[&key],
        )
        .await?;
    Ok(row.get(0))
}

async fn notes(cluster: &PgCluster) {
    exec(
        cluster,
        "CREATE TABLE notes(id bigserial PRIMARY KEY, label text NOT NULL, n int8, at timestamptz)",
    )
    .await;
}

async fn db_with_cache(cluster: &PgCluster, cache: bool) -> Db {
    Db::builder(&cluster.url())
        .max_size(2)
        .pool_timeout(Duration::from_secs(5))
        .statement_cache(cache)
        .build()
        .await
        .expect("a valid configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_statement_cache_no_named_statement_is_ever_created() {
    let cluster = cluster().await;
    notes(&cluster).await;
    let cached = db_with_cache(&cluster, true).await;
    let uncached = db_with_cache(&cluster, false).await;
    // With the cache, the body's statements are prepared (the insert, the count, the
    // commit marker's insert once committed): the count sees them.
    for n in 0..3 {
        let seen = prepared_here(&cached, "cached", n)
            .await
            .expect("cached call");
        assert!(
            seen >= 2,
            "prepared statements on a cached connection: {seen}"
        );
    }
    for n in 0..5 {
        let seen = prepared_here(&uncached, "uncached", n)
            .await
            .expect("uncached call");
        assert_eq!(seen, 0, "no named statement, call {n}");
    }
    // Keys (claim, stored result) and markers also go unnamed, and still work.
    let first = keyed_note(&uncached, "k1").await.expect("keyed");
    let again = keyed_note(&uncached, "k1").await.expect("keyed again");
    assert_eq!(first, again, "the stored result, not a second insert");
    let count: i64 = {
        let admin = cluster.admin().await.expect("admin");
        admin
            .query_one("SELECT count(*) FROM notes WHERE label = 'k1'", &[])
            .await
            .expect("count")
            .get(0)
    };
    assert_eq!(count, 1);
    let uncached_metrics = uncached.metrics();
    assert_eq!(uncached_metrics.commits, 6, "{uncached_metrics:?}");
}

#[retriable_tx]
async fn forget_prepared_statements(tx: &mut Tx<'_>) -> Result<(), TxError> {
    // What a pooler in transaction mode does to a session: the next transaction runs
    // where the statements prepared before do not exist.
    tx.batch_execute("DEALLOCATE ALL").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_prepared_statement_switches_the_db_to_unnamed_statements() {
    let cluster = cluster().await;
    notes(&cluster).await;
    let db = Db::builder(&cluster.url())
        .max_size(1)
        .build()
        .await
        .expect("db");
    let seen = prepared_here(&db, "before", 1).await.expect("first call");
    assert!(seen >= 2, "named statements at first: {seen}");
    forget_prepared_statements(&db).await.expect("deallocate");
    // The cached insert is gone from the only connection: 26000, then the retry runs
    // unnamed, and so does every call after it.
    let seen = prepared_here(&db, "after", 2)
        .await
        .expect("the call survives the lost statement");
    assert_eq!(seen, 0, "unnamed from then on");
    let seen = prepared_here(&db, "later", 3).await.expect("later call");
    assert_eq!(seen, 0);
    let metrics = db.metrics();
    assert!(
        metrics.retries_conflict >= 1,
        "the lost statement cost one retry: {metrics:?}"
    );
}

#[retriable_tx(retries = 2)]
async fn read_row(tx: &mut Tx<'_>, id: i64) -> Result<usize, TxError> {
    let row = tx
        .query_one("SELECT * FROM shapes WHERE id = $1", &[&id])
        .await?;
    Ok(row.len())
}

#[retriable_tx(retries = 2)]
async fn read_size(tx: &mut Tx<'_>, id: i64) -> Result<String, TxError> {
    let row = tx
        .query_one("SELECT size::text FROM shapes WHERE id = $1", &[&id])
        .await?;
    Ok(row.get(0))
}

#[retriable_tx(retries = 2)]
async fn size_value(tx: &mut Tx<'_>, id: i64) -> Result<i64, TxError> {
    let row = tx
        .query_one("SELECT size FROM shapes WHERE id = $1", &[&id])
        .await?;
    Ok(row.get(0))
}

/// Reads with both cached statements, then waits for the other warm-up calls.
#[retriable_tx]
async fn warm(tx: &mut Tx<'_>, barrier: &tokio::sync::Barrier) -> Result<(), TxError> {
    tx.query_one("SELECT * FROM shapes WHERE id = $1", &[&1i64])
        .await?;
    let _: i32 = tx
        .query_one("SELECT size FROM shapes WHERE id = $1", &[&1i64])
        .await?
        .get(0);
    barrier.wait().await;
    Ok(())
}

/// Holds a transaction on each of the pool's connections at once, so that every one
/// of them has the statements of `read_row` and `size_value` cached.
async fn warm_every_connection(db: &Db, connections: usize) {
    let barrier = tokio::sync::Barrier::new(connections);
    let calls = (0..connections).map(|_| warm(db, &barrier));
    for result in futures_util::future::join_all(calls).await {
        result.expect("warm-up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_under_six_cached_connections_fails_no_call() {
    const CONNECTIONS: usize = 6;
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE shapes(id int8 PRIMARY KEY, size int4 NOT NULL);
         INSERT INTO shapes VALUES (1, 10)",
    )
    .await;
    let db = Db::builder(&cluster.url())
        .max_size(CONNECTIONS as u32)
        .min_idle(CONNECTIONS as u32)
        .build()
        .await
        .expect("db");
    warm_every_connection(&db, CONNECTIONS).await;
    assert_eq!(db.pool_status().connections, CONNECTIONS as u32);
    exec(
        &cluster,
        "ALTER TABLE shapes ADD COLUMN label text NOT NULL DEFAULT 'new';
         ALTER TABLE shapes ALTER COLUMN size TYPE int8",
    )
    .await;
    // Three attempts each, six stale connections: without a pool-wide invalidation a
    // call can meet stale statements three times in a row.
    for i in 0..40 {
        let columns = read_row(&db, 1)
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(columns, 3, "call {i} sees the added column");
        let size = size_value(&db, 1)
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(size, 10, "call {i} reads the widened column as int8");
        assert_eq!(read_size(&db, 1).await.expect("text"), "10");
    }
    assert_eq!(db.metrics().give_ups, 0);
}

//! The pool under more callers than connections: served in the order they came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use resilient_tx::{Db, Tx, TxError, retriable_tx};

use crate::common::{cluster, exec};

#[retriable_tx]
async fn bump(tx: &mut Tx<'_>, id: i32) -> Result<(), TxError> {
    tx.execute("UPDATE fair_counters SET n = n + 1 WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// Sixteen callers, each back for its next transaction the moment the last one
/// commits, share four connections for a few seconds. A pool that lets a newcomer take
/// the connection a waiter was woken for starves some waiter for seconds (until its
/// pool timeout fails it, while the others are served in a millisecond); served in
/// order, no call waits longer than the fifteen ahead of it take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_serves_callers_in_the_order_they_came() {
    const CALLERS: i32 = 16;
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE fair_counters(id int PRIMARY KEY, n bigint NOT NULL);
         INSERT INTO fair_counters SELECT g, 0 FROM generate_series(1, 16) g;",
    )
    .await;
    let db = Db::builder(&cluster.url())
        .max_size(4)
        .pool_timeout(Duration::from_secs(3))
        .build()
        .await
        .expect("config");
    let until = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for id in 1..=CALLERS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let (mut calls, mut longest, mut errors) = (0u64, Duration::ZERO, Vec::new());
            while Instant::now() < until {
                let started = Instant::now();
                if let Err(error) = bump(&db, id).await {
                    errors.push(error.to_string());
                }
                longest = longest.max(started.elapsed());
                calls += 1;
            }
            (calls, longest, errors)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("caller"));
    }
    let calls: u64 = results.iter().map(|r| r.0).sum();
    let longest = results.iter().map(|r| r.1).max().unwrap_or_default();
    let errors: Vec<&String> = results.iter().flat_map(|r| &r.2).collect();
    println!(
        "{calls} calls, the longest {longest:?}, {} errors",
        errors.len()
    );
    let admin = Arc::new(cluster.admin().await.expect("admin"));
    let committed: i64 = admin
        .query_one("SELECT sum(n)::int8 FROM fair_counters", &[])
        .await
        .expect("sum")
        .get(0);
    assert!(errors.is_empty(), "no caller was failed: {errors:?}");
    assert_eq!(committed as u64, calls, "every call committed once");
    assert!(
        calls > 16 * 20,
        "the callers took turns many times each ({calls} calls)"
    );
    // Fifteen callers ahead, each a few milliseconds: tens of milliseconds in order
    // (measured 30-80 ms here), seconds for the starved (1.5-2.5 s); 750 ms is
    // generous to the first and still catches the second.
    assert!(
        longest < Duration::from_millis(750),
        "the longest call took {longest:?} over {calls} calls"
    );
}

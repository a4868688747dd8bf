//! Recovery from an outage: 16 tasks write through `#[retriable_tx]` (pool of 8,
//! 10 s deadline) while the server is stopped for 3 s and started again. Prints the
//! errors that reached callers, the connect attempts per second during the outage,
//! and how soon after the server accepts connections again (the first connect of a
//! side task that tries every millisecond) the calls waiting through the outage
//! complete (the first, the median, the 99th percentile, the last).
//!
//! ```text
//! cargo bench -p resilient-tx-testkit --bench outage
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{Db, Tx, TxError, retriable_tx};
use resilient_tx_testkit::PgCluster;
use tokio::sync::Mutex;

const TASKS: usize = 16;
const OUTAGE: Duration = Duration::from_secs(3);

#[retriable_tx(deadline = "10s")]
async fn write(tx: &mut Tx<'_>, id: i32) -> Result<(), TxError> {
    tx.execute("UPDATE outage_counters SET n = n + 1 WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// One call's start and end.
#[derive(Debug, Clone, Copy)]
struct Done {
    started: Instant,
    ended: Instant,
    ok: bool,
}

/// The first error that reached a caller, to say what it was.
static FIRST_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[tokio::main]
async fn main() {
    let cluster = PgCluster::start().await.expect("start PostgreSQL");
    cluster
        .admin()
        .await
        .expect("admin")
        .batch_execute(
            "CREATE TABLE outage_counters(id int PRIMARY KEY, n bigint NOT NULL);
             INSERT INTO outage_counters SELECT g, 0 FROM generate_series(1, 16) g;",
        )
        .await
        .expect("schema");
    let db = Db::builder(&cluster.url())
        .max_size(8)
        .pool_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("config");

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<Done>::new()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (db, stop, log) = (db.clone(), stop.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = write(&db, task as i32 + 1).await;
                if let Err(error) = &result {
                    let _ = FIRST_ERROR.set(error.to_string());
                }
                let ok = result.is_ok();
                let done = Done {
                    started,
                    ended: Instant::now(),
                    ok,
                };
                log.lock().await.push(done);
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let failures_before = db.metrics().connect_failures;
    cluster.stop_fast().await.expect("stop");
    let down = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let failures_during = db.metrics().connect_failures - failures_before;
    let outage = down.elapsed();
    // The moment the server accepts connections again, seen by a connect of our own
    // every millisecond: `start_again` returns only when `pg_ctl` next looks, up to
    // 100 ms later, and calls finish meanwhile.
    let url = cluster.url();
    let accepting = tokio::spawn(async move {
        loop {
            if tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .is_ok()
            {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    cluster.start_again().await.expect("start");
    let back = accepting
        .await
        .expect("the server accepts connections again");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }

    let log = log.lock().await;
    let errors = log.iter().filter(|d| !d.ok).count();
    // Calls that waited through the outage: started before the server was back,
    // ended after.
    let mut waited: Vec<Duration> = log
        .iter()
        .filter(|d| d.ok && d.started < back && d.ended >= back)
        .map(|d| d.ended - back)
        .collect();
    waited.sort();

    let at = |q: f64| {
        waited
            .get(((waited.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!("outage of {outage:.1?} under {TASKS} writers (pool of 8, 10 s deadline)");
    println!("  calls: {}, errors surfaced: {errors}", log.len());
    if let Some(error) = FIRST_ERROR.get() {
        println!("  the first: {error}");
    }
    println!(
        "  connect attempts during the outage: {failures_during} ({:.0}/s)",
        failures_during as f64 / outage.as_secs_f64()
    );
    println!(
        "  {} calls waited through it; completed after the server accepted connections again:",
        waited.len()
    );
    println!(
        "  first {:.1?}, median {:.1?}, p99 {:.1?}, last {:.1?}",
        at(0.0),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

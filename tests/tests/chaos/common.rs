//! What every chaos proof shares: a server behind a proxy, a `Db` sized for chaos,
//! seeds, concurrent callers and a bound in time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use resilient_tx::{CommitVerification, Db, RetryBudgetConfig, TxError};
use resilient_tx_testkit::{FaultProxy, PgCluster, init_tracing};

/// Concurrent callers.
const TASKS: usize = 8;

/// The seed of a test: `CHAOS_SEED` if set, else the test's own.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("chaos seed {seed} (rerun with CHAOS_SEED={seed})");
    seed
}

/// A server, a proxy in front of it, and set-up SQL run directly.
pub async fn setup(sql: &str) -> (PgCluster, FaultProxy) {
    init_tracing();
    let cluster = PgCluster::start().await.expect("start a PostgreSQL server");
    let admin = cluster.admin().await.expect("admin connection");
    admin.batch_execute(sql).await.expect("set-up SQL");
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("start the proxy");
    (cluster, proxy)
}

/// A `Db` through the proxy, sized for chaos: the retry budget is out of the way
/// (these tests are about correctness, not about shedding load during an outage).
pub async fn chaos_db(url: &str, verification: CommitVerification) -> Db {
    Db::builder(url)
        .max_size(TASKS as u32 + 2)
        .pool_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .retry_budget(RetryBudgetConfig {
            capacity: 1e6,
            per_call: 1.0,
            per_second: 1e3,
        })
        .commit_verification(verification)
        .build()
        .await
        .expect("a valid configuration")
}

pub fn with_app_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// One number from the server, on a direct connection.
pub async fn scalar(cluster: &PgCluster, sql: &str) -> i64 {
    let admin = cluster.admin().await.expect("admin connection");
    admin.query_one(sql, &[]).await.expect("query").get(0)
}

/// Runs `calls` calls of `call(i)` on `TASKS` tasks; returns each call's outcome by
/// index.
pub async fn run_concurrently<F, Fut>(calls: usize, call: F) -> Vec<Result<(), TxError>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), TxError>> + Send + 'static,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..TASKS)
        .map(|_| {
            let (call, next) = (Arc::clone(&call), Arc::clone(&next));
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        return outcomes;
                    }
                    outcomes.push((i, call(i).await));
                }
            })
        })
        .collect();
    let mut outcomes: Vec<Option<Result<(), TxError>>> = (0..calls).map(|_| None).collect();
    for worker in workers {
        for (i, outcome) in worker.await.expect("a worker panicked") {
            outcomes[i] = Some(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every call ran"))
        .collect()
}

/// Errors by kind, with one example each.
pub fn errors_by_kind(outcomes: &[Result<(), TxError>]) -> BTreeMap<String, (usize, String)> {
    let mut kinds = BTreeMap::new();
    for error in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        let entry = kinds
            .entry(format!("{:?}", error.kind()))
            .or_insert((0, error.to_string()));
        entry.0 += 1;
    }
    kinds
}

/// Bounds a test in time, so a hang fails instead of blocking the run.
pub async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, what: &str, test: F) {
    if tokio::time::timeout(limit, test).await.is_err() {
        panic!("{what}: the test did not finish within {limit:?}");
    }
}

//! A counter incremented through random cuts, with keys and with each automatic
//! commit verification: it equals the number of calls that returned Ok.

use std::time::{Duration, Instant};

use resilient_tx::{CommitVerification, Db, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{CutCounts, PgCluster, RandomCuts};

use crate::common::{bounded, chaos_db, errors_by_kind, run_concurrently, scalar, seed, setup};

#[retriable_tx(idempotency_key = key, deadline = "30s", retries = 20, timeout = "5s")]
async fn keyed_increment(tx: &mut Tx<'_>, key: &str) -> Result<i64, TxError> {
    // The key is the runtime's business; the body does not need it.
    let _ = key;
    let row = tx
        .query_one("UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n", &[])
        .await?;
    Ok(row.get(0))
}

#[retriable_tx(deadline = "30s", retries = 20, timeout = "5s")]
async fn increment(tx: &mut Tx<'_>) -> Result<i64, TxError> {
    let row = tx
        .query_one("UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n", &[])
        .await?;
    Ok(row.get(0))
}

const COUNTER: &str = "CREATE TABLE counter(id int PRIMARY KEY, n bigint NOT NULL);
                       INSERT INTO counter VALUES (1, 0);";

/// Checks a counter run: every call returned Ok, the counter moved once per call.
async fn check_counter(
    cluster: &PgCluster,
    seed: u64,
    outcomes: &[Result<(), TxError>],
    cuts: CutCounts,
    db: &Db,
) {
    let ok = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
    let errors = errors_by_kind(outcomes);
    let counter = scalar(cluster, "SELECT n FROM counter WHERE id = 1").await;
    eprintln!("seed {seed}: {ok} Ok, errors {errors:?}; counter {counter}");
    eprintln!("seed {seed}: cuts {cuts:?}");
    eprintln!("seed {seed}: {:#?}", db.metrics());
    assert!(
        !errors.contains_key("CommitUnknown"),
        "seed {seed}: an ambiguous COMMIT was not resolved: {errors:?}"
    );
    assert_eq!(
        counter, ok,
        "seed {seed}: the counter must equal the calls that returned Ok \
         (more: a duplicate; fewer: a lost update)"
    );
    assert!(
        errors.is_empty(),
        "seed {seed}: every call must succeed within its deadline: {errors:?}"
    );
    assert!(
        cuts.after_commit >= 50,
        "seed {seed}: too few cuts after COMMIT reached the server to prove anything: {cuts:?}"
    );
}

/// 1,000 keyed increments through random cuts: the stored key resolves every
/// ambiguous COMMIT, so the counter equals the number of successful calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_counter_survives_random_cuts_exactly_once() {
    let seed = seed(0x5eed_0001);
    bounded(Duration::from_secs(150), &format!("seed {seed}"), async {
        let (cluster, proxy) = setup(COUNTER).await;
        let db = chaos_db(&cluster.url_via(&proxy), CommitVerification::default()).await;
        db.migrate().await.expect("idempotency table");
        let started = Instant::now();
        proxy.cut_randomly(RandomCuts::new(0.03, seed).commit_rate(0.12));
        let calls = 1_000;
        let outcomes = run_concurrently(calls, {
            let db = db.clone();
            move |i| {
                let db = db.clone();
                async move { keyed_increment(&db, &format!("inc-{i}")).await.map(|_| ()) }
            }
        })
        .await;
        proxy.stop_cutting();
        eprintln!(
            "seed {seed}: {calls} keyed calls in {:?}",
            started.elapsed()
        );
        check_counter(&cluster, seed, &outcomes, proxy.cuts(), &db).await;
        // Each key is stored once, with its result.
        let keys = scalar(
            &cluster,
            "SELECT count(*) FROM resilient_tx.idempotency_keys WHERE result IS NOT NULL",
        )
        .await;
        assert_eq!(keys, calls as i64, "seed {seed}: one stored result per key");
    })
    .await;
}

/// The same without keys: the runtime's automatic commit verification must settle
/// every ambiguous COMMIT, by transaction status (the default) and by marker row.
async fn unkeyed_counter_survives_random_cuts(verification: CommitVerification, seed: u64) {
    bounded(Duration::from_secs(150), &format!("seed {seed}"), async {
        let (cluster, proxy) = setup(COUNTER).await;
        let db = chaos_db(&cluster.url_via(&proxy), verification).await;
        db.migrate().await.expect("runtime tables");
        let started = Instant::now();
        proxy.cut_randomly(RandomCuts::new(0.03, seed).commit_rate(0.12));
        let calls = 1_000;
        let outcomes = run_concurrently(calls, {
            let db = db.clone();
            move |_| {
                let db = db.clone();
                async move { increment(&db).await.map(|_| ()) }
            }
        })
        .await;
        proxy.stop_cutting();
        eprintln!(
            "seed {seed}: {calls} unkeyed calls ({verification:?}) in {:?}",
            started.elapsed()
        );
        check_counter(&cluster, seed, &outcomes, proxy.cuts(), &db).await;
        let metrics = db.metrics();
        assert!(
            metrics.ambiguous_verified_committed > 0
                && metrics.ambiguous_verified_not_committed > 0,
            "seed {seed}: verification must have met both outcomes: {metrics:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_counter_survives_random_cuts_by_transaction_status() {
    unkeyed_counter_survives_random_cuts(CommitVerification::TransactionId, seed(0x5eed_0002))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_counter_survives_random_cuts_by_marker_row() {
    unkeyed_counter_survives_random_cuts(CommitVerification::MarkerRow, seed(0x5eed_0005)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_counter_survives_random_cuts_by_fenced_counter() {
    unkeyed_counter_survives_random_cuts(CommitVerification::FencedCounter, seed(0x5eed_0006))
        .await;
}

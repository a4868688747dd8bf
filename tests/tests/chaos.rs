//! Chaos proofs: `#[retriable_tx]` calls through a proxy that cuts connections at
//! random points of the PostgreSQL protocol, COMMITs included (after the server
//! executed them, before the client heard back), and with backends terminated under
//! them. Each test checks the database against what the calls returned: every call
//! that returned `Ok` applied exactly once, nothing else applied, nothing was lost.
//!
//! The cuts are drawn from a seeded generator. Each test prints its seed (shown when
//! it fails); `CHAOS_SEED=<n>` reruns with another one. With several concurrent
//! calls the interleaving also decides which statement gets which draw, so a seed
//! reproduces the kind and density of faults rather than the exact same run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{
    CommitVerification, Db, ErrorKind, RetryBudgetConfig, Tx, TxError, retriable_tx,
};
use resilient_tx_testkit::{
    CutCounts, CutPoint, CutRule, FaultProxy, PgCluster, RandomCuts, init_tracing,
};

/// Concurrent callers.
const TASKS: usize = 8;

/// The seed of a test: `CHAOS_SEED` if set, else the test's own.
fn seed(default: u64) -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("chaos seed {seed} (rerun with CHAOS_SEED={seed})");
    seed
}

/// A server, a proxy in front of it, and set-up SQL run directly.
async fn setup(sql: &str) -> (PgCluster, FaultProxy) {
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
async fn chaos_db(url: &str, verification: CommitVerification) -> Db {
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

fn with_app_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// One number from the server, on a direct connection.
async fn scalar(cluster: &PgCluster, sql: &str) -> i64 {
    let admin = cluster.admin().await.expect("admin connection");
    admin.query_one(sql, &[]).await.expect("query").get(0)
}

/// Runs `calls` calls of `call(i)` on `TASKS` tasks; returns each call's outcome by
/// index.
async fn run_concurrently<F, Fut>(calls: usize, call: F) -> Vec<Result<(), TxError>>
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
fn errors_by_kind(outcomes: &[Result<(), TxError>]) -> BTreeMap<String, (usize, String)> {
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
async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, what: &str, test: F) {
    if tokio::time::timeout(limit, test).await.is_err() {
        panic!("{what}: the test did not finish within {limit:?}");
    }
}

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

#[retriable_tx(isolation = serializable, deadline = "30s", retries = 20, timeout = "5s")]
async fn transfer(
    tx: &mut Tx<'_>,
    id: &str,
    from: i32,
    to: i32,
    amount: i64,
) -> Result<(), TxError> {
    let balance: i64 = tx
        .query_one("SELECT balance FROM accounts WHERE id = $1", &[&from])
        .await?
        .get(0);
    if balance < amount {
        // Nothing to move; still a logged, successful transfer of 0.
        tx.execute(
            "INSERT INTO transfers(id, src, dst, amount) VALUES ($1, $2, $3, 0)",
            &[&id, &from, &to],
        )
        .await?;
        return Ok(());
    }
    tx.execute(
        "UPDATE accounts SET balance = balance - $2 WHERE id = $1",
        &[&from, &amount],
    )
    .await?;
    tx.execute(
        "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
        &[&to, &amount],
    )
    .await?;
    tx.execute(
        "INSERT INTO transfers(id, src, dst, amount) VALUES ($1, $2, $3, $4)",
        &[&id, &from, &to, &amount],
    )
    .await?;
    Ok(())
}

/// Concurrent SERIALIZABLE transfers under random cuts and backends terminated
/// every few hundred milliseconds: money is neither created nor destroyed, and the
/// transfers log (written in each transfer's transaction, with no unique constraint
/// to hide a duplicate) holds exactly the transfers that returned Ok, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_apply_exactly_once_under_cuts_and_terminations() {
    let seed = seed(0x5eed_0003);
    bounded(Duration::from_secs(150), &format!("seed {seed}"), async {
        const ACCOUNTS: i32 = 10;
        const OPENING: i64 = 1_000;
        let (cluster, proxy) = setup(&format!(
            "CREATE TABLE accounts(id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, {OPENING} FROM generate_series(1, {ACCOUNTS}) g;
             CREATE TABLE transfers(id text NOT NULL, src int, dst int, amount bigint);"
        ))
        .await;
        let cluster = Arc::new(cluster);
        let app = "chaos-bank";
        let db = chaos_db(
            &with_app_name(&cluster.url_via(&proxy), app),
            CommitVerification::default(),
        )
        .await;
        db.migrate().await.expect("runtime tables");

        // Transfers are drawn up front from the seed.
        let calls = 600;
        let plan: Arc<Vec<(i32, i32, i64)>> = Arc::new({
            use rand::{RngExt, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..calls)
                .map(|_| {
                    let from = rng.random_range(1..=ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS) - 1) % ACCOUNTS + 1;
                    (from, to, rng.random_range(1..=200))
                })
                .collect()
        });

        let started = Instant::now();
        proxy.cut_randomly(RandomCuts::new(0.02, seed).commit_rate(0.10));
        let done = Arc::new(AtomicBool::new(false));
        let killer = tokio::spawn({
            let (done, cluster) = (Arc::clone(&done), Arc::clone(&cluster));
            async move {
                let mut killed = 0u64;
                let mut rounds = 0u32;
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    killed += cluster.terminate_backends(app).await.unwrap_or(0);
                    rounds += 1;
                }
                (rounds, killed)
            }
        });
        let outcomes = run_concurrently(calls, {
            let (db, plan) = (db.clone(), Arc::clone(&plan));
            move |i| {
                let (db, plan) = (db.clone(), Arc::clone(&plan));
                async move {
                    let (from, to, amount) = plan[i];
                    transfer(&db, &format!("t-{i}"), from, to, amount).await
                }
            }
        })
        .await;
        done.store(true, Ordering::Relaxed);
        proxy.stop_cutting();
        let (kill_rounds, killed) = killer.await.expect("the killer task");
        let elapsed = started.elapsed();

        let admin = cluster.admin().await.expect("admin");
        let total: i64 = admin
            .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
            .await
            .expect("total")
            .get(0);
        let logged: HashMap<String, i64> = admin
            .query("SELECT id, count(*) FROM transfers GROUP BY id", &[])
            .await
            .expect("log")
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let errors = errors_by_kind(&outcomes);
        let ok: Vec<String> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_ok())
            .map(|(i, _)| format!("t-{i}"))
            .collect();
        eprintln!(
            "seed {seed}: {calls} transfers in {elapsed:?}: {} Ok, errors {errors:?}",
            ok.len()
        );
        eprintln!(
            "seed {seed}: cuts {:?}; {killed} backends terminated in {kill_rounds} rounds",
            proxy.cuts()
        );
        eprintln!("seed {seed}: {:#?}", db.metrics());

        assert_eq!(
            total,
            i64::from(ACCOUNTS) * OPENING,
            "seed {seed}: money created or destroyed"
        );
        let duplicates: Vec<_> = logged.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicates.is_empty(),
            "seed {seed}: applied twice: {duplicates:?}"
        );
        let lost: Vec<_> = ok.iter().filter(|id| !logged.contains_key(*id)).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: returned Ok but not applied: {lost:?}"
        );
        assert_eq!(
            logged.len(),
            ok.len(),
            "seed {seed}: applied although the call failed"
        );
        // The balances are exactly what the logged transfers say.
        let moves = admin
            .query(
                "SELECT a.id, a.balance, \
                        coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)::bigint \
                      - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)::bigint \
                 FROM accounts a ORDER BY a.id",
                &[],
            )
            .await
            .expect("balances");
        for row in moves {
            let (id, balance, net): (i32, i64, i64) = (row.get(0), row.get(1), row.get(2));
            assert_eq!(balance, OPENING + net, "seed {seed}: account {id}");
        }
        assert!(
            !errors.contains_key("CommitUnknown"),
            "seed {seed}: an ambiguous COMMIT was not resolved: {errors:?}"
        );
        assert!(
            errors.is_empty(),
            "seed {seed}: every transfer must succeed: {errors:?}"
        );
        assert!(killed > 0, "seed {seed}: no backend was terminated");
    })
    .await;
}

/// Idempotent for the application (it sets a flag); `sets` counts committed runs,
/// for the test only.
#[retriable_tx(idempotent, deadline = "30s", retries = 5)]
async fn set_flag(tx: &mut Tx<'_>, runs: &AtomicU32) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute(
        "UPDATE flags SET on_ = true, sets = sets + 1 WHERE name = 'a'",
        &[],
    )
    .await?;
    Ok(())
}

#[retriable_tx(deadline = "30s", retries = 5)]
async fn add_event(tx: &mut Tx<'_>, runs: &AtomicU32) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO events(kind) VALUES ('plain')", &[])
        .await?;
    Ok(())
}

const FLAGS_AND_EVENTS: &str = "
    CREATE TABLE flags(name text PRIMARY KEY, on_ bool NOT NULL, sets int NOT NULL);
    INSERT INTO flags VALUES ('a', false, 0);
    CREATE TABLE events(id serial PRIMARY KEY, kind text NOT NULL);";

/// After an ambiguous COMMIT (the server committed, the reply was cut), an
/// `idempotent` function is re-run and returns Ok; a plain one with verification
/// off is not re-run and returns `CommitUnknown`, although its effect is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_functions_are_rerun_after_an_ambiguous_commit() {
    bounded(Duration::from_secs(90), "one-shot cuts", async {
        let (cluster, proxy) = setup(FLAGS_AND_EVENTS).await;
        let db = chaos_db(&cluster.url_via(&proxy), CommitVerification::Off).await;

        let runs = AtomicU32::new(0);
        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        set_flag(&db, &runs).await.expect("re-run, then Ok");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the idempotent body ran twice"
        );
        assert_eq!(
            scalar(&cluster, "SELECT sets::bigint FROM flags").await,
            2,
            "both runs committed"
        );
        assert_eq!(proxy.cuts().after_commit, 1);
        let metrics = db.metrics();
        eprintln!("{metrics:#?}");
        assert_eq!(metrics.ambiguous_rerun_idempotent, 1, "{metrics:?}");

        let runs = AtomicU32::new(0);
        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        let error = add_event(&db, &runs)
            .await
            .expect_err("the outcome is unknown to the caller");
        assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "never re-run blindly");
        assert_eq!(
            scalar(&cluster, "SELECT count(*) FROM events").await,
            1,
            "the COMMIT did land: a blind re-run would have applied it twice"
        );
        assert_eq!(proxy.cuts().after_commit, 2);
        let metrics = db.metrics();
        eprintln!("{metrics:#?}");
        assert_eq!(metrics.ambiguous_unresolved, 1, "{metrics:?}");
    })
    .await;
}

/// With verification on (the default), a plain function's ambiguous COMMIT is
/// settled both ways: committed (the reply was cut) → Ok without a re-run; not
/// committed (the COMMIT was dropped) → re-run once, applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_settles_both_outcomes_of_an_ambiguous_commit() {
    bounded(Duration::from_secs(90), "one-shot cuts", async {
        let (cluster, proxy) = setup(FLAGS_AND_EVENTS).await;
        let db = chaos_db(&cluster.url_via(&proxy), CommitVerification::default()).await;
        db.migrate().await.expect("runtime tables");

        let runs = AtomicU32::new(0);
        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        add_event(&db, &runs).await.expect("verified committed");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not re-run");
        assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 1);

        let runs = AtomicU32::new(0);
        proxy.cut_next(CutPoint::BeforeCommit);
        add_event(&db, &runs)
            .await
            .expect("verified not committed, retried");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "re-run once");
        assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 2);

        let cuts = proxy.cuts();
        assert_eq!((cuts.after_commit, cuts.before_commit), (1, 1), "{cuts:?}");
        let metrics = db.metrics();
        eprintln!("{metrics:#?}");
        assert_eq!(
            (
                metrics.ambiguous_verified_committed,
                metrics.ambiguous_verified_not_committed,
                metrics.ambiguous_unresolved
            ),
            (1, 1, 0),
            "{metrics:?}"
        );
    })
    .await;
}

/// The verification probe itself can lose its reply after the server ran it. The
/// call's COMMIT is dropped (the transaction did NOT commit); the probe's reply is
/// cut. With marker rows this is the dangerous case: the probe inserted the call's
/// marker, and a second probe must not take that for the call's own commit; with the
/// counter, the probe fenced the row, and the next must read the fence as "not
/// committed". By transaction status the probe writes nothing, and the next one must
/// still get it right.
async fn verification_survives_its_own_lost_probe(verification: CommitVerification, probe: &str) {
    bounded(Duration::from_secs(90), "one-shot cuts", async {
        let (cluster, proxy) = setup(FLAGS_AND_EVENTS).await;
        let db = chaos_db(&cluster.url_via(&proxy), verification).await;
        db.migrate().await.expect("runtime tables");

        let runs = AtomicU32::new(0);
        // The probe is recognised by its text (runtime-internal SQL: if it
        // changes, the rule below never fires and the test says so).
        proxy.cut_once([
            CutRule::at(CutPoint::BeforeCommit),
            CutRule::at(CutPoint::AfterStatementBeforeReply).matching(probe),
        ]);
        let result = add_event(&db, &runs).await;
        let pending = proxy.pending_cuts();
        let events = scalar(&cluster, "SELECT count(*) FROM events").await;
        eprintln!(
            "result {result:?}, runs {}, events {events}, cuts {:?}, pending {pending:?}",
            runs.load(Ordering::SeqCst),
            proxy.cuts()
        );
        eprintln!("{:#?}", db.metrics());
        assert!(
            pending.is_empty(),
            "both cuts happened: pending {pending:?}"
        );
        match result {
            Ok(()) => assert_eq!(
                events, 1,
                "the call returned Ok, so its event must be there exactly once"
            ),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::CommitUnknown, "{e}");
                assert_eq!(events, 0, "the COMMIT was dropped");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_verification_is_not_fooled_by_its_own_lost_probe() {
    verification_survives_its_own_lost_probe(
        CommitVerification::MarkerRow,
        "ON CONFLICT DO NOTHING",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_verification_is_not_fooled_by_its_own_lost_probe() {
    verification_survives_its_own_lost_probe(CommitVerification::FencedCounter, "FOR UPDATE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_verification_survives_its_own_lost_probe() {
    verification_survives_its_own_lost_probe(CommitVerification::TransactionId, "pg_xact_status")
        .await;
}

//! PgBouncer 1.18 in transaction mode between the runtime and the server, as production
//! puts it there: named prepared statements do not follow a client from one
//! transaction to the next, and a server connection PgBouncer loses reaches the client
//! as FATAL 08P01 ("server conn crashed?"). With `statement_cache(false)` nothing named
//! is ever created; with the cache on, the first lost statement switches the `Db` to
//! unnamed ones. Keys, commit verification, server restarts and crashes work through it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilient_tx::{Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{CutPoint, FaultProxy, PgBouncer, PgCluster, PoolMode};

use crate::common::{cluster, exec, scalar, slow_commit_on, until_committing, with_app_name};

/// The production shape: fewer server connections than the application's pool.
const SERVER_CONNECTIONS: u32 = 3;
const CLIENT_CONNECTIONS: u32 = 8;

const SCHEMA: &str = "CREATE TABLE counter(n int8 NOT NULL); INSERT INTO counter VALUES (0);
     CREATE TABLE calls(key text NOT NULL)";

async fn bouncer(cluster: &PgCluster) -> PgBouncer {
    PgBouncer::builder(cluster)
        .pool_mode(PoolMode::Transaction)
        .pool_size(SERVER_CONNECTIONS)
        .start()
        .await
        .expect("start PgBouncer")
}

/// A `Db` of eight connections on `url` (PgBouncer, or a proxy in front of it).
async fn bouncer_db(url: &str, statement_cache: bool) -> Db {
    Db::builder(url)
        .max_size(CLIENT_CONNECTIONS)
        .pool_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .statement_cache(statement_cache)
        .build()
        .await
        .expect("a valid configuration")
}

/// Adds one to the counter and records the call's key; returns how many named
/// prepared statements the server connection it ran on holds.
///
/// After one failed login to the server, PgBouncer answers every client "server login
/// has been failing, try again later" (FATAL 08P01) for `server_login_retry`, 15 s by
/// default: a restart of a second costs its clients that long, so the calls get the
/// default 30 s deadline and retries enough to fill it.
#[retriable_tx(retries = 60, deadline = "30s")]
async fn count_once(tx: &mut Tx<'_>, key: &str) -> Result<i64, TxError> {
    tx.execute("UPDATE counter SET n = n + 1", &[]).await?;
    tx.execute("INSERT INTO calls(key) VALUES ($1)", &[&key])
        .await?;
    let row = tx
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await?;
    Ok(row.get(0))
}

/// What a run of writers saw.
#[derive(Debug, Default)]
struct Tally {
    oks: AtomicU64,
    errors: AtomicU64,
    /// The most named statements any call's server connection held.
    most_prepared: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// `writers` tasks call [`count_once`] with a unique key each time, while `during`
/// runs and for `after` once it is done.
async fn run_writers(
    db: &Db,
    writers: usize,
    during: impl Future<Output = ()>,
    after: Duration,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (db, stop, tally) = (db.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    match count_once(&db, &format!("w{w}-{seq}")).await {
                        Ok(prepared) => {
                            tally.oks.fetch_add(1, Ordering::SeqCst);
                            tally
                                .most_prepared
                                .fetch_max(prepared as u64, Ordering::SeqCst);
                        }
                        Err(e) => {
                            tally.errors.fetch_add(1, Ordering::SeqCst);
                            let mut first = tally.first_error.lock().expect("lock");
                            first.get_or_insert_with(|| format!("writer {w}, call {seq}: {e}"));
                        }
                    }
                }
            })
        })
        .collect();
    during.await;
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("writer task");
    }
    tally
}

/// Every Ok call applied exactly once, no error reached a caller.
async fn assert_exactly_once(cluster: &PgCluster, tally: &Tally) {
    let oks = tally.oks.load(Ordering::SeqCst) as i64;
    assert_eq!(
        tally.errors.load(Ordering::SeqCst),
        0,
        "no error reached a caller; the first: {:?}",
        tally.first_error.lock().expect("lock")
    );
    assert!(oks > 0);
    assert_eq!(scalar(cluster, "SELECT n FROM counter").await, oks);
    assert_eq!(scalar(cluster, "SELECT count(*) FROM calls").await, oks);
    assert_eq!(
        scalar(cluster, "SELECT count(DISTINCT key) FROM calls").await,
        oks,
        "no call applied twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_through_pgbouncer_without_the_statement_cache_never_fail() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let bouncer = bouncer(&cluster).await;
    let db = bouncer_db(&bouncer.url(), false).await;

    let tally = run_writers(&db, 8, async {}, Duration::from_secs(5)).await;

    let metrics = db.metrics();
    println!("{tally:?} {metrics:?}");
    assert_exactly_once(&cluster, &tally).await;
    assert_eq!(
        tally.most_prepared.load(Ordering::SeqCst),
        0,
        "no named prepared statement on any server connection"
    );
    assert_eq!(
        metrics.retries_conflict, 0,
        "no lost statement: {metrics:?}"
    );
    let servers = bouncer.show("SERVERS").await.expect("SHOW SERVERS");
    assert!(
        servers.len() as u32 <= SERVER_CONNECTIONS,
        "eight clients shared at most three server connections: {}",
        servers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_through_pgbouncer_survive_a_restart_of_the_server_behind_it() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let bouncer = bouncer(&cluster).await;
    let db = bouncer_db(&bouncer.url(), false).await;

    let restart = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.restart_fast().await.expect("restart");
    };
    let started = Instant::now();
    let tally = run_writers(&db, 8, restart, Duration::from_secs(3)).await;

    let metrics = db.metrics();
    println!("{:?}: {tally:?} {metrics:?}", started.elapsed());
    assert_exactly_once(&cluster, &tally).await;
    assert!(
        metrics.retries_connection >= 1,
        "the restart was met and retried: {metrics:?}"
    );
}

/// Inserts a payment; returns its id. The key alone identifies the request: `runs`
/// counts the body's runs, and its changing value must not count as other arguments.
#[retriable_tx(idempotency_key = key, key_fingerprint = ())]
async fn pay_keyed(tx: &mut Tx<'_>, key: &str, runs: &AtomicU32) -> Result<i64, TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    let row = tx
        .query_one(
            "INSERT INTO payments(note) VALUES ($1) RETURNING id",
            &[&key],
        )
        .await?;
    Ok(row.get(0))
}

/// The same, without a key: commit verification settles a lost COMMIT reply.
#[retriable_tx]
async fn pay(tx: &mut Tx<'_>, note: &str, runs: &AtomicU32) -> Result<i64, TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    let row = tx
        .query_one(
            "INSERT INTO payments(note) VALUES ($1) RETURNING id",
            &[&note],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_commit_verification_work_through_pgbouncer() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE payments(id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
    )
    .await;
    let bouncer = bouncer(&cluster).await;
    // The cuts happen between the client and PgBouncer: what a client meets when the
    // network in front of its pooler fails.
    let proxy = FaultProxy::start(([127, 0, 0, 1], bouncer.port()).into())
        .await
        .expect("proxy");
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
    let db = bouncer_db(&url, false).await;
    let rows = |note: &'static str| {
        let cluster = &cluster;
        async move {
            let admin = cluster.admin().await.expect("admin");
            let row = admin
                .query_one("SELECT count(*) FROM payments WHERE note = $1", &[&note])
                .await
                .expect("count");
            row.get::<_, i64>(0)
        }
    };

    // A keyed call made twice: the second returns the stored result.
    let runs = AtomicU32::new(0);
    let first = pay_keyed(&db, "k-twice", &runs).await.expect("first");
    let again = pay_keyed(&db, "k-twice", &runs).await.expect("again");
    assert_eq!((first, runs.load(Ordering::SeqCst)), (again, 1));
    assert_eq!(rows("k-twice").await, 1);
    assert_eq!(db.metrics().stored_results_returned, 1);

    // A keyed call whose COMMIT reply is lost: the retry finds the stored result.
    let runs = AtomicU32::new(0);
    proxy.cut_next(CutPoint::AfterCommitBeforeReply);
    let id = pay_keyed(&db, "k-cut", &runs).await.expect("keyed, cut");
    assert_eq!(proxy.cuts().after_commit, 1, "the COMMIT reply was cut");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once");
    assert_eq!(rows("k-cut").await, 1);
    assert_eq!(
        scalar(&cluster, "SELECT max(id) FROM payments").await,
        id,
        "the call returned the committed row's id"
    );

    // No key: the marker row proves the COMMIT landed, the body is not run again.
    let runs = AtomicU32::new(0);
    proxy.cut_next(CutPoint::AfterCommitBeforeReply);
    let id = pay(&db, "verified", &runs).await.expect("verified");
    assert_eq!(proxy.cuts().after_commit, 2, "the COMMIT reply was cut");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not run twice");
    assert_eq!(rows("verified").await, 1, "applied once");
    assert_eq!(scalar(&cluster, "SELECT max(id) FROM payments").await, id);
    let metrics = db.metrics();
    println!("{metrics:?}");
    assert_eq!(metrics.ambiguous_verified_committed, 1, "{metrics:?}");
    assert_eq!(metrics.ambiguous_checked_by_key, 1, "{metrics:?}");
    assert_eq!(metrics.ambiguous_unresolved, 0, "{metrics:?}");
}

/// Counts the runtime's warnings that it switched to unnamed statements.
#[derive(Debug, Clone, Default)]
struct SwitchWarnings(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SwitchWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains("switching to unnamed statements") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// A runtime of one thread: the subscriber that counts the warning is this thread's,
// and every task of the test runs on it.
#[tokio::test]
async fn with_the_statement_cache_on_the_db_switches_itself_to_unnamed_statements_once() {
    use tracing_subscriber::layer::SubscriberExt;

    let warnings = SwitchWarnings::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(warnings.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let cluster = PgCluster::start().await.expect("start PostgreSQL");
    exec(&cluster, SCHEMA).await;
    let bouncer = bouncer(&cluster).await;
    let db = bouncer_db(&bouncer.url(), true).await;

    // Eight writers on three server connections: a statement prepared in one
    // transaction is soon missing in the next.
    let tally = run_writers(&db, 8, async {}, Duration::from_secs(3)).await;
    let switched = db.metrics();
    println!("{tally:?} {switched:?}");
    assert_exactly_once(&cluster, &tally).await;
    assert_eq!(warnings.0.load(Ordering::SeqCst), 1, "warned once");
    assert!(
        switched.retries_conflict >= 1,
        "the lost statement cost a retry: {switched:?}"
    );

    // From then on every statement is unnamed: no call meets a lost statement again.
    let tally = run_writers(&db, 8, async {}, Duration::from_secs(2)).await;
    let later = db.metrics();
    assert_eq!(tally.errors.load(Ordering::SeqCst), 0);
    assert!(tally.oks.load(Ordering::SeqCst) > 0);
    assert_eq!(
        later.retries_conflict, switched.retries_conflict,
        "no lost statement after the switch: {later:?}"
    );
    assert_eq!(warnings.0.load(Ordering::SeqCst), 1, "still warned once");
}

/// Waits until a backend of `app` runs `SELECT pg_sleep`, so the test can strike
/// while the call's statement is in flight.
async fn until_sleeping(cluster: &PgCluster, app: &str) {
    let admin = cluster.admin().await.expect("admin");
    for _ in 0..1000 {
        let sleeping: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
                &[&app],
            )
            .await
            .expect("activity")
            .get(0);
        if sleeping > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the call never reached its statement");
}

/// Inserts an event, then (first run only) sleeps so the server can be killed under
/// the statement.
async fn event_then_sleep(
    tx: &mut Tx<'_>,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO events(note) VALUES ('e')", &[])
        .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        tx.execute("SELECT pg_sleep(60)", &[]).await?;
    }
    Ok(())
}

#[retriable_tx(retries = 0, timeout = "30s", deadline = "60s")]
async fn event_once(
    tx: &mut Tx<'_>,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<(), TxError> {
    event_then_sleep(tx, first_run, runs).await
}

#[retriable_tx(retries = 60, timeout = "30s", deadline = "60s")]
async fn event_retried(
    tx: &mut Tx<'_>,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<(), TxError> {
    event_then_sleep(tx, first_run, runs).await
}

/// A server behind PgBouncer, the events table, and a `Db` through PgBouncer whose
/// backends are named `app`.
async fn events_behind_pgbouncer(app: &str) -> (PgCluster, PgBouncer, Db) {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE events(id serial PRIMARY KEY, note text)",
    )
    .await;
    let bouncer = bouncer(&cluster).await;
    let db = bouncer_db(&with_app_name(&bouncer.url(), app), false).await;
    (cluster, bouncer, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_reporting_a_lost_server_is_a_lost_connection_not_a_database_error() {
    const APP: &str = "lost-server";
    let (cluster, bouncer, db) = events_behind_pgbouncer(APP).await;
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    let crash = async {
        until_sleeping(&cluster, APP).await;
        cluster.kill().await.expect("kill the server");
    };
    let (result, ()) = tokio::join!(event_once(&db, &first_run, &runs), crash);
    let error = result.expect_err("no retry allowed");
    println!("{error}");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert_eq!(error.sqlstate().map(|s| s.code()), Some("08P01"), "{error}");
    assert!(error.to_string().contains("server conn crashed"), "{error}");
    assert!(error.is_transient(), "{error}");
    drop(bouncer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_mid_transaction_behind_pgbouncer_is_retried_once_it_is_back() {
    const APP: &str = "lost-then-back";
    let (cluster, _bouncer, db) = events_behind_pgbouncer(APP).await;
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    let crash = async {
        until_sleeping(&cluster, APP).await;
        cluster.kill().await.expect("kill the server");
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.start_again().await.expect("start again");
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(event_retried(&db, &first_run, &runs), crash);
    println!("{:?} {:?}", started.elapsed(), db.metrics());
    result.expect("retried on the server once it was back");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the body ran again");
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM events").await,
        1,
        "the lost attempt left nothing"
    );
    assert!(db.metrics().retries_connection >= 1);
}

/// Inserts an event; on the first run its COMMIT is slow enough to strike in flight.
#[retriable_tx(retries = 60, deadline = "60s")]
async fn slow_commit_event(
    tx: &mut Tx<'_>,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO events(note) VALUES ('e')", &[])
        .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        tx.batch_execute("SET LOCAL app.slow_commit = 'on'").await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_during_commit_behind_pgbouncer_is_verified_not_a_database_error() {
    const APP: &str = "lost-in-commit";
    let (cluster, _bouncer, db) = events_behind_pgbouncer(APP).await;
    slow_commit_on(&cluster, "events", 10).await;
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    let crash = async {
        until_committing(&cluster, APP).await;
        cluster.kill().await.expect("kill the server");
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.start_again().await.expect("start again");
    };
    let (result, ()) = tokio::join!(slow_commit_event(&db, &first_run, &runs), crash);
    let metrics = db.metrics();
    println!("{metrics:?}");
    result.expect("the lost COMMIT was verified, then the call retried");
    assert_eq!(metrics.ambiguous_commits, 1, "{metrics:?}");
    assert_eq!(metrics.ambiguous_verified_not_committed, 1, "{metrics:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "re-run once it was proven not applied"
    );
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 1);
}

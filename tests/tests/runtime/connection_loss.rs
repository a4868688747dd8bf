//! Killed backends, restarts, a stopped server and a silent network.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::FaultProxy;
use tokio::sync::Notify;

use crate::common::{cluster, db, exec, scalar, with_app_name};

/// Inserts a row, then (first run only) tells the test and waits for it to kill the
/// connection before going on.
#[retriable_tx(retries = 5)]
async fn insert_then_pause(
    tx: &mut Tx<'_>,
    paused: &Notify,
    resume: &Notify,
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<i64, TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO events(note) VALUES ('first')", &[])
        .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        paused.notify_one();
        resume.notified().await;
    }
    let row = tx.query_one("SELECT count(*) FROM events", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_mid_transaction_is_retried_on_a_fresh_connection() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE events(id serial PRIMARY KEY, note text)",
    )
    .await;
    let db = db(&with_app_name(&cluster.url(), "victim")).await;
    let (paused, resume) = (Notify::new(), Notify::new());
    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));

    let call = insert_then_pause(&db, &paused, &resume, &first_run, &runs);
    let killer = async {
        paused.notified().await;
        let killed = cluster
            .terminate_backends("victim")
            .await
            .expect("terminate");
        assert_eq!(killed, 1, "the app's one connection was terminated");
        resume.notify_one();
    };
    let (result, ()) = tokio::join!(call, killer);

    assert_eq!(result.expect("the call succeeds on a fresh connection"), 1);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the body ran again after the kill"
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM events").await,
        1,
        "the killed attempt left nothing"
    );
    assert!(db.metrics().retries_connection >= 1);
}

#[retriable_tx]
async fn add_event(tx: &mut Tx<'_>, note: &str) -> Result<(), TxError> {
    tx.execute("INSERT INTO events(note) VALUES ($1)", &[&note])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_idle_pooled_connections_surfaces_no_error() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE events(id serial PRIMARY KEY, note text)",
    )
    .await;
    let db = Db::builder(&cluster.url())
        .max_size(8)
        .build()
        .await
        .expect("config");
    // Fill the pool with several connections, all idle afterwards.
    let warm: Vec<_> = (0..8).map(|_| add_event(&db, "warm")).collect();
    for result in futures_util::future::join_all(warm).await {
        result.expect("warm-up call");
    }
    assert!(
        db.pool_status().idle >= 2,
        "several idle connections: {:?}",
        db.pool_status()
    );

    cluster.restart_fast().await.expect("restart");

    for i in 0..20 {
        add_event(&db, "after restart")
            .await
            .unwrap_or_else(|e| panic!("call {i} after the restart failed: {e}"));
    }
    assert_eq!(
        scalar(
            &cluster,
            "SELECT count(*) FROM events WHERE note = 'after restart'"
        )
        .await,
        20
    );
    let metrics = db.metrics();
    assert!(
        metrics.stale_connections_replaced + metrics.retries_connection >= 1,
        "stale connections were noticed and replaced: {metrics:?}"
    );
    println!("after restart: {metrics:?}");
}

#[retriable_tx(deadline = "2s")]
async fn count_events(tx: &mut Tx<'_>) -> Result<i64, TxError> {
    Ok(tx
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_gives_unavailable_in_seconds_and_the_same_db_recovers() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE events(id serial PRIMARY KEY, note text)",
    )
    .await;
    let db = db(&cluster.url()).await;
    assert_eq!(count_events(&db).await.expect("server up"), 0);

    cluster.stop_fast().await.expect("stop");
    let started = Instant::now();
    let error = count_events(&db).await.expect_err("server is down");
    let elapsed = started.elapsed();
    println!("down: {error} after {elapsed:?}");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(
        elapsed < Duration::from_secs(6),
        "returned within a few seconds, took {elapsed:?}"
    );
    assert!(
        error.to_string().contains("connect") || error.to_string().contains("lost"),
        "the message names the cause: {error}"
    );
    assert!(error.is_transient());
    assert_eq!(
        db.pool_status().waiting,
        0,
        "no caller is left counted as waiting"
    );

    cluster.start_again().await.expect("start");
    let n = count_events(&db)
        .await
        .expect("the same Db works after the server is back");
    assert_eq!(n, 0);
}

#[retriable_tx(timeout = "1s", deadline = "6s")]
async fn count_events_with_timeout(tx: &mut Tx<'_>) -> Result<i64, TxError> {
    Ok(tx
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0))
}

#[retriable_tx(timeout = "1s", deadline = "30s", retries = 30)]
async fn add_event_patiently(tx: &mut Tx<'_>, note: &str) -> Result<(), TxError> {
    tx.execute("INSERT INTO events(note) VALUES ($1)", &[&note])
        .await?;
    Ok(())
}

/// A partition longer than one attempt but shorter than the deadline: the call keeps
/// trying (each attempt bounded by its timer) and succeeds once the network heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_shorter_than_the_deadline_is_survived() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE events(id serial PRIMARY KEY, note text)",
    )
    .await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let db = db(&cluster.url_via(&proxy)).await;
    add_event_patiently(&db, "before").await.expect("warm-up");

    proxy.blackhole();
    let started = Instant::now();
    let heal = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        proxy.pass();
    };
    let (result, ()) = tokio::join!(add_event_patiently(&db, "during"), heal);
    let elapsed = started.elapsed();
    result.unwrap_or_else(|e| panic!("the call outlasts a 4 s partition: {e} after {elapsed:?}"));
    assert!(
        elapsed >= Duration::from_secs(4),
        "it succeeded only after the heal: {elapsed:?}"
    );
    let metrics = db.metrics();
    assert!(
        metrics.retries_timeout + metrics.retries_connection >= 2,
        "silent attempts were retried: {metrics:?}"
    );
    let admin = cluster.admin().await.expect("admin");
    let during: i64 = admin
        .query_one("SELECT count(*) FROM events WHERE note = 'during'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(during, 1, "applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_network_times_out_in_seconds_and_recovers_when_healed() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE events(id serial PRIMARY KEY, note text)",
    )
    .await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let db = db(&cluster.url_via(&proxy)).await;
    assert_eq!(
        count_events_with_timeout(&db)
            .await
            .expect("through the proxy"),
        0
    );

    proxy.blackhole();
    let started = Instant::now();
    let error = count_events_with_timeout(&db)
        .await
        .expect_err("the network is silent");
    let elapsed = started.elapsed();
    println!("blackhole: {error} after {elapsed:?}");
    assert!(
        matches!(error.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
        "{error:?}"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "within its 6 s deadline, not after minutes: {elapsed:?}"
    );

    proxy.pass();
    let n = count_events_with_timeout(&db)
        .await
        .expect("calls succeed once the network heals");
    assert_eq!(n, 0);
}

/// Takes the counter's row lock, then (first run only) lets `fault` cut the network
/// before its next statement: the server is left with a transaction idle, holding the
/// lock, whose client it will never hear from again.
#[retriable_tx(timeout = "1s", deadline = "30s", retries = 30)]
async fn bump_across_a_partition(
    tx: &mut Tx<'_>,
    fault: &(dyn Fn() + Sync),
    first_run: &std::sync::atomic::AtomicBool,
) -> Result<(), TxError> {
    tx.execute("UPDATE counters SET n = n + 1 WHERE id = 1", &[])
        .await?;
    if first_run.swap(false, std::sync::atomic::Ordering::SeqCst) {
        fault();
    }
    tx.execute("SELECT 1", &[]).await?;
    Ok(())
}

/// A partition orphans a transaction on the server, with the row lock the call's
/// retry needs, and no FIN will ever reach the server. The retry reaches the server by
/// the URL's second host (the partition cut one path only), where it needs that lock.
/// The server ends the orphan soon after the attempt's own bound, so the retry gets
/// the lock: the call succeeds, applied once, while the first path stays cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_transaction_behind_a_partition_releases_its_locks_soon() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE counters(id int PRIMARY KEY, n int NOT NULL); INSERT INTO counters VALUES (1, 0)",
    )
    .await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        proxy.port(),
        cluster.port()
    );
    let db = db(&url).await;
    let first_run = std::sync::atomic::AtomicBool::new(true);
    let fault = || proxy.blackhole();
    bump_across_a_partition(&db, &fault, &first_run)
        .await
        .expect("the retry gets the lock once the orphan is gone");
    let admin = cluster.admin().await.expect("admin");
    let n: i32 = admin
        .query_one("SELECT n FROM counters WHERE id = 1", &[])
        .await
        .expect("counter")
        .get(0);
    assert_eq!(n, 1, "applied exactly once");
}

#[retriable_tx]
async fn server_keepalive(tx: &mut Tx<'_>) -> Result<(String, String), TxError> {
    let row = tx
        .query_one(
            "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout')",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The server's side of each connection keeps TCP alive and times out unacknowledged
/// data as the client's does, so a session a partition cut off ends in seconds on the
/// server too, not after the kernel's two hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_side_of_each_connection_gets_keepalives() {
    let cluster = cluster().await;
    // Over TCP: keepalives do not apply to a Unix socket.
    let db = db(&cluster.url()).await;
    let (idle, user_timeout) = server_keepalive(&db).await.expect("settings");
    assert_eq!((idle.as_str(), user_timeout.as_str()), ("15", "15000"));
}

/// PgBouncer refuses the `options` startup parameter the runtime uses for the
/// server-side keepalives ("unsupported startup parameter: options"): the runtime
/// connects without them instead of failing every connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_that_refuses_session_settings_is_connected_to_without_them() {
    let cluster = cluster().await;
    let bouncer = resilient_tx_testkit::PgBouncer::start(&cluster)
        .await
        .expect("pgbouncer");
    let db = Db::builder(&bouncer.url())
        .statement_cache(false)
        .build()
        .await
        .expect("config");
    for _ in 0..3 {
        server_keepalive(&db)
            .await
            .expect("calls through PgBouncer work");
    }
    let metrics = db.metrics();
    assert_eq!(metrics.connect_failures, 0, "{metrics:?}");
}

#[retriable_tx(retries = 2, deadline = "20s")]
async fn add_event_few_retries(tx: &mut Tx<'_>, note: &str) -> Result<(), TxError> {
    tx.execute("INSERT INTO events(note) VALUES ($1)", &[&note])
        .await?;
    Ok(())
}

/// While the server is down every connect fails at once, many times a second. Those
/// attempts ran nothing, so they do not spend `retries` (2 here): the call waits for
/// the server within its deadline, and goes on the moment the server accepts
/// connections again, not after a backoff of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_that_fail_fast_do_not_spend_retries_and_recovery_wakes_the_call() {
    let cluster = cluster().await;
    exec(
        &cluster,
        "CREATE TABLE events(id serial PRIMARY KEY, note text)",
    )
    .await;
    let db = db(&cluster.url()).await;
    add_event_few_retries(&db, "before").await.expect("warm-up");
    cluster.stop_fast().await.expect("stop");

    let outage = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start_again().await.expect("start");
        Instant::now()
    };
    let call = async {
        add_event_few_retries(&db, "during")
            .await
            .expect("the call outlasts the outage");
        Instant::now()
    };
    let (back, done) = tokio::join!(outage, call);
    let after_back = done.saturating_duration_since(back);
    println!("the call completed {after_back:?} after the server accepted connections");
    assert!(
        after_back < Duration::from_millis(700),
        "woken by the recovery, not by a backoff of its own: {after_back:?}"
    );
    let metrics = db.metrics();
    println!("{metrics:?}");
    // One prober for the pool, paced by its own backoff: a few dozen connects a
    // second, whatever the number of callers.
    assert!(
        metrics.connect_failures < 400,
        "connect attempts during 3 s of outage stay bounded: {metrics:?}"
    );
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 2);
}

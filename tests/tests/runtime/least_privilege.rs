//! The runtime's own tables under least privilege: a migration role owns the schema
//! and the application's role may only read and write rows. Such a role uses keys and
//! commit verification without sending DDL; without the tables (and without the right
//! to create them) keyed calls fail at once with one clear error and unkeyed calls run
//! on, warned once; a migration run later is noticed; and the look-up never waits
//! behind another session's lock.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilient_tx::{CommitVerification, Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{CutPoint, FaultProxy, PgCluster, init_tracing};

use crate::common::{exec, scalar};

/// Where the application writes; the application's roles may insert into it.
const EVENTS: &str = "CREATE TABLE events(id serial PRIMARY KEY, note text)";

/// A server that logs every DDL statement, with the application name in each line.
async fn ddl_logging_cluster() -> PgCluster {
    init_tracing();
    PgCluster::builder()
        .setting("log_statement", "ddl")
        .start()
        .await
        .expect("start a PostgreSQL server")
}

/// `role` may log in and write `events`, nothing more: no CREATE anywhere.
async fn create_app_role(cluster: &PgCluster, role: &str) {
    exec(
        cluster,
        &format!(
            "CREATE ROLE {role} LOGIN;
             GRANT SELECT, INSERT ON events TO {role};
             GRANT USAGE ON SEQUENCE events_id_seq TO {role};"
        ),
    )
    .await;
}

/// Lets `role` read and write the runtime's tables (what the guide's grants say).
async fn grant_runtime_tables(cluster: &PgCluster, role: &str) {
    exec(
        cluster,
        &format!(
            "GRANT USAGE ON SCHEMA resilient_tx TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE
                 ON resilient_tx.idempotency_keys, resilient_tx.commit_counters,
                    resilient_tx.commit_markers
                 TO {role};"
        ),
    )
    .await;
}

/// A migration role that owns the runtime's schema: it runs `Db::migrate()`.
async fn migrate_as_owner(cluster: &PgCluster) {
    exec(
        cluster,
        "CREATE ROLE migrator LOGIN; GRANT CREATE ON DATABASE postgres TO migrator;",
    )
    .await;
    let owner = Db::connect(&url_as(cluster.port(), "migrator", "migrator"))
        .await
        .expect("a valid configuration");
    owner.migrate().await.expect("the owner creates the tables");
}

/// The URL of `port` for `role`, with `app` as the application name.
fn url_as(port: u16, role: &str, app: &str) -> String {
    format!("postgres://{role}@127.0.0.1:{port}/postgres?application_name={app}")
}

async fn app_db(url: &str) -> Db {
    verifying_db(url, CommitVerification::default()).await
}

async fn verifying_db(url: &str, verification: CommitVerification) -> Db {
    Db::builder(url)
        .commit_verification(verification)
        .max_size(2)
        .pool_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("a valid configuration")
}

/// Lines of the server log in which the application `app` sent DDL (with
/// `log_statement = 'ddl'`, the only statements logged).
async fn ddl_sent_by(cluster: &PgCluster, app: &str) -> Vec<String> {
    // The server writes its log asynchronously to the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster
        .log_contents()
        .lines()
        .filter(|line| line.contains(&format!(" {app} ")) && line.contains("statement:"))
        .map(str::to_owned)
        .collect()
}

#[retriable_tx(idempotency_key = key, timeout = "2s", deadline = "20s")]
async fn add_keyed(tx: &mut Tx<'_>, key: &str, note: &str) -> Result<i32, TxError> {
    let row = tx
        .query_one(
            "INSERT INTO events(note) VALUES ($1) RETURNING id",
            &[&note],
        )
        .await?;
    Ok(row.get(0))
}

/// Adds an event; on the first run only, `fault` strikes before COMMIT is sent.
#[retriable_tx(timeout = "2s", deadline = "20s", retries = 5)]
async fn add_event(
    tx: &mut Tx<'_>,
    fault: &(dyn Fn() + Sync),
    first_run: &AtomicBool,
    runs: &AtomicU32,
) -> Result<(), TxError> {
    runs.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO events(note) VALUES ('e')", &[])
        .await?;
    if first_run.swap(false, Ordering::SeqCst) {
        fault();
    }
    Ok(())
}

/// After the owner ran `migrate()`, a role with only SELECT/INSERT/UPDATE/DELETE on
/// the tables (and USAGE on their schema) uses keys, and has a COMMIT whose reply was
/// lost verified, by marker row and by fenced counter (the default), without a single
/// DDL statement and without throwing a connection away before the cut ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dml_only_role_uses_keys_and_verification_without_ddl() {
    let cluster = ddl_logging_cluster().await;
    exec(&cluster, EVENTS).await;
    migrate_as_owner(&cluster).await;
    create_app_role(&cluster, "app").await;
    grant_runtime_tables(&cluster, "app").await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let url = url_as(proxy.port(), "app", "dml_only_app");
    let db = verifying_db(&url, CommitVerification::MarkerRow).await;

    let first = add_keyed(&db, "k-1", "keyed")
        .await
        .expect("a keyed call by a DML-only role");
    let again = add_keyed(&db, "k-1", "keyed")
        .await
        .expect("the same request again");
    assert_eq!(first, again, "the stored result");
    assert_eq!(db.metrics().stored_results_returned, 1);
    assert_eq!(
        db.metrics().connections_discarded,
        0,
        "no connection was thrown away: {:?}",
        db.metrics()
    );

    let counted = verifying_db(&url, CommitVerification::FencedCounter).await;
    for (db, cuts) in [(&db, 1), (&counted, 2)] {
        let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
        let cut_reply = || proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        add_event(db, &cut_reply, &first_run, &runs)
            .await
            .expect("the lost COMMIT reply is verified");
        assert_eq!(proxy.cuts().total(), cuts, "the COMMIT reply was cut");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "committed once, not re-run");
        let metrics = db.metrics();
        assert_eq!(metrics.ambiguous_verified_committed, 1, "{metrics:?}");
        assert_eq!(metrics.connections_discarded, 1, "the cut one: {metrics:?}");
    }
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 3);

    let ddl = ddl_sent_by(&cluster, "dml_only_app").await;
    assert!(ddl.is_empty(), "the application sent DDL: {ddl:#?}");
    assert!(
        !ddl_sent_by(&cluster, "migrator").await.is_empty(),
        "the log does show DDL: the owner's"
    )
}

/// Without the tables and without CREATE, every keyed call fails at once with a
/// `Config` error that names the table, the role, the privilege and the cure; ten
/// such calls send the DDL at most once and throw away at most one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tables_or_create_a_keyed_call_fails_at_once_and_ddl_is_tried_at_most_once() {
    let cluster = ddl_logging_cluster().await;
    exec(&cluster, EVENTS).await;
    create_app_role(&cluster, "app").await;
    let db = app_db(&url_as(cluster.port(), "app", "no_create_app")).await;

    let started = Instant::now();
    for n in 0..10 {
        let error = add_keyed(&db, &format!("k-{n}"), "keyed")
            .await
            .expect_err("the key table is missing");
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert_eq!(error.attempts(), 1, "{error}");
        let message = error.to_string();
        for part in [
            "the idempotency table resilient_tx.idempotency_keys does not exist",
            "role \"app\" may not create it",
            "CREATE on database \"postgres\"",
            "Db::migrate()",
            "the guide's section \"The runtime's tables\"",
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "each call failed at once: {elapsed:?} for ten"
    );
    let ddl = ddl_sent_by(&cluster, "no_create_app").await;
    assert!(ddl.len() <= 1, "DDL sent more than once: {ddl:#?}");
    assert!(
        db.metrics().connections_discarded <= 1,
        "{:?}",
        db.metrics()
    );
    assert_eq!(
        scalar(&cluster, "SELECT count(*) FROM events").await,
        0,
        "no body ran"
    );
}

/// Log output, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Warnings logged so far that contain `text`.
    fn warnings_with(&self, text: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains("WARN") && line.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

/// Without the marker (or counter) table and without CREATE, calls without a key
/// still commit; the log says once per `Db` (not once per call) that verification is
/// off; and a COMMIT whose reply is lost is `CommitUnknown`, never re-run.
///
/// On the test's own thread (a current-thread runtime), so that a subscriber set for
/// this thread sees every event of the calls.
#[tokio::test]
async fn without_the_marker_table_unkeyed_calls_commit_and_one_warning_says_verification_is_off() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = PgCluster::start().await.expect("start a PostgreSQL server");
    exec(&cluster, EVENTS).await;
    create_app_role(&cluster, "app").await;
    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    let url = url_as(proxy.port(), "app", "no_markers_app");
    let db = verifying_db(&url, CommitVerification::MarkerRow).await;

    let no_fault = || {};
    for _ in 0..5 {
        let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
        add_event(&db, &no_fault, &first_run, &runs)
            .await
            .expect("an unkeyed call commits without the marker table");
    }
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM events").await, 5);
    let warnings = captured.warnings_with("resilient_tx.commit_markers");
    assert_eq!(warnings.len(), 1, "one warning per Db: {warnings:#?}");
    for part in [
        "does not exist, and role \"app\" may not create it",
        "commit verification by marker row is off",
        "CommitUnknown",
    ] {
        assert!(warnings[0].contains(part), "{part:?} in {}", warnings[0]);
    }

    let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
    let cut_reply = || proxy.cut_next(CutPoint::AfterCommitBeforeReply);
    let error = add_event(&db, &cut_reply, &first_run, &runs)
        .await
        .expect_err("nothing can verify the lost reply");
    assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never re-run blindly");
    assert_eq!(
        captured.warnings_with("resilient_tx.commit_markers").len(),
        1,
        "still one warning"
    );

    // The default method, by fenced counter, is warned of the same way.
    let counted = verifying_db(&url, CommitVerification::FencedCounter).await;
    for _ in 0..3 {
        let (first_run, runs) = (AtomicBool::new(true), AtomicU32::new(0));
        add_event(&counted, &no_fault, &first_run, &runs)
            .await
            .expect("commits without the counter table");
    }
    let warnings = captured.warnings_with("resilient_tx.commit_counters");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("commit verification by fenced counter is off"),
        "{}",
        warnings[0]
    );
}

/// Tables created by a migration after the application started are found without a
/// restart: keyed calls that failed for want of the table work again within the
/// recheck interval (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_created_later_by_a_migration_are_found_again() {
    let cluster = ddl_logging_cluster().await;
    exec(&cluster, EVENTS).await;
    create_app_role(&cluster, "app").await;
    let db = app_db(&url_as(cluster.port(), "app", "late_app")).await;
    let error = add_keyed(&db, "k-1", "keyed")
        .await
        .expect_err("no key table yet");
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");

    migrate_as_owner(&cluster).await;
    grant_runtime_tables(&cluster, "app").await;
    let started = Instant::now();
    let id = loop {
        match add_keyed(&db, "k-1", "keyed").await {
            Ok(id) => break id,
            Err(error) if started.elapsed() < Duration::from_secs(40) => {
                assert_eq!(error.kind(), ErrorKind::Config, "{error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!("the migrated table was never found: {error}"),
        }
    };
    assert_eq!(
        add_keyed(&db, "k-1", "keyed").await.expect("stored"),
        id,
        "the key works as any other"
    );
    let ddl = ddl_sent_by(&cluster, "late_app").await;
    assert!(ddl.len() <= 1, "{ddl:#?}");
}

/// Another session holds an ACCESS EXCLUSIVE lock on the key table (a long
/// migration, say) when a process makes its first keyed call: the look-up takes no
/// lock (a `CREATE INDEX IF NOT EXISTS` would queue behind it until the pool timeout),
/// and the call ends within its deadline. Once the lock is gone, keyed calls work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_locked_by_another_session_does_not_hold_the_first_call_past_its_deadline() {
    let cluster = ddl_logging_cluster().await;
    exec(&cluster, EVENTS).await;
    let owner = Db::connect(&cluster.url()).await.expect("configuration");
    owner.migrate().await.expect("tables");
    let locker = cluster.admin().await.expect("admin");
    locker
        .batch_execute("BEGIN; LOCK TABLE resilient_tx.idempotency_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let db = Db::builder(&cluster.url())
        .pool_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("configuration");

    let started = Instant::now();
    let outcome = within_deadline(&db).await;
    let elapsed = started.elapsed();
    let error = outcome.expect_err("the key table stays locked");
    assert!(
        elapsed < Duration::from_secs(20),
        "the 3 s deadline held, not the 60 s pool timeout: {elapsed:?} ({error})"
    );

    locker.batch_execute("ROLLBACK").await.expect("unlock");
    within_deadline(&db).await.expect("keyed calls work again");
}

#[retriable_tx(idempotency_key = key, timeout = "1s", deadline = "3s")]
async fn add_keyed_quickly(tx: &mut Tx<'_>, key: &str) -> Result<i32, TxError> {
    let row = tx
        .query_one("INSERT INTO events(note) VALUES ($1) RETURNING id", &[&key])
        .await?;
    Ok(row.get(0))
}

async fn within_deadline(db: &Db) -> Result<i32, TxError> {
    add_keyed_quickly(db, "locked").await
}

/// A process creating the tables while another session is creating them too (its
/// transaction still open) waits for that session's lock no longer than its
/// `lock_timeout`: the call ends within its deadline, and succeeds once the other
/// session is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_tables_behind_another_sessions_lock_ends_within_the_deadline() {
    let cluster = ddl_logging_cluster().await;
    exec(&cluster, EVENTS).await;
    let other = cluster.admin().await.expect("admin");
    other
        .batch_execute("BEGIN; CREATE SCHEMA resilient_tx")
        .await
        .expect("an uncommitted creation");
    let db = Db::builder(&cluster.url())
        .pool_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("configuration");

    let started = Instant::now();
    let outcome = within_deadline(&db).await;
    let elapsed = started.elapsed();
    let error = outcome.expect_err("the schema is being created by another session");
    assert!(
        elapsed < Duration::from_secs(20),
        "bounded by the lock timeout and the deadline: {elapsed:?} ({error})"
    );
    assert!(
        error.to_string().contains("creating it failed"),
        "the error says what was being done: {error}"
    );

    other.batch_execute("ROLLBACK").await.expect("give up");
    within_deadline(&db)
        .await
        .expect("the tables are created now");
}

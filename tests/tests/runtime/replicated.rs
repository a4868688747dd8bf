//! `replicated = "…"` against a primary with a streaming replica, replicating
//! asynchronously: a call returns once the standby has flushed its commit, and ends
//! `NotReplicated` within its bound, saying what happened and what to do, when the
//! standby receives nothing (its WAL receiver stopped) or is stopped.

use std::time::{Duration, Instant};

use resilient_tx::tokio_postgres::Client;
use resilient_tx::{Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::PgCluster;

use crate::common;

/// How long the replica may take to stream again once started.
const REJOIN: Duration = Duration::from_secs(120);

#[retriable_tx]
async fn add(tx: &mut Tx<'_>, name: &str) -> Result<(), TxError> {
    tx.execute("INSERT INTO notes(name) VALUES ($1)", &[&name])
        .await?;
    Ok(())
}

#[retriable_tx(replicated = "1s")]
async fn add_replicated_1s(tx: &mut Tx<'_>, name: &str) -> Result<(), TxError> {
    tx.execute("INSERT INTO notes(name) VALUES ($1)", &[&name])
        .await?;
    Ok(())
}

#[retriable_tx(replicated = "20s")]
async fn add_replicated_20s(tx: &mut Tx<'_>, name: &str) -> Result<(), TxError> {
    tx.execute("INSERT INTO notes(name) VALUES ($1)", &[&name])
        .await?;
    Ok(())
}

/// Keyed: a repetition with the same key returns the stored id, once a standby has it.
#[retriable_tx(idempotency_key = key, replicated = "1s")]
async fn add_once(tx: &mut Tx<'_>, key: &str, name: &str) -> Result<i64, TxError> {
    let _ = key;
    Ok(tx
        .query_one("INSERT INTO notes(name) VALUES ($1) RETURNING id", &[&name])
        .await?
        .get(0))
}

/// A primary with a streaming replica (asynchronous: `synchronous_standby_names` is
/// empty), the `notes` table on it, a `Db` on the primary, and an admin connection to
/// the replica.
async fn set_up() -> (PgCluster, PgCluster, Db, Client) {
    let primary = common::cluster().await;
    common::exec(
        &primary,
        "CREATE TABLE notes (id bigserial PRIMARY KEY, name text UNIQUE NOT NULL)",
    )
    .await;
    let replica = primary.create_replica().await.expect("a streaming replica");
    let db = common::db(&primary.url()).await;
    let standby = replica
        .admin()
        .await
        .expect("an admin connection to the replica");
    (primary, replica, db, standby)
}

/// Waits until the primary reports a standby streaming from it, and where it flushed.
async fn until_streaming(primary: &PgCluster) {
    let started = Instant::now();
    while common::scalar(
        primary,
        "SELECT count(*) FROM pg_stat_replication \
         WHERE state = 'streaming' AND flush_lsn IS NOT NULL",
    )
    .await
        == 0
    {
        assert!(
            started.elapsed() < REJOIN,
            "the replica did not stream again within {REJOIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The standby's WAL receiver, stopped with SIGSTOP until dropped (or `thaw`ed): the
/// standby stays up and answers, but receives and flushes no more WAL.
struct Frozen {
    pid: i32,
    stopped: bool,
}

impl Frozen {
    async fn receiver_of(standby: &Client) -> Frozen {
        let pid: i32 = standby
            .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
            .await
            .expect("the standby has a WAL receiver")
            .get(0);
        let mut frozen = Frozen {
            pid,
            stopped: false,
        };
        frozen.signal(libc::SIGSTOP);
        frozen.stopped = true;
        frozen
    }

    fn signal(&mut self, signal: libc::c_int) {
        // SAFETY: kill(2) with a pid the standby reported for its own WAL receiver.
        let sent = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(sent, 0, "signal {signal} to the WAL receiver {}", self.pid);
    }

    fn thaw(mut self) {
        self.signal(libc::SIGCONT);
        self.stopped = false;
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.stopped {
            // SAFETY: as in `signal`; a failure leaves a process the cluster's drop kills.
            unsafe { libc::kill(self.pid, libc::SIGCONT) };
        }
    }
}

/// Whether the standby has the note `name`, once it has replayed all the WAL it
/// flushed (its receiver may be stopped: replay goes on without it).
async fn standby_has(standby: &Client, name: &str) -> bool {
    let started = Instant::now();
    loop {
        let caught_up: bool = standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()",
                &[],
            )
            .await
            .expect("replay position")
            .get(0);
        if caught_up {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the standby did not replay what it flushed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n: i64 = standby
        .query_one("SELECT count(*) FROM notes WHERE name = $1", &[&name])
        .await
        .expect("count")
        .get(0);
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_call_returns_once_the_standby_has_flushed_its_commit() {
    let (primary, _replica, db, standby) = set_up().await;
    until_streaming(&primary).await;
    // Confirmed: the standby streams and has reported what it flushed.
    add_replicated_20s(&db, "warm-up")
        .await
        .expect("the standby confirms a write");

    // The standby receives nothing: a plain call returns as soon as the primary
    // committed, and the standby does not have its row.
    let frozen = Frozen::receiver_of(&standby).await;
    add(&db, "plain").await.expect("a plain write");
    assert!(
        !standby_has(&standby, "plain").await,
        "without `replicated` the write was acknowledged before the standby had it"
    );

    // With `replicated = "1s"` the call waits for the standby, and says that none
    // confirmed: committed on the primary only.
    let started = Instant::now();
    let error = add_replicated_1s(&db, "unconfirmed")
        .await
        .expect_err("no standby could confirm");
    let waited = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::NotReplicated, "{error}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "ended after {waited:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(
            "the transaction committed on the primary, but no standby confirmed it within 1s"
        ) && message.contains(" has flushed up to "),
        "{message}"
    );
    // What a person can act on: it is applied, and how to repeat it safely.
    assert!(
        message.contains("it is applied, so repeat the call only with its idempotency key"),
        "{message}"
    );
    assert!(!error.is_transient());
    let committed = common::scalar(
        &primary,
        "SELECT count(*) FROM notes WHERE name = 'unconfirmed'",
    )
    .await;
    assert_eq!(committed, 1, "NotReplicated means committed on the primary");

    // A longer bound: the call is still waiting while the receiver is stopped, and
    // returns once it runs again; at that moment the standby has the row.
    let call = tokio::spawn({
        let db = db.clone();
        async move { add_replicated_20s(&db, "confirmed").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !call.is_finished(),
        "the call returned while the standby could not have its commit"
    );
    frozen.thaw();
    call.await
        .expect("the call's task")
        .expect("confirmed once the standby flushed it");
    // Freeze the standby again at once: what it has now, it had at the
    // acknowledgement (or a few milliseconds later, never less).
    let frozen = Frozen::receiver_of(&standby).await;
    assert!(
        standby_has(&standby, "confirmed").await,
        "acknowledged, but the standby lacks the row"
    );
    frozen.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_call_without_a_standby_ends_not_replicated_and_its_key_settles_it_later() {
    let (primary, replica, db, standby) = set_up().await;
    until_streaming(&primary).await;
    add_once(&db, "k0", "before").await.expect("confirmed");
    drop(standby);

    replica.stop_fast().await.expect("stop the replica");
    let started = Instant::now();
    let error = add_once(&db, "k1", "alone")
        .await
        .expect_err("no standby to confirm");
    let waited = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::NotReplicated, "{error}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "ended after {waited:?}"
    );
    assert!(
        error
            .to_string()
            .contains("no standby is streaming from this primary"),
        "{error}"
    );
    // Repeated with its key while still alone: the stored result is not handed out
    // as safe either.
    let again = add_once(&db, "k1", "alone").await.expect_err("still alone");
    assert_eq!(again.kind(), ErrorKind::NotReplicated, "{again}");

    replica
        .start_again()
        .await
        .expect("start the replica again");
    until_streaming(&primary).await;
    let id = add_once(&db, "k1", "alone")
        .await
        .expect("the standby has it now: the stored result");
    let admin = primary.admin().await.expect("an admin connection");
    let rows = admin
        .query("SELECT id FROM notes WHERE name = 'alone'", &[])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1, "the body ran once");
    assert_eq!(rows[0].get::<_, i64>(0), id);
    let metrics = db.metrics();
    assert!(metrics.stored_results_returned >= 1, "{metrics:?}");
}

//! `replicated = "…"` against a Patroni cluster that replicates asynchronously: a call
//! returns once the standby has flushed its commit, and ends `NotReplicated` within
//! its bound when the standby receives nothing (its WAL receiver stopped) or is gone.

use std::time::{Duration, Instant};

use resilient_tx::tokio_postgres::{self, Client, NoTls};
use resilient_tx::{Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{PatroniCluster, init_tracing};

/// How long the cluster may take to be whole again after a node comes back.
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

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a connection of the test's own");
    tokio::spawn(connection);
    client
}

/// An asynchronous two-node cluster, the `notes` table on it, a `Db` on the leader,
/// and a connection of the test's own to the standby.
async fn set_up() -> (PatroniCluster, Db, Client) {
    init_tracing();
    let cluster = PatroniCluster::builder()
        .synchronous_mode(false)
        .start()
        .await
        .expect("a Patroni cluster");
    let primary = connect(&cluster.nodes()[0].url()).await;
    primary
        .batch_execute("CREATE TABLE notes (id bigserial PRIMARY KEY, name text UNIQUE NOT NULL)")
        .await
        .expect("the table");
    let db = Db::builder(&cluster.nodes()[0].url())
        .pool_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("a valid configuration");
    let standby = connect(&cluster.nodes()[1].url()).await;
    (cluster, db, standby)
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
    let (cluster, db, standby) = set_up().await;
    add(&db, "warm-up").await.expect("a plain write");

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
        ) && message.contains("node1 has flushed up to"),
        "{message}"
    );
    assert!(!error.is_transient());
    let primary = connect(&cluster.nodes()[0].url()).await;
    let committed: i64 = primary
        .query_one("SELECT count(*) FROM notes WHERE name = 'unconfirmed'", &[])
        .await
        .expect("count")
        .get(0);
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
    let (cluster, db, standby) = set_up().await;
    add_once(&db, "k0", "before").await.expect("confirmed");
    drop(standby);

    cluster.kill_node(1).await.expect("kill the standby's node");
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

    cluster
        .start_node(1)
        .expect("start the standby's node again");
    assert_eq!(cluster.wait_healthy(REJOIN).await.expect("whole again"), 0);
    let id = add_once(&db, "k1", "alone")
        .await
        .expect("the standby has it now: the stored result");
    let primary = connect(&cluster.nodes()[0].url()).await;
    let rows = primary
        .query("SELECT id FROM notes WHERE name = 'alone'", &[])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1, "the body ran once");
    assert_eq!(rows[0].get::<_, i64>(0), id);
    let metrics = db.metrics();
    assert!(metrics.stored_results_returned >= 1, "{metrics:?}");
}

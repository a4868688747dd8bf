//! One-shot cuts of COMMIT and of the verification probe: who is re-run, who is
//! settled by verification, and a probe that loses its own reply.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilient_tx::{CommitVerification, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{CutPoint, CutRule};

use crate::common::{bounded, chaos_db, scalar, setup};

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

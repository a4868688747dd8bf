//! What an idempotency key stands for: one request to one function. Methods of two
//! types in one module keep their keys apart; a key that comes back with other
//! arguments is `KeyReused` instead of the first request's result; and a key table
//! created by an older version (without the fingerprint column) keeps working.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilient_tx::{Db, ErrorKind, Tx, TxError, retriable_tx};
use resilient_tx_testkit::PgCluster;
use serde::Serialize;

use crate::common::{cluster, db, exec, scalar};

const SCHEMA: &str = "CREATE TABLE entries(id serial PRIMARY KEY, kind text, note text)";

/// Orders and refunds of one module, each with a keyed `create`.
struct Orders {
    runs: AtomicU32,
}

struct Refunds {
    runs: AtomicU32,
}

impl Orders {
    #[retriable_tx(idempotency_key = key)]
    async fn create(&self, tx: &mut Tx<'_>, key: &str) -> Result<String, TxError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let row = tx
            .query_one(
                "INSERT INTO entries(kind) VALUES ('order') RETURNING 'order ' || id",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }
}

impl Refunds {
    #[retriable_tx(idempotency_key = key)]
    async fn create(&self, tx: &mut Tx<'_>, key: &str) -> Result<String, TxError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let row = tx
            .query_one(
                "INSERT INTO entries(kind) VALUES ('refund') RETURNING 'refund ' || id",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }
}

/// `Orders::create` and `Refunds::create` live in one module: the same key is two
/// keys, each body runs and each call returns its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_named_alike_on_two_types_of_one_module_keep_their_keys_apart() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let db = db(&cluster.url()).await;
    let orders = Orders {
        runs: AtomicU32::new(0),
    };
    let refunds = Refunds {
        runs: AtomicU32::new(0),
    };

    let order = orders.create(&db, "req-1").await.expect("order");
    let refund = refunds.create(&db, "req-1").await.expect("refund");
    assert!(order.starts_with("order "), "{order}");
    assert!(refund.starts_with("refund "), "{refund}");
    assert_eq!(
        (
            orders.runs.load(Ordering::SeqCst),
            refunds.runs.load(Ordering::SeqCst)
        ),
        (1, 1),
        "both bodies ran"
    );
    // Each type's key still returns that type's stored result.
    assert_eq!(orders.create(&db, "req-1").await.expect("again"), order);
    assert_eq!(refunds.create(&db, "req-1").await.expect("again"), refund);
    assert_eq!(orders.runs.load(Ordering::SeqCst), 1);
    let scopes = scalar(
        &cluster,
        "SELECT count(DISTINCT scope) FROM resilient_tx.idempotency_keys \
         WHERE scope LIKE '%::Orders::create' OR scope LIKE '%::Refunds::create'",
    )
    .await;
    assert_eq!(scopes, 2, "scoped by the types' paths");
}

/// Associated functions that never mention `Self` cannot be told from free functions
/// by the attribute: `key_scope` gives each its own scope.
struct Invoices;
struct Credits;

impl Invoices {
    #[retriable_tx(idempotency_key = key, key_scope = "billing::invoices::open")]
    async fn open(tx: &mut Tx<'_>, key: &str) -> Result<i32, TxError> {
        let row = tx
            .query_one(
                "INSERT INTO entries(kind) VALUES ('invoice') RETURNING id",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }
}

impl Credits {
    #[retriable_tx(idempotency_key = key, key_scope = "billing::credits::open")]
    async fn open(tx: &mut Tx<'_>, key: &str) -> Result<i32, TxError> {
        let row = tx
            .query_one(
                "INSERT INTO entries(kind) VALUES ('credit') RETURNING id",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_scope_keeps_associated_functions_apart() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let db = db(&cluster.url()).await;
    let invoice = Invoices::open(&db, "req-1").await.expect("invoice");
    let credit = Credits::open(&db, "req-1").await.expect("credit");
    assert_ne!(invoice, credit, "two bodies ran");
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM entries").await, 2);
    assert_eq!(
        scalar(
            &cluster,
            "SELECT count(*) FROM resilient_tx.idempotency_keys \
             WHERE scope IN ('billing::invoices::open', 'billing::credits::open')"
        )
        .await,
        2
    );
}

/// Not `Serialize`: a parameter of this type is not part of the fingerprint.
struct Audit<'a> {
    runs: &'a AtomicU32,
}

#[derive(Serialize)]
struct Line {
    item: String,
    qty: i32,
}

#[retriable_tx(idempotency_key = key)]
async fn place(tx: &mut Tx<'_>, key: &str, line: &Line, audit: &Audit<'_>) -> Result<i32, TxError> {
    audit.runs.fetch_add(1, Ordering::SeqCst);
    let row = tx
        .query_one(
            "INSERT INTO entries(kind, note) VALUES ('order', $1) RETURNING id",
            &[&line.item],
        )
        .await?;
    Ok(row.get(0))
}

fn line(item: &str, qty: i32) -> Line {
    Line {
        item: item.to_owned(),
        qty,
    }
}

/// The same key with the same arguments is the stored result; with another argument
/// it is `KeyReused` after one attempt, the body not run. A parameter that is not
/// `Serialize` plays no part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_with_other_arguments_is_key_reused_and_the_body_does_not_run() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let db = db(&cluster.url()).await;
    let (runs, other_runs) = (AtomicU32::new(0), AtomicU32::new(0));
    let audit = Audit { runs: &runs };

    let first = place(&db, "req-1", &line("book", 1), &audit)
        .await
        .expect("first");
    let repeated = place(&db, "req-1", &line("book", 1), &Audit { runs: &other_runs })
        .await
        .expect("the same request, another audit handle");
    assert_eq!(repeated, first, "the stored result");

    let error = place(&db, "req-1", &line("book", 2), &audit)
        .await
        .expect_err("another quantity under the same key");
    assert_eq!(error.kind(), ErrorKind::KeyReused, "{error}");
    assert_eq!(error.kind().as_str(), "key_reused");
    assert!(!error.is_transient(), "{error}");
    assert_eq!(error.attempts(), 1, "never retried: {error}");
    assert!(
        error.to_string().contains("idempotency key \"req-1\"")
            && error
                .to_string()
                .contains("was already used with other arguments"),
        "{error}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst) + other_runs.load(Ordering::SeqCst),
        1,
        "the body ran for the first call only"
    );
    assert_eq!(scalar(&cluster, "SELECT count(*) FROM entries").await, 1);
    assert_eq!(db.metrics().stored_results_returned, 1);
}

/// `key_fingerprint` says what identifies a request: here the item only, so a new
/// note is the same request and a new item is not.
#[retriable_tx(idempotency_key = key, key_fingerprint = item)]
async fn note(tx: &mut Tx<'_>, key: &str, item: &str, note: &str) -> Result<i32, TxError> {
    let row = tx
        .query_one(
            "INSERT INTO entries(kind, note) VALUES ($1, $2) RETURNING id",
            &[&item, &note],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fingerprint_replaces_the_arguments() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    let db = db(&cluster.url()).await;
    let first = note(&db, "req-1", "book", "first").await.expect("first");
    let same = note(&db, "req-1", "book", "edited note")
        .await
        .expect("same item");
    assert_eq!(same, first);
    let error = note(&db, "req-1", "pen", "first")
        .await
        .expect_err("another item");
    assert_eq!(error.kind(), ErrorKind::KeyReused, "{error}");
}

/// A key table as an older version created it: no fingerprint column.
const OLDER_KEY_TABLE: &str = "CREATE SCHEMA resilient_tx;
     CREATE TABLE resilient_tx.idempotency_keys (
         scope text NOT NULL,
         key text NOT NULL,
         result jsonb,
         created_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (scope, key));";

/// A role that owns the older table adds the column on first use, and fingerprints
/// work; a key stored before (without a fingerprint) keeps its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_key_table_gains_the_fingerprint_column_where_the_role_may() {
    let cluster = cluster().await;
    exec(&cluster, SCHEMA).await;
    exec(&cluster, OLDER_KEY_TABLE).await;
    let db = db(&cluster.url()).await;
    let runs = AtomicU32::new(0);
    let audit = Audit { runs: &runs };

    let first = place(&db, "req-1", &line("book", 1), &audit)
        .await
        .expect("first");
    assert_eq!(
        scalar(
            &cluster,
            "SELECT count(*) FROM resilient_tx.idempotency_keys WHERE fingerprint IS NOT NULL"
        )
        .await,
        1,
        "the column was added and filled"
    );
    let error = place(&db, "req-1", &line("book", 2), &audit)
        .await
        .expect_err("other arguments");
    assert_eq!(error.kind(), ErrorKind::KeyReused, "{error}");
    assert_eq!(
        place(&db, "req-1", &line("book", 1), &audit)
            .await
            .expect("same"),
        first
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
    fn warnings_with(&self, text: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains("WARN") && line.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

/// A role that may only read and write the older table cannot add the column: keys
/// keep working (a repeated key returns its result), without the fingerprint check,
/// and one warning says so. (A current-thread runtime, so that the subscriber set for
/// this thread sees the calls' events.)
#[tokio::test]
async fn an_older_key_table_the_role_may_not_alter_keeps_working_without_the_check() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = PgCluster::start().await.expect("start a PostgreSQL server");
    exec(&cluster, SCHEMA).await;
    exec(&cluster, OLDER_KEY_TABLE).await;
    exec(
        &cluster,
        "CREATE ROLE app LOGIN;
         GRANT SELECT, INSERT ON entries TO app;
         GRANT USAGE ON SEQUENCE entries_id_seq TO app;
         GRANT USAGE ON SCHEMA resilient_tx TO app;
         GRANT SELECT, INSERT, UPDATE, DELETE ON resilient_tx.idempotency_keys TO app;",
    )
    .await;
    let url = format!("postgres://app@127.0.0.1:{}/postgres", cluster.port());
    let db = Db::builder(&url)
        .pool_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("configuration");
    let runs = AtomicU32::new(0);
    let audit = Audit { runs: &runs };

    let first = place(&db, "req-1", &line("book", 1), &audit)
        .await
        .expect("keys work on the older table");
    let other = place(&db, "req-1", &line("book", 2), &audit)
        .await
        .expect("without fingerprints the first result stands");
    assert_eq!(other, first);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let warnings = captured.warnings_with("resilient_tx.idempotency_keys");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    for part in [
        "created by an older version",
        "role \"app\" could not add what it lacks",
        "KeyReused",
        "ALTER TABLE resilient_tx.idempotency_keys ADD COLUMN IF NOT EXISTS fingerprint text",
    ] {
        assert!(warnings[0].contains(part), "{part:?} in {}", warnings[0]);
    }
    assert_eq!(
        scalar(
            &cluster,
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'idempotency_keys' AND column_name = 'fingerprint'"
        )
        .await,
        0,
        "the table was left as it was"
    );
}

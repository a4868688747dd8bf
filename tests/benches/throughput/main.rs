//! Throughput of one small write transaction (UPDATE, SELECT, INSERT) and of one
//! read, run several ways against the same local servers, interleaved in one run so
//! they share its conditions:
//!
//! * `#[retriable_tx]` — the code a user writes with resilient-tx — once per way of
//!   verifying commits (`contenders::VERIFICATIONS`), and once with its statement
//!   cache off (every statement sent unnamed, parsed each time);
//! * hand-written bb8-postgres — checkout (a ping), `transaction()`, unprepared
//!   statements, `commit()`;
//! * hand-written deadpool-postgres — checkout without a ping, `prepare_cached`;
//! * hand-written sqlx — `PgPool` with its defaults (a ping on acquire, its statement
//!   cache), `begin()`, `commit()`;
//! * `#[retriable_tx]` and deadpool-postgres over TLS, on a TLS-only server of its
//!   own (the certificate and host name verified).
//!
//! Then the writes with 1 ms of latency added each way by the testkit's proxy, where
//! every round trip counts. Each table prints transactions per second, ratios, the
//! CPU time one transaction costs the client and the server (see `cpu.rs`) and the
//! WAL it writes; after the run, what the runtime's tables (commit markers) weigh.
//! Run: `cargo bench -p resilient-tx-testkit --bench throughput`
//! (`BENCH_PERIOD_MS` sets the length of a round, 2000 by default).

mod contenders;
mod cpu;
mod measure;
mod server;
mod work;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use resilient_tx::CommitVerification;
use resilient_tx_testkit::{FaultProxy, PgCluster, SUPERUSER};

use crate::contenders::{Contender, Target, VERIFICATIONS, Work};
use crate::measure::{Table, measure, print_cost};
use crate::server::Server;

const WRITE: &str = "#[retriable_tx]";
const READ: &str = "#[retriable_tx] read";

/// The TLS-only server, reached two ways.
struct Tls {
    /// `sslmode=verify-full`, for the runtime.
    verify_full: Target,
    /// `sslmode=require`, for tokio-postgres with a verifying rustls connector.
    require: Target,
    /// The authority that signed the server's certificate.
    ca: PathBuf,
}

/// The name of the `#[retriable_tx]` row verified by `verification`.
fn row(prefix: &str, verification: CommitVerification) -> String {
    let (method, _) = VERIFICATIONS
        .iter()
        .find(|(_, v)| *v == verification)
        .expect("every verification priced has a row");
    format!("{prefix}, {method}")
}

/// Each verification's cost against verification off.
fn print_verification_costs(table: &Table, prefix: &str) {
    let off = row(prefix, CommitVerification::Off);
    for &(method, verification) in VERIFICATIONS {
        if verification != CommitVerification::Off {
            let priced = row(prefix, verification);
            print_cost(table, &format!("{prefix}, {method}"), &priced, &off);
        }
    }
}

/// The write table: every library on `target`, and over TLS when given.
async fn writes(label: &str, target: &Target, tls: Option<&Tls>, period: Duration) {
    let default = row(WRITE, CommitVerification::default());
    let uncached = format!("{WRITE}, no statement cache");
    let mut rows = Contender::per_verification(WRITE, target, Work::Write).await;
    rows.extend([
        Contender::retriable(&*uncached, target, Work::Write, Default::default(), false).await,
        Contender::bb8("bb8-postgres", target, Work::Write).await,
        Contender::deadpool("deadpool-postgres", target, Work::Write, None).await,
        Contender::sqlx("sqlx", target, Work::Write).await,
    ]);
    let (tls_write, tls_deadpool) = (format!("{WRITE} over TLS"), "deadpool-postgres over TLS");
    if let Some(tls) = tls {
        rows.extend([
            Contender::retriable(
                &*tls_write,
                &tls.verify_full,
                Work::Write,
                Default::default(),
                true,
            )
            .await,
            Contender::deadpool(tls_deadpool, &tls.require, Work::Write, Some(&tls.ca)).await,
        ]);
    }
    let table = measure(label, &rows, period).await;
    if let Some(tls) = tls {
        // Still connected: the rows hold their pools.
        let (encrypted, plain) = tls.verify_full.server.tcp_clients_by_encryption().await;
        assert!(
            encrypted > 0 && plain == 0,
            "the TLS rows must run over TLS: {encrypted} connections encrypted, {plain} not"
        );
    }
    print_verification_costs(&table, WRITE);
    print_cost(&table, "a parse per statement", &uncached, &default);
    if tls.is_some() {
        print_cost(&table, "TLS, #[retriable_tx]", &tls_write, &default);
        print_cost(
            &table,
            "TLS, deadpool-postgres",
            tls_deadpool,
            "deadpool-postgres",
        );
    }
}

/// The read table on `target`.
async fn reads(label: &str, target: &Target, period: Duration) {
    let default = row(READ, CommitVerification::default());
    let uncached = format!("{READ}, no statement cache");
    let mut rows = Contender::per_verification(READ, target, Work::Read).await;
    rows.extend([
        Contender::retriable(&*uncached, target, Work::Read, Default::default(), false).await,
        Contender::bb8("bb8-postgres read", target, Work::Read).await,
        Contender::deadpool("deadpool-postgres read", target, Work::Read, None).await,
        Contender::sqlx("sqlx read", target, Work::Read).await,
    ]);
    let table = measure(label, &rows, period).await;
    print_verification_costs(&table, READ);
    print_cost(&table, "a parse per statement", &uncached, &default);
}

/// What the runtime's own tables weigh after the run.
async fn print_runtime_tables(servers: &[&Server]) {
    println!("\nthe runtime's tables after the run");
    for server in servers {
        for table in server.runtime_tables().await {
            println!(
                "{}: {} holds {} rows in {} kB ({:.0} bytes a row, indexes included)",
                server.name,
                table.name,
                table.rows,
                table.bytes / 1024,
                table.bytes as f64 / table.rows.max(1) as f64,
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let period = std::env::var("BENCH_PERIOD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2));

    let cluster = PgCluster::start().await.expect("start PostgreSQL");
    let tls_cluster = PgCluster::builder()
        .tls()
        .start()
        .await
        .expect("start a TLS-only PostgreSQL");
    let local = Arc::new(Server::new("local server", &cluster).await);
    let tls_server = Arc::new(Server::new("TLS-only server", &tls_cluster).await);

    let plain = Target {
        url: cluster.url(),
        server: Arc::clone(&local),
    };
    let ca = tls_cluster.tls().expect("a TLS-only cluster").ca_cert();
    // `localhost`: the name the server's certificate is for.
    let tls_url = format!(
        "postgres://{SUPERUSER}@localhost:{}/postgres",
        tls_cluster.port()
    );
    let tls = Tls {
        verify_full: Target {
            url: format!("{tls_url}?sslmode=verify-full&sslrootcert={}", ca.display()),
            server: Arc::clone(&tls_server),
        },
        require: Target {
            url: format!("{tls_url}?sslmode=require"),
            server: Arc::clone(&tls_server),
        },
        ca: ca.to_path_buf(),
    };

    writes("local server", &plain, Some(&tls), period).await;
    reads("local server, reads", &plain, period).await;

    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    proxy.latency(Duration::from_millis(1));
    let delayed = Target {
        url: cluster.url_via(&proxy),
        server: Arc::clone(&local),
    };
    writes("1 ms added each way", &delayed, None, period).await;

    print_runtime_tables(&[&local, &tls_server]).await;
}

//! The contenders: who runs a transaction (a library and its pool, set up the way
//! its users set it up), which transaction, and on which server. A contender is one
//! row of a table; it runs `TASKS` workers for a round and counts what they did.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, RecyclingMethod, Runtime};
use resilient_tx::{CommitVerification, Db};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::server::Server;
use crate::work::{self, Bb8Pool};

/// Concurrent workers per contender.
pub const TASKS: usize = 16;
/// Connections per pool.
pub const POOL_SIZE: u32 = 8;

/// The ways of verifying commits that the tables price, one `#[retriable_tx]` row
/// each, named in the rows; `Off` is the baseline the others are priced against.
/// A new method is one more entry here.
pub const VERIFICATIONS: &[(&str, CommitVerification)] = &[
    (
        "by fenced counter (the default)",
        CommitVerification::FencedCounter,
    ),
    ("by marker row", CommitVerification::MarkerRow),
    ("by transaction status", CommitVerification::TransactionId),
    ("verification off", CommitVerification::Off),
];

/// Which transaction a contender runs.
#[derive(Clone, Copy)]
pub enum Work {
    /// UPDATE, SELECT, INSERT.
    Write,
    /// One SELECT, in a transaction that is not declared read-only.
    Read,
}

/// A library with its pool.
#[derive(Clone)]
enum Runner {
    Retriable(Db),
    Bb8(Bb8Pool),
    Deadpool(deadpool_postgres::Pool),
    Sqlx(PgPool),
}

/// Where contenders connect: a URL, and the server behind it for the measurements.
pub struct Target {
    pub url: String,
    pub server: Arc<Server>,
}

/// One row of a table.
#[derive(Clone)]
pub struct Contender {
    pub name: String,
    pub server: Arc<Server>,
    runner: Runner,
    work: Work,
}

impl Contender {
    /// `#[retriable_tx]` with `verification`, its statement cache on or off.
    pub async fn retriable(
        name: impl Into<String>,
        target: &Target,
        work: Work,
        verification: CommitVerification,
        statement_cache: bool,
    ) -> Contender {
        let db = Db::builder(&target.url)
            .max_size(POOL_SIZE)
            .commit_verification(verification)
            .statement_cache(statement_cache)
            .build()
            .await
            .expect("Db");
        Contender::new(name, target, work, Runner::Retriable(db))
    }

    /// One `#[retriable_tx]` row per entry of [`VERIFICATIONS`], named `prefix, method`.
    pub async fn per_verification(prefix: &str, target: &Target, work: Work) -> Vec<Contender> {
        let mut rows = Vec::with_capacity(VERIFICATIONS.len());
        for &(method, verification) in VERIFICATIONS {
            let name = format!("{prefix}, {method}");
            rows.push(Contender::retriable(name, target, work, verification, true).await);
        }
        rows
    }

    /// Hand-written bb8-postgres, plain text.
    pub async fn bb8(name: impl Into<String>, target: &Target, work: Work) -> Contender {
        let manager = bb8_postgres::PostgresConnectionManager::new_from_stringlike(
            target.url.as_str(),
            NoTls,
        )
        .expect("url");
        let pool = bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .build(manager)
            .await
            .expect("bb8 pool");
        Contender::new(name, target, work, Runner::Bb8(pool))
    }

    /// Hand-written deadpool-postgres; over TLS when `tls` holds the certificate
    /// authority to verify the server against (the URL then says `sslmode=require`,
    /// and rustls checks the certificate and the host name, as `verify-full` does).
    pub async fn deadpool(
        name: impl Into<String>,
        target: &Target,
        work: Work,
        tls: Option<&std::path::Path>,
    ) -> Contender {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(target.url.clone());
        config.manager = Some(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        config.pool = Some(deadpool_postgres::PoolConfig::new(POOL_SIZE as usize));
        let runtime = Some(Runtime::Tokio1);
        let pool = match tls {
            None => config.create_pool(runtime, NoTls),
            Some(ca) => config.create_pool(runtime, rustls_connector(ca)),
        }
        .expect("deadpool");
        Contender::new(name, target, work, Runner::Deadpool(pool))
    }

    /// Hand-written sqlx: a `PgPool` with its defaults.
    pub async fn sqlx(name: impl Into<String>, target: &Target, work: Work) -> Contender {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(&target.url)
            .await
            .expect("sqlx pool");
        Contender::new(name, target, work, Runner::Sqlx(pool))
    }

    fn new(name: impl Into<String>, target: &Target, work: Work, runner: Runner) -> Contender {
        Contender {
            name: name.into(),
            server: Arc::clone(&target.server),
            runner,
            work,
        }
    }

    /// One transaction; panics on failure (nothing here is meant to fail, and a
    /// failure would make the figures meaningless).
    async fn once(&self, id: i32) {
        let outcome = match (&self.runner, self.work) {
            (Runner::Retriable(db), Work::Write) => work::bump(db, id).await.map_err(Into::into),
            (Runner::Retriable(db), Work::Read) => work::peek(db, id).await.map_err(Into::into),
            (Runner::Bb8(pool), Work::Write) => work::bump_bb8(pool, id).await,
            (Runner::Bb8(pool), Work::Read) => work::peek_bb8(pool, id).await,
            (Runner::Deadpool(pool), Work::Write) => work::bump_deadpool(pool, id).await,
            (Runner::Deadpool(pool), Work::Read) => work::peek_deadpool(pool, id).await,
            (Runner::Sqlx(pool), Work::Write) => {
                work::bump_sqlx(pool, id).await.map_err(Into::into)
            }
            (Runner::Sqlx(pool), Work::Read) => work::peek_sqlx(pool, id).await.map_err(Into::into),
        };
        if let Err(error) = outcome {
            panic!("{}: benchmark transaction failed: {error}", self.name);
        }
    }

    /// Runs `TASKS` workers for `period`; returns transactions done.
    pub async fn run(&self, period: Duration) -> u64 {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..TASKS)
            .map(|task| {
                let (this, done, stop) = (self.clone(), done.clone(), stop.clone());
                tokio::spawn(async move {
                    let id = task as i32 + 1;
                    while !stop.load(Ordering::Relaxed) {
                        this.once(id).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(period).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.expect("worker");
        }
        done.load(Ordering::Relaxed)
    }
}

/// tokio-postgres-rustls with the ring provider, trusting only the authority in the
/// PEM file `ca`.
fn rustls_connector(ca: &std::path::Path) -> MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

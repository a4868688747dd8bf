//! Throughput of one small write transaction (UPDATE, SELECT, INSERT) run three ways
//! on the same local server, interleaved in one run so they share its conditions:
//!
//! * `#[retriable_tx]` — the code a user writes with resilient-tx;
//! * hand-written bb8-postgres — checkout (a ping), `transaction()`, unprepared
//!   statements, `commit()`;
//! * hand-written deadpool-postgres — checkout without a ping, `prepare_cached`;
//! * `#[retriable_tx]` with commit verification off, and with verification by
//!   transaction status instead of the default marker row, to price each.
//!
//! Then the same with 1 ms of latency added each way by the testkit's proxy, where
//! every round trip counts. Prints transactions per second and ratios against
//! bb8-postgres. Run: `cargo bench -p resilient-tx-testkit --bench throughput`.

mod cpu;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{ManagerConfig, RecyclingMethod, Runtime};
use resilient_tx::{CommitVerification, Db, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{FaultProxy, PgCluster};

use crate::cpu::CpuTime;
use tokio_postgres::NoTls;

const TASKS: usize = 16;
const POOL_SIZE: u32 = 8;
const ROUNDS: usize = 5;

const UPDATE: &str = "UPDATE bench_counters SET n = n + 1 WHERE id = $1";
const SELECT: &str = "SELECT n FROM bench_counters WHERE id = $1";
const INSERT: &str = "INSERT INTO bench_log(counter, n) VALUES ($1, $2)";

#[retriable_tx]
async fn bump(tx: &mut Tx<'_>, id: i32) -> Result<i64, TxError> {
    tx.execute(UPDATE, &[&id]).await?;
    let n: i64 = tx.query_one(SELECT, &[&id]).await?.get(0);
    tx.execute(INSERT, &[&id, &n]).await?;
    Ok(n)
}

type Bb8Pool = bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>;

async fn bump_bb8(pool: &Bb8Pool, id: i32) -> Result<i64, Box<dyn std::error::Error>> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    tx.execute(UPDATE, &[&id]).await?;
    let n: i64 = tx.query_one(SELECT, &[&id]).await?.get(0);
    tx.execute(INSERT, &[&id, &n]).await?;
    tx.commit().await?;
    Ok(n)
}

async fn bump_deadpool(
    pool: &deadpool_postgres::Pool,
    id: i32,
) -> Result<i64, Box<dyn std::error::Error>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let update = tx.prepare_cached(UPDATE).await?;
    let select = tx.prepare_cached(SELECT).await?;
    let insert = tx.prepare_cached(INSERT).await?;
    tx.execute(&update, &[&id]).await?;
    let n: i64 = tx.query_one(&select, &[&id]).await?.get(0);
    tx.execute(&insert, &[&id, &n]).await?;
    tx.commit().await?;
    Ok(n)
}

#[derive(Clone)]
struct Contenders {
    db: Db,
    db_unverified: Db,
    db_by_status: Db,
    bb8: Bb8Pool,
    deadpool: deadpool_postgres::Pool,
}

impl Contenders {
    async fn new(url: &str) -> Contenders {
        let db_with = async |verification| {
            Db::builder(url)
                .max_size(POOL_SIZE)
                .commit_verification(verification)
                .build()
                .await
                .expect("Db")
        };
        let db = db_with(CommitVerification::default()).await;
        let db_unverified = db_with(CommitVerification::Off).await;
        let db_by_status = db_with(CommitVerification::TransactionId).await;
        let bb8 = bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .build(
                bb8_postgres::PostgresConnectionManager::new_from_stringlike(url, NoTls)
                    .expect("url"),
            )
            .await
            .expect("bb8 pool");
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        config.manager = Some(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        config.pool = Some(deadpool_postgres::PoolConfig::new(POOL_SIZE as usize));
        let deadpool = config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .expect("deadpool");
        Contenders {
            db,
            db_unverified,
            db_by_status,
            bb8,
            deadpool,
        }
    }

    /// Runs `TASKS` workers of one contender for `period`; returns transactions done.
    async fn run(&self, which: usize, period: Duration) -> u64 {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..TASKS)
            .map(|task| {
                let (this, done, stop) = (self.clone(), done.clone(), stop.clone());
                tokio::spawn(async move {
                    let id = task as i32 + 1;
                    while !stop.load(Ordering::Relaxed) {
                        let ok = match which {
                            0 => bump(&this.db, id).await.is_ok(),
                            1 => bump_bb8(&this.bb8, id).await.is_ok(),
                            2 => bump_deadpool(&this.deadpool, id).await.is_ok(),
                            3 => bump(&this.db_unverified, id).await.is_ok(),
                            _ => bump(&this.db_by_status, id).await.is_ok(),
                        };
                        assert!(ok, "benchmark transaction failed");
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

const CONTENDERS: usize = 5;
const NAMES: [&str; CONTENDERS] = [
    "#[retriable_tx]",
    "bb8-postgres (hand-written)",
    "deadpool-postgres + prepare_cached",
    "#[retriable_tx], verification off",
    "#[retriable_tx], by transaction status",
];

async fn measure(label: &str, url: &str, postmaster: u32, period: Duration) {
    let contenders = Contenders::new(url).await;
    // Warm every pool and statement cache before measuring.
    for which in 0..CONTENDERS {
        contenders.run(which, Duration::from_millis(300)).await;
    }
    let mut totals = [0u64; CONTENDERS];
    let mut elapsed = [Duration::ZERO; CONTENDERS];
    let mut cpu = [Some(CpuTime::default()); CONTENDERS];
    for _ in 0..ROUNDS {
        for which in 0..CONTENDERS {
            let (started, cpu_before) = (Instant::now(), CpuTime::now(postmaster));
            totals[which] += contenders.run(which, period).await;
            elapsed[which] += started.elapsed();
            let used = CpuTime::now(postmaster)
                .zip(cpu_before)
                .map(|(a, b)| a.since(b));
            cpu[which] = cpu[which].zip(used).map(|(sum, used)| sum + used);
        }
    }
    let tps: Vec<f64> = (0..CONTENDERS)
        .map(|i| totals[i] as f64 / elapsed[i].as_secs_f64())
        .collect();
    // Microseconds of CPU per transaction: (client, server).
    let cpu_per_tx: Vec<Option<(f64, f64)>> = (0..CONTENDERS)
        .map(|i| {
            let per_tx = |d: Duration| d.as_secs_f64() * 1e6 / totals[i].max(1) as f64;
            cpu[i].map(|c| (per_tx(c.client), per_tx(c.server)))
        })
        .collect();
    println!(
        "\n{label} ({TASKS} tasks, pool of {POOL_SIZE}, {ROUNDS} interleaved rounds of {period:?})"
    );
    println!(
        "{:<38} {:>8} {:>8} {:>9} {:>22}",
        "contender", "tx/s", "vs bb8", "vs dpool", "CPU µs/tx client+server"
    );
    for i in 0..CONTENDERS {
        let cpu = cpu_per_tx[i]
            .map(|(client, server)| format!("{:.0} = {client:.0} + {server:.0}", client + server))
            .unwrap_or_else(|| "n/a".to_owned());
        println!(
            "{:<38} {:>8.0} {:>7.2}x {:>8.2}x {:>22}",
            NAMES[i],
            tps[i],
            tps[i] / tps[1],
            tps[i] / tps[2],
            cpu,
        );
    }
    let cpu_cost = |i: usize| match (cpu_per_tx[i], cpu_per_tx[3]) {
        (Some((c, s)), Some((c0, s0))) => {
            format!(
                ", {:.1}% more CPU per transaction",
                ((c + s) / (c0 + s0) - 1.0) * 100.0
            )
        }
        _ => String::new(),
    };
    println!(
        "commit verification costs, against it off: by marker row (the default) {:.1}% of \
         throughput{}; by transaction status {:.1}% of throughput{}",
        (1.0 - tps[0] / tps[3]) * 100.0,
        cpu_cost(0),
        (1.0 - tps[4] / tps[3]) * 100.0,
        cpu_cost(4),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; with a filter that names nothing here, skip.
    let cluster = PgCluster::start().await.expect("start PostgreSQL");
    let admin = cluster.admin().await.expect("admin");
    admin
        .batch_execute(
            "CREATE TABLE bench_counters(id int PRIMARY KEY, n bigint NOT NULL);
             INSERT INTO bench_counters SELECT g, 0 FROM generate_series(1, 64) g;
             CREATE TABLE bench_log(id bigserial PRIMARY KEY, counter int, n bigint);",
        )
        .await
        .expect("schema");
    let period = std::env::var("BENCH_PERIOD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2));

    let postmaster = cluster.server_pid().expect("the server runs");
    measure("local server", &cluster.url(), postmaster, period).await;

    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    proxy.latency(Duration::from_millis(1));
    measure(
        "1 ms added each way",
        &cluster.url_via(&proxy),
        postmaster,
        period,
    )
    .await;
}

//! Throughput of one small write transaction (UPDATE, SELECT, INSERT) run several
//! ways on the same local server, interleaved in one run so they share its conditions:
//!
//! * `#[retriable_tx]` — the code a user writes with resilient-tx;
//! * hand-written bb8-postgres — checkout (a ping), `transaction()`, unprepared
//!   statements, `commit()`;
//! * hand-written deadpool-postgres — checkout without a ping, `prepare_cached`;
//! * `#[retriable_tx]` with commit verification off, and with verification by
//!   transaction status instead of the default marker row, to price each.
//!
//! Then the same with 1 ms of latency added each way by the testkit's proxy, where
//! every round trip counts; and a transaction that only reads, with each way of
//! verifying commits, since what verification costs depends on whether the
//! transaction wrote. Prints transactions per second, ratios, and the CPU time one
//! transaction costs the client and the server (see `cpu.rs`).
//! Run: `cargo bench -p resilient-tx-testkit --bench throughput`.

mod cpu;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{ManagerConfig, RecyclingMethod, Runtime};
use resilient_tx::{CommitVerification, Db, Tx, TxError, retriable_tx};
use resilient_tx_testkit::{FaultProxy, PgCluster};
use tokio_postgres::NoTls;

use crate::cpu::CpuTime;

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

/// The read-only-in-effect transaction: not declared `read_only`, so commit
/// verification is on for it, as for most reads in an application.
#[retriable_tx]
async fn peek(tx: &mut Tx<'_>, id: i32) -> Result<i64, TxError> {
    Ok(tx.query_one(SELECT, &[&id]).await?.get(0))
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

/// Who runs the transactions.
#[derive(Clone)]
enum Runner {
    Retriable(Db),
    Bb8(Bb8Pool),
    Deadpool(deadpool_postgres::Pool),
}

/// What each transaction does.
#[derive(Clone, Copy)]
enum Work {
    Write,
    Read,
}

/// One line of a table.
#[derive(Clone)]
struct Contender {
    name: &'static str,
    runner: Runner,
    work: Work,
}

impl Contender {
    async fn once(&self, id: i32) -> bool {
        match (&self.runner, self.work) {
            (Runner::Retriable(db), Work::Write) => bump(db, id).await.is_ok(),
            (Runner::Retriable(db), Work::Read) => peek(db, id).await.is_ok(),
            (Runner::Bb8(pool), _) => bump_bb8(pool, id).await.is_ok(),
            (Runner::Deadpool(pool), _) => bump_deadpool(pool, id).await.is_ok(),
        }
    }

    /// Runs `TASKS` workers for `period`; returns transactions done.
    async fn run(&self, period: Duration) -> u64 {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..TASKS)
            .map(|task| {
                let (this, done, stop) = (self.clone(), done.clone(), stop.clone());
                tokio::spawn(async move {
                    let id = task as i32 + 1;
                    while !stop.load(Ordering::Relaxed) {
                        assert!(this.once(id).await, "benchmark transaction failed");
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

/// The pools, one per way of running.
struct Pools {
    marker_row: Db,
    off: Db,
    by_status: Db,
    bb8: Bb8Pool,
    deadpool: deadpool_postgres::Pool,
}

impl Pools {
    async fn new(url: &str) -> Pools {
        let db_with = async |verification| {
            Db::builder(url)
                .max_size(POOL_SIZE)
                .commit_verification(verification)
                .build()
                .await
                .expect("Db")
        };
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
        Pools {
            marker_row: db_with(CommitVerification::default()).await,
            off: db_with(CommitVerification::Off).await,
            by_status: db_with(CommitVerification::TransactionId).await,
            bb8,
            deadpool,
        }
    }

    /// The write transaction, every way: the default first, verification off fourth.
    fn writes(&self) -> Vec<Contender> {
        let write = |name, runner| Contender {
            name,
            runner,
            work: Work::Write,
        };
        vec![
            write(
                "#[retriable_tx]",
                Runner::Retriable(self.marker_row.clone()),
            ),
            write("bb8-postgres (hand-written)", Runner::Bb8(self.bb8.clone())),
            write(
                "deadpool-postgres + prepare_cached",
                Runner::Deadpool(self.deadpool.clone()),
            ),
            write(
                "#[retriable_tx], verification off",
                Runner::Retriable(self.off.clone()),
            ),
            write(
                "#[retriable_tx], by transaction status",
                Runner::Retriable(self.by_status.clone()),
            ),
        ]
    }

    /// The read transaction with each verification: the default first, off second.
    fn reads(&self) -> Vec<Contender> {
        let read = |name, db: &Db| Contender {
            name,
            runner: Runner::Retriable(db.clone()),
            work: Work::Read,
        };
        vec![
            read("#[retriable_tx] read", &self.marker_row),
            read("#[retriable_tx] read, verification off", &self.off),
            read(
                "#[retriable_tx] read, by transaction status",
                &self.by_status,
            ),
        ]
    }
}

/// What one contender did over all rounds.
#[derive(Clone, Copy, Default)]
struct Tally {
    transactions: u64,
    elapsed: Duration,
    cpu: Option<CpuTime>,
}

impl Tally {
    fn per_second(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }

    /// Microseconds of CPU per transaction: (client, server).
    fn cpu_per_transaction(&self) -> Option<(f64, f64)> {
        let per_tx = |d: Duration| d.as_secs_f64() * 1e6 / self.transactions.max(1) as f64;
        self.cpu.map(|c| (per_tx(c.client), per_tx(c.server)))
    }
}

/// Runs `contenders` in interleaved rounds and prints a table; returns the tallies.
async fn measure(
    label: &str,
    contenders: &[Contender],
    postmaster: u32,
    period: Duration,
) -> Vec<Tally> {
    // Warm every pool and statement cache before measuring.
    for contender in contenders {
        contender.run(Duration::from_millis(300)).await;
    }
    let mut tallies = vec![
        Tally {
            cpu: Some(CpuTime::default()),
            ..Tally::default()
        };
        contenders.len()
    ];
    for _ in 0..ROUNDS {
        for (contender, tally) in contenders.iter().zip(&mut tallies) {
            let (started, cpu_before) = (Instant::now(), CpuTime::now(postmaster));
            tally.transactions += contender.run(period).await;
            tally.elapsed += started.elapsed();
            let used = CpuTime::now(postmaster)
                .zip(cpu_before)
                .map(|(after, before)| after.since(before));
            tally.cpu = tally.cpu.zip(used).map(|(sum, used)| sum + used);
        }
    }
    println!(
        "\n{label} ({TASKS} tasks, pool of {POOL_SIZE}, {ROUNDS} interleaved rounds of {period:?})"
    );
    println!(
        "{:<44} {:>8} {:>9} {:>24}",
        "contender", "tx/s", "vs first", "CPU µs/tx client+server"
    );
    for (contender, tally) in contenders.iter().zip(&tallies) {
        let cpu = tally
            .cpu_per_transaction()
            .map(|(client, server)| format!("{:.0} = {client:.0} + {server:.0}", client + server))
            .unwrap_or_else(|| "n/a".to_owned());
        println!(
            "{:<44} {:>8.0} {:>8.2}x {:>24}",
            contender.name,
            tally.per_second(),
            tally.per_second() / tallies[0].per_second(),
            cpu,
        );
    }
    tallies
}

/// Prints what `priced` costs against `baseline`: throughput lost, CPU added.
fn print_cost(what: &str, priced: &Tally, baseline: &Tally) {
    let cpu = match (priced.cpu_per_transaction(), baseline.cpu_per_transaction()) {
        (Some((c, s)), Some((c0, s0))) => {
            format!(
                ", {:+.1}% CPU per transaction",
                ((c + s) / (c0 + s0) - 1.0) * 100.0
            )
        }
        _ => String::new(),
    };
    println!(
        "{what}: {:.1}% of throughput{cpu}",
        (1.0 - priced.per_second() / baseline.per_second()) * 100.0
    );
}

/// The write table, with what each verification costs.
async fn measure_writes(label: &str, url: &str, postmaster: u32, period: Duration) {
    let pools = Pools::new(url).await;
    let mut contenders = pools.writes();
    // bb8 first: the ratios are against it.
    contenders.swap(0, 1);
    let t = measure(label, &contenders, postmaster, period).await;
    print_cost(
        "commit verification by marker row (the default)",
        &t[1],
        &t[3],
    );
    print_cost("commit verification by transaction status", &t[4], &t[3]);
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
    measure_writes("local server", &cluster.url(), postmaster, period).await;

    let pools = Pools::new(&cluster.url()).await;
    let reads = pools.reads();
    let t = measure("local server, reads", &reads, postmaster, period).await;
    print_cost(
        "reads, commit verification by marker row (the default)",
        &t[0],
        &t[1],
    );
    print_cost(
        "reads, commit verification by transaction status",
        &t[2],
        &t[1],
    );

    let proxy = FaultProxy::start(cluster.socket_addr())
        .await
        .expect("proxy");
    proxy.latency(Duration::from_millis(1));
    measure_writes(
        "1 ms added each way",
        &cluster.url_via(&proxy),
        postmaster,
        period,
    )
    .await;
}

//! Interleaved rounds and what they add up to: each contender runs one round in
//! turn, `ROUNDS` times, so a change in the machine's load falls on all of them
//! alike. A round's figures are its transactions, its wall time, the CPU time the
//! client and the contender's server spent, and the WAL that server wrote.

use std::time::{Duration, Instant};

use crate::contenders::{Contender, POOL_SIZE, TASKS};
use crate::cpu::CpuTime;

/// Rounds per contender.
const ROUNDS: usize = 5;

/// How long each contender runs before the rounds, to fill its pool and caches.
const WARM_UP: Duration = Duration::from_millis(300);

/// What one contender did over all rounds.
#[derive(Clone, Copy)]
pub struct Tally {
    transactions: u64,
    elapsed: Duration,
    /// `None` once any round could not read `/proc`.
    cpu: Option<CpuTime>,
    wal_bytes: i64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            transactions: 0,
            elapsed: Duration::ZERO,
            cpu: Some(CpuTime::default()),
            wal_bytes: 0,
        }
    }

    pub fn per_second(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }

    /// Microseconds of CPU per transaction: (client, server).
    pub fn cpu_per_transaction(&self) -> Option<(f64, f64)> {
        let per_tx = |d: Duration| d.as_secs_f64() * 1e6 / self.transactions.max(1) as f64;
        self.cpu.map(|c| (per_tx(c.client), per_tx(c.server)))
    }

    /// WAL bytes per transaction: each round's WAL over its transactions, weighted
    /// by the transactions (the sum of the rounds' WAL over the sum of their
    /// transactions).
    pub fn wal_per_transaction(&self) -> f64 {
        self.wal_bytes as f64 / self.transactions.max(1) as f64
    }
}

/// The rows of one table, in the contenders' order.
pub struct Table {
    rows: Vec<(String, Tally)>,
}

impl Table {
    /// The tally of the row named `name`.
    pub fn row(&self, name: &str) -> &Tally {
        self.rows
            .iter()
            .find(|(row, _)| row == name)
            .map(|(_, tally)| tally)
            .unwrap_or_else(|| panic!("no row named {name:?}"))
    }
}

/// Runs `contenders` in interleaved rounds of `period` and prints a table; ratios
/// are against the first row.
pub async fn measure(label: &str, contenders: &[Contender], period: Duration) -> Table {
    for contender in contenders {
        contender.run(WARM_UP).await;
    }
    let mut tallies = vec![Tally::new(); contenders.len()];
    for _ in 0..ROUNDS {
        for (contender, tally) in contenders.iter().zip(&mut tallies) {
            let server = &contender.server;
            let wal_before = server.wal_position().await;
            let (started, cpu_before) = (Instant::now(), server.cpu());
            tally.transactions += contender.run(period).await;
            tally.elapsed += started.elapsed();
            let used = server
                .cpu()
                .zip(cpu_before)
                .map(|(after, before)| after.since(before));
            tally.wal_bytes += server.wal_position().await - wal_before;
            tally.cpu = tally.cpu.zip(used).map(|(sum, used)| sum + used);
        }
    }
    println!(
        "\n{label} ({TASKS} tasks, pool of {POOL_SIZE}, {ROUNDS} interleaved rounds of {period:?})"
    );
    println!(
        "{:<50} {:>8} {:>9} {:>24} {:>9}",
        "contender", "tx/s", "vs first", "CPU µs/tx client+server", "WAL B/tx"
    );
    for (contender, tally) in contenders.iter().zip(&tallies) {
        let cpu = tally
            .cpu_per_transaction()
            .map(|(client, server)| format!("{:.0} = {client:.0} + {server:.0}", client + server))
            .unwrap_or_else(|| "n/a".to_owned());
        println!(
            "{:<50} {:>8.0} {:>8.2}x {:>24} {:>9.0}",
            contender.name,
            tally.per_second(),
            tally.per_second() / tallies[0].per_second(),
            cpu,
            tally.wal_per_transaction(),
        );
    }
    Table {
        rows: contenders
            .iter()
            .map(|c| c.name.clone())
            .zip(tallies)
            .collect(),
    }
}

/// Prints what the row `priced` costs against the row `baseline`: throughput lost,
/// CPU and WAL added per transaction.
pub fn print_cost(table: &Table, what: &str, priced: &str, baseline: &str) {
    let (priced, baseline) = (table.row(priced), table.row(baseline));
    let cpu = match (priced.cpu_per_transaction(), baseline.cpu_per_transaction()) {
        (Some((c, s)), Some((c0, s0))) => format!(
            ", {:+.0} µs CPU per transaction ({:+.1}%)",
            (c + s) - (c0 + s0),
            ((c + s) / (c0 + s0) - 1.0) * 100.0
        ),
        _ => String::new(),
    };
    println!(
        "{what}: {:.1}% of throughput{cpu}, {:+.0} WAL bytes per transaction",
        (1.0 - priced.per_second() / baseline.per_second()) * 100.0,
        priced.wal_per_transaction() - baseline.wal_per_transaction(),
    );
}

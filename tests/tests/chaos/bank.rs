//! Concurrent SERIALIZABLE transfers under random cuts and terminated backends:
//! money is conserved and every transfer that returned Ok is logged once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use resilient_tx::{CommitVerification, Tx, TxError, retriable_tx};
use resilient_tx_testkit::RandomCuts;

use crate::common::{
    bounded, chaos_db, errors_by_kind, run_concurrently, seed, setup, with_app_name,
};

#[retriable_tx(isolation = serializable, deadline = "30s", retries = 20, timeout = "5s")]
async fn transfer(
    tx: &mut Tx<'_>,
    id: &str,
    from: i32,
    to: i32,
    amount: i64,
) -> Result<(), TxError> {
    let balance: i64 = tx
        .query_one("SELECT balance FROM accounts WHERE id = $1", &[&from])
        .await?
        .get(0);
    if balance < amount {
        // Nothing to move; still a logged, successful transfer of 0.
        tx.execute(
            "INSERT INTO transfers(id, src, dst, amount) VALUES ($1, $2, $3, 0)",
            &[&id, &from, &to],
        )
        .await?;
        return Ok(());
    }
    tx.execute(
        "UPDATE accounts SET balance = balance - $2 WHERE id = $1",
        &[&from, &amount],
    )
    .await?;
    tx.execute(
        "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
        &[&to, &amount],
    )
    .await?;
    tx.execute(
        "INSERT INTO transfers(id, src, dst, amount) VALUES ($1, $2, $3, $4)",
        &[&id, &from, &to, &amount],
    )
    .await?;
    Ok(())
}

/// Concurrent SERIALIZABLE transfers under random cuts and backends terminated
/// every few hundred milliseconds: money is neither created nor destroyed, and the
/// transfers log (written in each transfer's transaction, with no unique constraint
/// to hide a duplicate) holds exactly the transfers that returned Ok, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_apply_exactly_once_under_cuts_and_terminations() {
    let seed = seed(0x5eed_0003);
    bounded(Duration::from_secs(150), &format!("seed {seed}"), async {
        const ACCOUNTS: i32 = 10;
        const OPENING: i64 = 1_000;
        let (cluster, proxy) = setup(&format!(
            "CREATE TABLE accounts(id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, {OPENING} FROM generate_series(1, {ACCOUNTS}) g;
             CREATE TABLE transfers(id text NOT NULL, src int, dst int, amount bigint);"
        ))
        .await;
        let cluster = Arc::new(cluster);
        let app = "chaos-bank";
        let db = chaos_db(
            &with_app_name(&cluster.url_via(&proxy), app),
            CommitVerification::default(),
        )
        .await;
        db.migrate().await.expect("runtime tables");

        // Transfers are drawn up front from the seed.
        let calls = 600;
        let plan: Arc<Vec<(i32, i32, i64)>> = Arc::new({
            use rand::{RngExt, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..calls)
                .map(|_| {
                    let from = rng.random_range(1..=ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS) - 1) % ACCOUNTS + 1;
                    (from, to, rng.random_range(1..=200))
                })
                .collect()
        });

        let started = Instant::now();
        proxy.cut_randomly(RandomCuts::new(0.02, seed).commit_rate(0.10));
        let done = Arc::new(AtomicBool::new(false));
        let killer = tokio::spawn({
            let (done, cluster) = (Arc::clone(&done), Arc::clone(&cluster));
            async move {
                let mut killed = 0u64;
                let mut rounds = 0u32;
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    killed += cluster.terminate_backends(app).await.unwrap_or(0);
                    rounds += 1;
                }
                (rounds, killed)
            }
        });
        let outcomes = run_concurrently(calls, {
            let (db, plan) = (db.clone(), Arc::clone(&plan));
            move |i| {
                let (db, plan) = (db.clone(), Arc::clone(&plan));
                async move {
                    let (from, to, amount) = plan[i];
                    transfer(&db, &format!("t-{i}"), from, to, amount).await
                }
            }
        })
        .await;
        done.store(true, Ordering::Relaxed);
        proxy.stop_cutting();
        let (kill_rounds, killed) = killer.await.expect("the killer task");
        let elapsed = started.elapsed();

        let admin = cluster.admin().await.expect("admin");
        let total: i64 = admin
            .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
            .await
            .expect("total")
            .get(0);
        let logged: HashMap<String, i64> = admin
            .query("SELECT id, count(*) FROM transfers GROUP BY id", &[])
            .await
            .expect("log")
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let errors = errors_by_kind(&outcomes);
        let ok: Vec<String> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_ok())
            .map(|(i, _)| format!("t-{i}"))
            .collect();
        eprintln!(
            "seed {seed}: {calls} transfers in {elapsed:?}: {} Ok, errors {errors:?}",
            ok.len()
        );
        eprintln!(
            "seed {seed}: cuts {:?}; {killed} backends terminated in {kill_rounds} rounds",
            proxy.cuts()
        );
        eprintln!("seed {seed}: {:#?}", db.metrics());

        assert_eq!(
            total,
            i64::from(ACCOUNTS) * OPENING,
            "seed {seed}: money created or destroyed"
        );
        let duplicates: Vec<_> = logged.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicates.is_empty(),
            "seed {seed}: applied twice: {duplicates:?}"
        );
        let lost: Vec<_> = ok.iter().filter(|id| !logged.contains_key(*id)).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: returned Ok but not applied: {lost:?}"
        );
        assert_eq!(
            logged.len(),
            ok.len(),
            "seed {seed}: applied although the call failed"
        );
        // The balances are exactly what the logged transfers say.
        let moves = admin
            .query(
                "SELECT a.id, a.balance, \
                        coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)::bigint \
                      - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)::bigint \
                 FROM accounts a ORDER BY a.id",
                &[],
            )
            .await
            .expect("balances");
        for row in moves {
            let (id, balance, net): (i32, i64, i64) = (row.get(0), row.get(1), row.get(2));
            assert_eq!(balance, OPENING + net, "seed {seed}: account {id}");
        }
        assert!(
            !errors.contains_key("CommitUnknown"),
            "seed {seed}: an ambiguous COMMIT was not resolved: {errors:?}"
        );
        assert!(
            errors.is_empty(),
            "seed {seed}: every transfer must succeed: {errors:?}"
        );
        assert!(killed > 0, "seed {seed}: no backend was terminated");
    })
    .await;
}

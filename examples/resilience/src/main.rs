//! The resilience demo: runs the thirteen cases of the resilience matrix against
//! throwaway PostgreSQL servers and prints the matrix.
//!
//! ```text
//! cargo run -p resilience            # every case
//! cargo run -p resilience -- FO-03   # some cases, by id
//! cargo run -p resilience -- --list
//! ```
//!
//! Progress goes to stderr, the matrix to stdout; the exit code is 1 when a case fails,
//! 2 when the arguments or PostgreSQL are not usable. `RUST_LOG` shows the gateway's
//! own logs (default: errors only).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use resilience::Case;
use resilient_tx_testkit::PgCluster;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: resilience [--list] [CASE...]   (CASE: CL-01 … TX-03; default: all)";

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let mut cases = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--list" => {
                for case in Case::ALL {
                    println!("{case}");
                }
                return ExitCode::SUCCESS;
            }
            id => match Case::from_id(id) {
                Some(case) => cases.push(case),
                None => {
                    eprintln!("unknown case {id:?}\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    if cases.is_empty() {
        cases = Case::ALL.to_vec();
    }

    if let Err(error) = preflight().await {
        eprintln!("PostgreSQL is not usable here: {error}");
        return ExitCode::from(2);
    }
    resilience::set_progress(true);
    eprintln!(
        "running {} case(s); each starts its own throwaway servers (a primary, a streaming \
         replica, fault proxies, as it needs) and its own gateway\n",
        cases.len()
    );
    let started = Instant::now();
    let observations = resilience::run_all(&cases).await;
    println!("\n{}", resilience::matrix(&observations));
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
    if observations.iter().all(|o| o.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts a throwaway primary and a streaming replica and checks that a write reaches
/// the replica: every failover case needs exactly that, and a missing PostgreSQL
/// installation is better reported once, up front.
async fn preflight() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    eprintln!("preflight: starting a throwaway primary and a streaming replica …");
    let primary = PgCluster::start().await?;
    let replica = primary.create_replica().await?;
    let admin = primary.admin().await?;
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    admin
        .batch_execute("CREATE TABLE preflight (x int); INSERT INTO preflight VALUES (1)")
        .await?;
    replica.wait_replay_catch_up(&primary).await?;
    let replicated: i64 = replica
        .admin()
        .await?
        .query_one("SELECT count(*) FROM preflight", &[])
        .await?
        .get(0);
    if replicated != 1 {
        return Err("the replica did not replay the primary's write".into());
    }
    eprintln!(
        "preflight: PostgreSQL {version}, primary on port {}, replica on port {}, streaming \
         works ({:.1} s)\n",
        primary.port(),
        replica.port(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

//! The resilience demo: runs the thirteen cases of the resilience matrix against
//! throwaway PostgreSQL servers and prints the matrix; with `--html`, also writes the
//! report with every case's timeline.
//!
//! ```text
//! cargo run -p resilience                          # every case
//! cargo run -p resilience -- FO-03 TX-03           # some cases, by id
//! cargo run -p resilience -- --html report.html    # and the HTML report
//! cargo run -p resilience -- --jobs 2              # two cases at a time
//! cargo run -p resilience -- --tls                 # TLS-only servers, sslmode=verify-full
//! cargo run -p resilience -- --list
//! ```
//!
//! Progress goes to stderr, the details and the matrix (last) to stdout; the exit code
//! is 1 when a case fails, 2 when the arguments or PostgreSQL are not usable. `RUST_LOG`
//! shows the gateway's own logs (default: errors only, less those a running case
//! provokes on purpose and checks: see `ExpectedLogs`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use resilience::{Case, ExpectedLogs};
use resilient_tx_testkit::PgCluster;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const USAGE: &str = "usage: resilience [--list] [--html FILE] [--jobs N] [--tls] [CASE...]\n\
                     CASE: CL-01 … TX-03 (default: all); --jobs: cases at a time (default 1)\n\
                     --tls: TLS-only servers, the gateway on sslmode=verify-full";

/// What the command line asks for.
#[derive(Debug)]
struct Args {
    cases: Vec<Case>,
    html: Option<PathBuf>,
    jobs: usize,
    tls: bool,
}

/// What `--tls` changes, said before the cases and under the matrix.
const TLS_NOTE: &str = "TLS: every server is TLS-only (pg_hba.conf refuses plain text over TCP) \
                        and the gateway connects with sslmode=verify-full against the test \
                        kit's CA; TX-03 runs in plain text, its proxy cuts inside the protocol";

/// What to do instead of running cases.
enum Exit {
    /// `--help`, `--list`: printed, done.
    Done,
    /// A mistake, with what is wrong.
    Usage(String),
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, Exit> {
    let mut parsed = Args {
        cases: Vec::new(),
        html: None,
        jobs: 1,
        tls: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Err(Exit::Done);
            }
            "--list" => {
                for case in Case::ALL {
                    println!("{case}");
                }
                return Err(Exit::Done);
            }
            "--html" => match args.next() {
                Some(path) if !path.is_empty() => parsed.html = Some(PathBuf::from(path)),
                _ => return Err(Exit::Usage("--html needs a file name".to_owned())),
            },
            "--tls" => parsed.tls = true,
            "--jobs" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if (1..=13).contains(&n) => parsed.jobs = n,
                _ => return Err(Exit::Usage("--jobs needs a number from 1 to 13".to_owned())),
            },
            id => match Case::from_id(id) {
                Some(case) => parsed.cases.push(case),
                None => return Err(Exit::Usage(format!("unknown case {id:?}"))),
            },
        }
    }
    if parsed.cases.is_empty() {
        parsed.cases = Case::ALL.to_vec();
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter.and(ExpectedLogs)),
        )
        .init();

    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(Exit::Done) => return ExitCode::SUCCESS,
        Err(Exit::Usage(problem)) => {
            eprintln!("{problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    resilience::set_tls(args.tls);
    let preflight = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.into())
        .and_then(|runtime| runtime.block_on(preflight()));
    if let Err(error) = preflight {
        eprintln!("PostgreSQL is not usable here: {error}");
        return ExitCode::from(2);
    }
    resilience::set_progress(true);
    eprintln!(
        "running {} case(s), {} at a time; each starts its own throwaway servers (a primary, a \
         streaming replica, fault proxies, as it needs) and its own gateway\n",
        args.cases.len(),
        args.jobs
    );
    if args.tls {
        eprintln!("{}\n", textwrap::fill(TLS_NOTE, 100));
    }
    let started = Instant::now();
    let observations = resilience::run_in_parallel(&args.cases, args.jobs);
    let elapsed = started.elapsed();
    // Written first, so the matrix stays the last thing on the screen.
    if let Some(path) = &args.html {
        match std::fs::write(path, resilience::html(&observations)) {
            Ok(()) => eprintln!("\nreport written to {}", path.display()),
            Err(error) => {
                eprintln!("could not write the report to {}: {error}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    println!("\n{}", resilience::matrix(&observations));
    if args.tls {
        println!("{}", textwrap::fill(TLS_NOTE, 100));
    }
    println!("total time: {:.1} s", elapsed.as_secs_f64());
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
    let primary = if resilience::tls_on() {
        PgCluster::builder().tls().start().await?
    } else {
        PgCluster::start().await?
    };
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

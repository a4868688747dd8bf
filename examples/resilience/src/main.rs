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
//! cargo run -p resilience -- --topology patroni    # FO-01 and FO-03 under Patroni
//! cargo run -p resilience -- --topology patroni --replication async --event kill --runs 5
//! ```
//!
//! `--topology patroni` (Patroni on etcd, behind HAProxy) and `--topology auto-failover`
//! (pg_auto_failover) run FO-01 and FO-03 against a real orchestrator, once per event
//! (`--event switchover`, `kill`, or both, the default), `--runs` times each; with
//! Patroni, `--replication` chooses `sync` (`synchronous_mode`, the default), `async`,
//! or `async-waited` (asynchronous, the writes made with `replicated`).
//!
//! Progress goes to stderr, the details and the matrix (last) to stdout; the exit code
//! is 1 when a case fails, 2 when the arguments or PostgreSQL are not usable. `RUST_LOG`
//! shows the gateway's own logs (default: errors only, less those a running case
//! provokes on purpose and checks: see `ExpectedLogs`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use resilience::{Case, Event, ExpectedLogs, Orchestrator, Replication, Scenario, Topology};
use resilient_tx_testkit::PgCluster;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const USAGE: &str = "\
usage: resilience [--list] [--html FILE] [--jobs N] [--tls] [--topology T [--event E]
                  [--replication R] [--runs N]] [CASE...]
  CASE: CL-01 … TX-03 (default: all); --jobs: cases (or scenarios) at a time (default 1)
  --topology replica|patroni|auto-failover: what FO-01 and FO-03 fail over (default replica,
      the matrix's own hand-promoted replica; an orchestrator runs FO-01 and FO-03 only)
  --event switchover|kill|both (default both); --runs N: each event N times (default 1)
  --replication sync|async|async-waited: Patroni's replication (default sync); async-waited
      makes the writes wait for a standby (replicated)
  --writers N: keyed writers per gateway (default 4); --pace MS: pause after each (default 20)
  --deadline S: the gateways' deadline (default 10, 15 for a kill); --lag MS: the primary's WAL
      senders stopped this long before a kill (a standby that far behind)
  --tls: TLS-only servers, the gateway on sslmode=verify-full (the matrix's own servers only)";

/// What the command line asks for.
#[derive(Debug)]
struct Args {
    cases: Vec<Case>,
    html: Option<PathBuf>,
    jobs: usize,
    topology: Topology,
    events: Option<Vec<Event>>,
    replication: Option<Replication>,
    runs: Option<usize>,
    writers: Option<usize>,
    pace: Option<u64>,
    deadline: Option<u64>,
    lag: Option<u64>,
    tls: bool,
}

impl Args {
    /// The scenarios an orchestrator topology asks for (none for the matrix's own).
    fn scenarios(&self) -> Result<Vec<Scenario>, String> {
        let Some(orchestrator) = self.topology.orchestrator() else {
            let asked = [
                self.events.is_some(),
                self.replication.is_some(),
                self.runs.is_some(),
                self.writers.is_some(),
                self.pace.is_some(),
                self.deadline.is_some(),
                self.lag.is_some(),
            ];
            if asked.contains(&true) {
                return Err(
                    "--event, --replication, --runs, --writers, --pace, --deadline and \
                            --lag need --topology patroni or auto-failover"
                        .to_owned(),
                );
            }
            return Ok(Vec::new());
        };
        if self.tls {
            return Err(
                "--tls is for the matrix's own servers: the orchestrated clusters run in plain \
                 text"
                    .to_owned(),
            );
        }
        if let Some(case) = self
            .cases
            .iter()
            .find(|c| !matches!(c, Case::Fo01 | Case::Fo03))
        {
            return Err(format!(
                "under an orchestrator only FO-01 and FO-03 run, not {}",
                case.id()
            ));
        }
        if orchestrator == Orchestrator::AutoFailover && self.replication.is_some() {
            return Err(
                "--replication is for Patroni: pg_auto_failover replicates synchronously once \
                 its standby caught up"
                    .to_owned(),
            );
        }
        let replication = self.replication.unwrap_or(Replication::Synchronous);
        let events = self
            .events
            .clone()
            .unwrap_or_else(|| vec![Event::Switchover, Event::Kill]);
        if self.lag.is_some() && !events.contains(&Event::Kill) {
            return Err(
                "--lag is for --event kill: a switchover lets the standby catch up".to_owned(),
            );
        }
        let mut scenarios = Vec::new();
        for event in events {
            for _ in 0..self.runs.unwrap_or(1) {
                let mut scenario = Scenario::new(orchestrator, event, replication);
                // FO-03 goes on from FO-01's failover: it runs unless only FO-01 is asked.
                scenario.old_primary_returns = self.cases != [Case::Fo01];
                if let Some(writers) = self.writers {
                    scenario.writers = writers;
                }
                if let Some(pace) = self.pace {
                    scenario.pause = Duration::from_millis(pace);
                }
                if let Some(deadline) = self.deadline {
                    scenario.deadline = Duration::from_secs(deadline);
                }
                scenario.standby_lag = self.lag.map(Duration::from_millis);
                scenarios.push(scenario);
            }
        }
        Ok(scenarios)
    }
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
        topology: Topology::Replica,
        events: None,
        replication: None,
        runs: None,
        writers: None,
        pace: None,
        deadline: None,
        lag: None,
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
            "--topology" => match args.next().as_deref().and_then(Topology::from_flag) {
                Some(topology) => parsed.topology = topology,
                None => {
                    return Err(Exit::Usage(
                        "--topology needs replica, patroni or auto-failover".to_owned(),
                    ));
                }
            },
            "--event" => match args.next().as_deref() {
                Some("both") => parsed.events = Some(vec![Event::Switchover, Event::Kill]),
                Some(name) if Event::from_flag(name).is_some() => {
                    parsed.events = Event::from_flag(name).map(|e| vec![e]);
                }
                _ => {
                    return Err(Exit::Usage(
                        "--event needs switchover, kill or both".to_owned(),
                    ));
                }
            },
            "--replication" => match args.next().as_deref().and_then(Replication::from_flag) {
                Some(replication) => parsed.replication = Some(replication),
                None => {
                    return Err(Exit::Usage(
                        "--replication needs sync, async or async-waited".to_owned(),
                    ));
                }
            },
            "--runs" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if (1..=100).contains(&n) => parsed.runs = Some(n),
                _ => {
                    return Err(Exit::Usage(
                        "--runs needs a number from 1 to 100".to_owned(),
                    ));
                }
            },
            "--writers" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if (1..=64).contains(&n) => parsed.writers = Some(n),
                _ => {
                    return Err(Exit::Usage(
                        "--writers needs a number from 1 to 64".to_owned(),
                    ));
                }
            },
            "--deadline" => match args.next().and_then(|n| n.parse::<u64>().ok()) {
                Some(s) if (1..=120).contains(&s) => parsed.deadline = Some(s),
                _ => {
                    return Err(Exit::Usage(
                        "--deadline needs seconds from 1 to 120".to_owned(),
                    ));
                }
            },
            "--lag" => match args.next().and_then(|n| n.parse::<u64>().ok()) {
                Some(ms) if (1..=10_000).contains(&ms) => parsed.lag = Some(ms),
                _ => {
                    return Err(Exit::Usage(
                        "--lag needs milliseconds from 1 to 10000".to_owned(),
                    ));
                }
            },
            "--pace" => match args.next().and_then(|n| n.parse::<u64>().ok()) {
                Some(ms) if ms <= 10_000 => parsed.pace = Some(ms),
                _ => {
                    return Err(Exit::Usage(
                        "--pace needs milliseconds from 0 to 10000".to_owned(),
                    ));
                }
            },
            id => match Case::from_id(id) {
                Some(case) => parsed.cases.push(case),
                None => return Err(Exit::Usage(format!("unknown case {id:?}"))),
            },
        }
    }
    if parsed.cases.is_empty() && parsed.topology == Topology::Replica {
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

    let parsed = parse_args(std::env::args().skip(1)).and_then(|args| {
        let scenarios = args.scenarios().map_err(Exit::Usage)?;
        Ok((args, scenarios))
    });
    let (args, scenarios) = match parsed {
        Ok(parsed) => parsed,
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
    let started = Instant::now();
    let observations = if scenarios.is_empty() {
        eprintln!(
            "running {} case(s), {} at a time; each starts its own throwaway servers (a \
             primary, a streaming replica, fault proxies, as it needs) and its own gateway\n",
            args.cases.len(),
            args.jobs
        );
        if args.tls {
            eprintln!("{}\n", textwrap::fill(TLS_NOTE, 100));
        }
        resilience::run_in_parallel(&args.cases, args.jobs)
    } else {
        eprintln!(
            "running {} scenario(s) under {}, {} at a time; each starts its own cluster and \
             one gateway per route to its primary\n",
            scenarios.len(),
            scenarios[0].orchestrator,
            args.jobs
        );
        resilience::run_scenarios_in_parallel(&scenarios, args.jobs)
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<(Args, Vec<Scenario>), String> {
        match parse_args(line.split_whitespace().map(str::to_owned)) {
            Ok(args) => {
                let scenarios = args.scenarios()?;
                Ok((args, scenarios))
            }
            Err(Exit::Usage(problem)) => Err(problem),
            Err(Exit::Done) => Err("done".to_owned()),
        }
    }

    #[test]
    fn the_matrix_runs_by_default_and_an_orchestrator_runs_both_events() {
        let (matrix, scenarios) = args("").expect("valid");
        assert_eq!(matrix.cases, Case::ALL);
        assert!(scenarios.is_empty());

        let (_, scenarios) = args("--topology patroni").expect("valid");
        let events: Vec<Event> = scenarios.iter().map(|s| s.event).collect();
        assert_eq!(events, [Event::Switchover, Event::Kill]);
        assert!(scenarios.iter().all(|s| s.old_primary_returns
            && s.replication == Replication::Synchronous
            && s.routes.len() == 2));

        let (_, scenarios) = args(
            "--topology patroni --replication async --event kill --runs 3 --writers 8 \
                  --pace 0 FO-01",
        )
        .expect("valid");
        assert_eq!(scenarios.len(), 3);
        assert!(scenarios.iter().all(|s| s.event == Event::Kill
            && !s.old_primary_returns
            && s.writers == 8
            && s.pause.is_zero()));

        let (_, scenarios) = args("--topology auto-failover --event switchover").expect("valid");
        assert_eq!(scenarios.len(), 1);
        assert_eq!(scenarios[0].routes.len(), 1);
    }

    #[test]
    fn impossible_combinations_say_what_is_wrong() {
        for (line, expected) in [
            ("--event kill", "need --topology"),
            (
                "--topology patroni CL-01",
                "only FO-01 and FO-03 run, not CL-01",
            ),
            (
                "--topology auto-failover --replication async",
                "--replication is for Patroni",
            ),
            ("--topology swarm", "--topology needs"),
            ("--topology patroni --event sometimes", "--event needs"),
            ("--topology patroni --runs 0", "--runs needs"),
        ] {
            let problem = args(line).err().unwrap_or_default();
            assert!(problem.contains(expected), "{line}: {problem:?}");
        }
    }

    #[test]
    fn the_usage_fits_in_100_columns() {
        for line in USAGE.lines() {
            assert!(line.chars().count() <= 100, "{line}");
        }
    }
}

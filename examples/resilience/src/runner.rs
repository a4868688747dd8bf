//! Runs cases: each within [`CASE_LIMIT`] (a [`Scenario`] under an orchestrator,
//! whose cases share one cluster, within [`SCENARIO_LIMIT`]), a panic or a timeout
//! turned into a failed observation, progress on stderr when asked for.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::case::Case;
use crate::cases::{connection_loss, failover, orchestrated, pool, transactions};
use crate::harness::{self, Phases, Recorder};
use crate::observation::Observation;
use crate::progress::progress_on;
use crate::text::secs;
use crate::topology::Scenario;

/// No case may take longer than this, whatever the servers do; the runner stops it
/// and reports it failed.
pub const CASE_LIMIT: Duration = Duration::from_secs(150);

/// No scenario (a cluster started, a failover under load, the old primary's return
/// and a switchover back) may take longer than this.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(420);

/// Runs one case within [`CASE_LIMIT`]; a panic or a timeout becomes a failed
/// observation that keeps what was recorded until then.
pub async fn run(case: Case) -> Observation {
    run_with(case, move |rec| async move { body(case, &rec).await }).await
}

/// The code of `case`.
async fn body(case: Case, rec: &Recorder) -> harness::CaseResult {
    match case {
        Case::Cl01 => connection_loss::database_shutdown(rec).await,
        Case::Cl02 => connection_loss::network_partition(rec).await,
        Case::Cl03 => connection_loss::connection_drop(rec).await,
        Case::Cl04 => connection_loss::slow_network(rec).await,
        Case::Cp01 => pool::exhaustion(rec).await,
        Case::Cp02 => pool::stale_connections(rec).await,
        Case::Cp03 => pool::recovery(rec).await,
        Case::Fo01 => failover::primary_failure(rec).await,
        Case::Fo02 => failover::replica_lag(rec).await,
        Case::Fo03 => failover::split_brain(rec, failover::Isolation::Refuse).await,
        Case::Tx01 => transactions::deadlock(rec).await,
        Case::Tx02 => transactions::long_transaction(rec).await,
        Case::Tx03 => transactions::mid_transaction_failure(rec).await,
    }
}

/// Runs `body` as `case` within [`CASE_LIMIT`] (a variant of a case shares its id).
pub(crate) async fn run_with<F, Fut>(case: Case, body: F) -> Observation
where
    F: FnOnce(Recorder) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = harness::CaseResult> + Send + 'static,
{
    let started = Instant::now();
    let rec = Recorder::new(case, started);
    if progress_on() {
        eprintln!("▶ {case}");
    }
    let failed = supervise(CASE_LIMIT, body(rec.clone())).await;
    if let Some(error) = failed {
        rec.error(error);
    }
    let mut observation = rec.finish();
    observation.elapsed = started.elapsed();
    print_outcome(&observation);
    observation
}

/// Runs `scenario` within [`SCENARIO_LIMIT`]: FO-01 under its orchestrator, then FO-03
/// if it asks for it, on one cluster; one observation per case begun.
pub async fn run_scenario(scenario: Scenario) -> Vec<Observation> {
    let phases = Phases::new(scenario.label());
    let body = {
        let phases = phases.clone();
        async move { orchestrated::scenario(&phases, &scenario).await }
    };
    if let Some(error) = supervise(SCENARIO_LIMIT, body).await {
        phases.current().error(error);
    }
    let observations = phases.finish();
    observations.iter().for_each(print_outcome);
    observations
}

/// Runs `body` on a task of its own within `limit`: `None` when it ended well, else
/// what went wrong (its error, a panic, the limit).
async fn supervise<Fut>(limit: Duration, body: Fut) -> Option<String>
where
    Fut: std::future::Future<Output = harness::CaseResult> + Send + 'static,
{
    let task = tokio::spawn(async move { body.await.err().map(|e| e.to_string()) });
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(error)) => error,
        Ok(Err(join)) if join.is_panic() => {
            let panic = join.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Some(format!("panicked: {message}"))
        }
        Ok(Err(_)) => Some("the case was cancelled".to_owned()),
        Err(_) => {
            abort.abort();
            Some(format!("did not finish within {}", secs(limit)))
        }
    }
}

/// The verdict line on stderr, when progress is on.
fn print_outcome(observation: &Observation) {
    if !progress_on() {
        return;
    }
    eprintln!(
        "{} {} {}: {} in {}",
        if observation.passed() { "✔" } else { "✘" },
        observation.case.id(),
        observation.title(),
        observation.verdict(),
        secs(observation.elapsed)
    );
    for failure in observation.failures() {
        eprintln!("    failed: {}", failure.what);
    }
    if let Some(error) = &observation.error {
        eprintln!("    error: {error}");
    }
}

/// Runs every case in `cases` one after the other.
pub async fn run_all(cases: &[Case]) -> Vec<Observation> {
    let mut observations = Vec::with_capacity(cases.len());
    for &case in cases {
        observations.push(run(case).await);
    }
    observations
}

/// Runs every case in `cases`, `jobs` at a time, each on a thread and a tokio runtime
/// of its own (two workers, as a test gets), the way a test runner would run one test
/// per case; the observations come back in the order of `cases`. Blocks until all are
/// done: call it from outside a runtime.
pub fn run_in_parallel(cases: &[Case], jobs: usize) -> Vec<Observation> {
    in_parallel(
        cases,
        jobs,
        |&case| async move { vec![run(case).await] },
        |&case| case,
    )
}

/// Runs every scenario, `jobs` at a time, each on a thread and a tokio runtime of its
/// own; their observations come back in the order of `scenarios`. Blocks until all
/// are done: call it from outside a runtime.
pub fn run_scenarios_in_parallel(scenarios: &[Scenario], jobs: usize) -> Vec<Observation> {
    in_parallel(
        scenarios,
        jobs,
        |scenario| run_scenario(scenario.clone()),
        |_| Case::Fo01,
    )
}

/// Runs `work` for every item, `jobs` at a time, each on a thread and a two-worker
/// tokio runtime of its own; the observations in the order of `items`. `case` names
/// the failed observation of an item that could not run.
fn in_parallel<T, W, Fut>(
    items: &[T],
    jobs: usize,
    work: W,
    case: impl Fn(&T) -> Case + Sync,
) -> Vec<Observation>
where
    T: Sync,
    W: Fn(&T) -> Fut + Sync,
    Fut: std::future::Future<Output = Vec<Observation>>,
{
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Vec<Observation>>>> = Mutex::new(vec![None; items.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let observations = match tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(work(item)),
                        Err(error) => {
                            let mut failed = Observation::new(case(item));
                            failed.error = Some(format!("no tokio runtime: {error}"));
                            vec![failed]
                        }
                    };
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(observations);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(items)
        .flat_map(|(observations, item)| {
            observations.unwrap_or_else(|| {
                // Only a panic outside `run` (which catches the case's own) leaves a hole.
                let mut lost = Observation::new(case(item));
                lost.error = Some("the case's thread ended without an observation".to_owned());
                vec![lost]
            })
        })
        .collect()
}

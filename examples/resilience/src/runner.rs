//! Runs cases: each within [`CASE_LIMIT`], a panic or a timeout turned into a failed
//! observation, progress on stderr when asked for.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::case::Case;
use crate::cases::{connection_loss, failover, pool, transactions};
use crate::harness::{self, Recorder};
use crate::observation::Observation;
use crate::progress::progress_on;
use crate::text::secs;

/// No case may take longer than this, whatever the servers do; the runner stops it
/// and reports it failed.
pub const CASE_LIMIT: Duration = Duration::from_secs(150);

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
    let task = {
        let rec = rec.clone();
        tokio::spawn(async move {
            if let Err(error) = body(rec.clone()).await {
                rec.error(error.to_string());
            }
        })
    };
    let abort = task.abort_handle();
    match tokio::time::timeout(CASE_LIMIT, task).await {
        Ok(Ok(())) => {}
        Ok(Err(join)) => {
            let message = if join.is_panic() {
                let panic = join.into_panic();
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic without a message".to_owned())
            } else {
                "the case was cancelled".to_owned()
            };
            rec.error(format!("panicked: {message}"));
        }
        Err(_) => {
            abort.abort();
            rec.error(format!("did not finish within {}", secs(CASE_LIMIT)));
        }
    }
    let mut observation = rec.finish();
    observation.elapsed = started.elapsed();
    if progress_on() {
        eprintln!(
            "{} {case}: {} in {}",
            if observation.passed() { "✔" } else { "✘" },
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
    observation
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
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Observation>>> =
        std::sync::Mutex::new(vec![None; cases.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, cases.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&case) = cases.get(i) else { break };
                    let observation = match tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(run(case)),
                        Err(error) => {
                            let mut failed = Observation::new(case);
                            failed.error = Some(format!("no tokio runtime: {error}"));
                            failed
                        }
                    };
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(observation);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(cases)
        .map(|(observation, &case)| {
            observation.unwrap_or_else(|| {
                // Only a panic outside `run` (which catches the case's own) leaves a hole.
                let mut lost = Observation::new(case);
                lost.error = Some("the case's thread ended without an observation".to_owned());
                lost
            })
        })
        .collect()
}

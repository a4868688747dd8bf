//! Runs cases: each within [`CASE_LIMIT`], a panic or a timeout turned into a failed
//! observation, progress on stderr when asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::case::Case;
use crate::harness::{self, Recorder};
use crate::observation::{Observation, secs};

/// No case may take longer than this, whatever the servers do; the runner stops it
/// and reports it failed.
pub const CASE_LIMIT: Duration = Duration::from_secs(150);

/// Whether cases print progress lines on stderr as they go (the binary turns it on;
/// tests log them through `tracing` instead).
static PROGRESS: AtomicBool = AtomicBool::new(false);

/// Turns progress lines on stderr on or off.
pub fn set_progress(on: bool) {
    PROGRESS.store(on, Ordering::Relaxed);
}

pub(crate) fn progress_on() -> bool {
    PROGRESS.load(Ordering::Relaxed)
}

/// Runs one case within [`CASE_LIMIT`]; a panic or a timeout becomes a failed
/// observation that keeps what was recorded until then.
pub async fn run(case: Case) -> Observation {
    run_with(case, move |rec| async move { case.body(&rec).await }).await
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

//! The recorder of a case's observation: steps, checks, notes, figures, recovery.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::case::Case;
use crate::observation::{Check, Observation, secs};
use crate::runner::progress_on;

/// Records a case's observation as it runs; shared with the runner so a panic or a
/// timeout keeps what was seen until then.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    observation: Arc<Mutex<Observation>>,
    started: Instant,
}

impl Recorder {
    pub(crate) fn new(case: Case, started: Instant) -> Self {
        Recorder {
            observation: Arc::new(Mutex::new(Observation::new(case))),
            started,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Observation) -> R) -> R {
        let mut observation = self.observation.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut observation)
    }

    fn case(&self) -> Case {
        self.with(|o| o.case)
    }

    /// A progress line: on stderr for the binary, in the log for tests.
    pub(crate) fn step(&self, message: impl Display) {
        let case = self.case();
        let at = self.started.elapsed().as_secs_f64();
        if progress_on() {
            eprintln!("  {} +{at:5.1}s  {message}", case.id());
        }
        tracing::info!(case = case.id(), at_s = at, "{message}");
    }

    /// Records an assertion; returns whether it held.
    pub(crate) fn check(&self, passed: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if !passed {
            self.step(format_args!("CHECK FAILED: {what}"));
        }
        self.with(|o| o.checks.push(Check { passed, what }));
        passed
    }

    /// Records something observed.
    pub(crate) fn note(&self, text: impl Into<String>) {
        let text = text.into();
        self.step(&text);
        self.with(|o| o.notes.push(text));
    }

    /// Records a measured figure.
    pub(crate) fn figure(&self, name: impl Into<String>, value: impl Display) {
        let (name, value) = (name.into(), value.to_string());
        self.step(format_args!("{name}: {value}"));
        self.with(|o| o.figures.push((name, value)));
    }

    /// Records the time to recover.
    pub(crate) fn recovery(&self, recovery: Duration) {
        self.step(format_args!("recovered in {}", secs(recovery)));
        self.with(|o| o.recovery = Some(recovery));
    }

    /// Sets the one-line summary.
    pub(crate) fn summary(&self, text: impl Into<String>) {
        let text = text.into();
        self.with(|o| o.summary = text);
    }

    pub(crate) fn error(&self, error: String) {
        self.step(format_args!("ERROR: {error}"));
        self.with(|o| o.error = Some(error));
    }

    pub(crate) fn finish(&self) -> Observation {
        self.with(|o| o.clone())
    }
}

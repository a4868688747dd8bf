//! The recorder of a case's observation: steps, checks, notes, figures, recovery, and
//! the timeline (requests, fault windows) the report draws.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::case::Case;
use crate::observation::{Check, Observation};
use crate::progress::progress_on;
use crate::text::secs;
use crate::timeline::{Fault, RequestSample, Span};

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

    /// A recorder of `case` run under `variant` (see [`Observation::variant`]).
    pub(crate) fn with_variant(self, variant: impl Into<String>) -> Self {
        let variant = variant.into();
        self.with(|o| o.variant = Some(variant));
        self
    }

    /// When the case began.
    pub(crate) fn started(&self) -> Instant {
        self.started
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

    /// Records the time to recover, `took`, measured from `from` (the end of the
    /// fault: the server started, the network healed, the replica promoted …).
    pub(crate) fn recovery(&self, from: Instant, took: Duration) {
        self.step(format_args!("recovered in {}", secs(took)));
        let start = self.offset(from);
        self.with(|o| {
            o.recovery = Some(took);
            o.timeline.recovery = Some(Span {
                start,
                end: start + took,
            });
        });
    }

    /// Where `at` lies on the case's timeline.
    fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    /// Records one request of the suite's client: sent at `start`, answered at `end`
    /// with `status` (0: no answer) and error `code` (empty for none).
    pub(crate) fn request(&self, start: Instant, end: Instant, status: u16, code: &str) {
        let sample = RequestSample {
            start: self.offset(start),
            end: self.offset(end),
            status,
            code: code.to_owned(),
        };
        self.with(|o| o.timeline.requests.push(sample));
    }

    /// A fault begins now (it lasts until [`Recorder::fault_ends`]).
    pub(crate) fn fault_begins(&self, label: impl Into<String>) {
        let fault = Fault {
            label: label.into(),
            start: self.offset(Instant::now()),
            end: None,
        };
        self.with(|o| o.timeline.faults.push(fault));
    }

    /// The fault begun last and still lasting ends now.
    pub(crate) fn fault_ends(&self) {
        let now = self.offset(Instant::now());
        self.with(|o| {
            if let Some(fault) = o.timeline.faults.iter_mut().rev().find(|f| f.end.is_none()) {
                fault.end = Some(now);
            }
        });
    }

    /// A fault lasted from `start` to `end`, both already past.
    pub(crate) fn fault_window(&self, label: impl Into<String>, start: Instant, end: Instant) {
        let fault = Fault {
            label: label.into(),
            start: self.offset(start),
            end: Some(self.offset(end.max(start))),
        };
        self.with(|o| o.timeline.faults.push(fault));
    }

    /// An instant fault (connections terminated, a connection cut) happened at `at`.
    pub(crate) fn fault_at(&self, at: Instant, label: impl Into<String>) {
        let at = self.offset(at);
        let fault = Fault {
            label: label.into(),
            start: at,
            end: Some(at),
        };
        self.with(|o| o.timeline.faults.push(fault));
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

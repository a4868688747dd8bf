//! What running a case showed: its checks, summary, figures and notes, and the text
//! report of one case.

use std::fmt::Write as _;
use std::time::Duration;

use crate::case::Case;
use crate::text::{secs, wrap};
use crate::timeline::Timeline;

/// One assertion of a case: what must hold, and whether it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// It held.
    pub passed: bool,
    /// What was checked, with the value seen.
    pub what: String,
}

/// What running one case showed.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The case.
    pub case: Case,
    /// What the case ran against when not the matrix's own servers, e.g. `Patroni,
    /// synchronous_mode; planned switchover; via HAProxy + URL`.
    pub variant: Option<String>,
    /// Every assertion made, in order.
    pub checks: Vec<Check>,
    /// One line on what was observed, for the matrix.
    pub summary: String,
    /// Everything else worth reporting, in order.
    pub notes: Vec<String>,
    /// Time from the end of the fault (server started, network healed, replica
    /// promoted …) to the first successful request.
    pub recovery: Option<Duration>,
    /// Measured figures, by name (reported, not asserted).
    pub figures: Vec<(String, String)>,
    /// The case could not run to its end: setup failed, it panicked, or it ran past
    /// [`CASE_LIMIT`](crate::CASE_LIMIT).
    pub error: Option<String>,
    /// How long the case took.
    pub elapsed: Duration,
    /// Every request, the fault windows and the recovery, in time.
    pub timeline: Timeline,
}

impl Observation {
    pub(crate) fn new(case: Case) -> Self {
        Observation {
            case,
            variant: None,
            checks: Vec::new(),
            summary: String::new(),
            notes: Vec::new(),
            recovery: None,
            figures: Vec::new(),
            error: None,
            elapsed: Duration::ZERO,
            timeline: Timeline::default(),
        }
    }

    /// The case ran to its end and every check held.
    pub fn passed(&self) -> bool {
        self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The case's name, and what it ran against if not the matrix's own servers.
    pub fn title(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{} ({variant})", self.case.title()),
            None => self.case.title().to_owned(),
        }
    }

    /// `PASS` or `FAIL`.
    pub fn verdict(&self) -> &'static str {
        if self.passed() { "PASS" } else { "FAIL" }
    }

    /// Everything: verdict, summary, figures, notes, every check, wrapped to
    /// `WIDTH` columns.
    pub fn report(&self) -> String {
        let mut out = String::new();
        out.push_str(&wrap(
            &format!(
                "{} {} — {} in {}",
                self.case.id(),
                self.title(),
                self.verdict(),
                secs(self.elapsed)
            ),
            "",
            "  ",
        ));
        if let Some(error) = &self.error {
            out.push_str(&wrap(&format!("error: {error}"), "  ", "    "));
        }
        if !self.summary.is_empty() {
            out.push_str(&wrap(&format!("observed: {}", self.summary), "  ", "    "));
        }
        if let Some(recovery) = self.recovery {
            let _ = writeln!(out, "  recovery: {}", secs(recovery));
        }
        for (name, value) in &self.figures {
            out.push_str(&wrap(&format!("{name}: {value}"), "  ", "    "));
        }
        for note in &self.notes {
            out.push_str(&wrap(note, "  - ", "    "));
        }
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            out.push_str(&wrap(&check.what, &format!("  [{mark}] "), "         "));
        }
        out
    }
}

//! The matrix as text for a terminal: one line per case, then every case's report.

use std::fmt::Write as _;

use crate::observation::{Observation, secs};

/// The matrix: one line per case (id, name, PASS/FAIL, recovery time, what was
/// observed), then the details of every case.
pub fn matrix(observations: &[Observation]) -> String {
    let mut out = String::new();
    let passed = observations.iter().filter(|o| o.passed()).count();
    let _ = writeln!(
        out,
        "Resilience matrix: {passed} of {} cases passed\n",
        observations.len()
    );
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:<6} {:>9} {:>8}  observed",
        "case", "", "result", "recovery", "took"
    );
    for o in observations {
        let recovery = o.recovery.map(secs).unwrap_or_else(|| "-".to_owned());
        let observed = match (&o.error, o.summary.is_empty()) {
            (Some(error), _) => format!("ERROR: {error}"),
            (None, false) => o.summary.clone(),
            (None, true) => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:<6} {:>9} {:>8}  {}",
            o.case.id(),
            o.case.title(),
            o.verdict(),
            recovery,
            secs(o.elapsed),
            observed
        );
        for failure in o.failures() {
            let _ = writeln!(out, "{:<48}failed: {}", "", failure.what);
        }
    }
    let _ = writeln!(out, "\nDetails\n");
    for o in observations {
        let _ = writeln!(out, "{}", o.report());
    }
    out
}

//! The matrix as text for a terminal: every case's report, then the matrix itself,
//! last so it is what stays on the screen. Lines fit in 100 columns.

use std::fmt::Write as _;

use crate::observation::Observation;
use crate::text::{secs, wrap};

/// Indent of the lines under a case's row.
const INDENT: &str = "       ";

/// Every case's report, then the matrix: one row per case (id, name, PASS/FAIL,
/// recovery time, time taken) with what was observed, and every failed check, wrapped
/// under it.
pub fn matrix(observations: &[Observation]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Details\n");
    for o in observations {
        let _ = writeln!(out, "{}", o.report());
    }
    let passed = observations.iter().filter(|o| o.passed()).count();
    let _ = writeln!(
        out,
        "Resilience matrix: {passed} of {} cases passed\n",
        observations.len()
    );
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:<6} {:>9} {:>8}",
        "case", "name", "result", "recovery", "took"
    );
    for o in observations {
        let recovery = o.recovery.map(secs).unwrap_or_else(|| "-".to_owned());
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:<6} {:>9} {:>8}",
            o.case.id(),
            o.case.title(),
            o.verdict(),
            recovery,
            secs(o.elapsed),
        );
        if let Some(variant) = &o.variant {
            out.push_str(&wrap(&format!("under {variant}"), INDENT, INDENT));
        }
        let observed = match &o.error {
            Some(error) => format!("ERROR: {error}"),
            None => o.summary.clone(),
        };
        if !observed.is_empty() {
            out.push_str(&wrap(&observed, INDENT, INDENT));
        }
        for failure in o.failures() {
            let first = format!("{INDENT}failed: ");
            out.push_str(&wrap(&failure.what, &first, &format!("{INDENT}        ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::case::Case;
    use crate::observation::Check;
    use crate::text::WIDTH;

    #[test]
    fn the_matrix_comes_last_and_every_line_fits() {
        let mut o = Observation::new(Case::Cl04);
        o.summary = "100 ms: 200×4, 201×2 (slowest 0.82 s); 1000 ms: 504 timeout×4 within the \
                     deadline; 200 again after; and a good deal more text so that it wraps"
            .repeat(2);
        o.checks.push(Check {
            passed: false,
            what: "a check with a long description that needs more than one line to say what \
                   it checked and what it saw"
                .to_owned(),
        });
        o.elapsed = Duration::from_secs(13);
        let text = matrix(&[o]);
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}",
                line.len()
            );
        }
        let details = text.find("Details").expect("details");
        let table = text.find("Resilience matrix: 0 of 1").expect("the matrix");
        assert!(details < table, "{text}");
        assert!(text[table..].contains("CL-04  slow network"), "{text}");
        assert!(text[table..].contains("failed: a check"), "{text}");
    }
}

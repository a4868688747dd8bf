//! The thirteen cases of the resilience matrix (`RESILIENCE-MATRIX.md`) against real
//! PostgreSQL servers (a streaming replica and the test kit's fault proxy where the
//! case needs them), driving the gateway over real HTTP, and the HTML report they
//! make, opened in a real browser.
//!
//! The case logic lives in the `resilience` library, shared with its binary. The
//! matrix test runs every case once, two at a time, each on a thread and a runtime of
//! its own (each case starts its own servers, so they are independent), asserts that
//! every check of every observation held, and renders the report from those very
//! observations: one run of the cases serves both. The observations are printed either
//! way, figures included; the report and its screenshot stay in the target directory.

mod browser;

use std::path::PathBuf;

use resilience::{Case, Observation};
use resilient_tx_testkit::init_tracing;

/// Cases run at once: one per core of the two-core machines the suite is made for,
/// as a test runner would run one test per case.
const JOBS: usize = 2;

fn assert_passed(observation: Observation) {
    let report = observation.report();
    println!("{report}");
    assert!(observation.passed(), "{report}");
}

/// All thirteen cases pass, and their report renders in Chromium: the matrix and one
/// section with one timeline (SVG) per case.
#[test]
fn resilience_matrix_passes_and_its_report_renders() {
    init_tracing();
    let observations = resilience::run_in_parallel(&Case::ALL, JOBS);
    println!("{}", resilience::matrix(&observations));

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let html = dir.join("resilience-report.html");
    let png = dir.join("resilience-report.png");
    let rendered = std::fs::write(&html, resilience::html(&observations))
        .map_err(|e| format!("could not write {}: {e}", html.display()))
        .and_then(|()| browser::check_report(&html, &png, &Case::ALL));
    match &rendered {
        Ok(what) => println!(
            "report: {} ({what}); screenshot: {}",
            html.display(),
            png.display()
        ),
        Err(problem) => println!("report: {}: {problem}", html.display()),
    }

    let failed: Vec<String> = observations
        .iter()
        .filter(|o| !o.passed())
        .map(Observation::report)
        .collect();
    assert!(
        failed.is_empty() && rendered.is_ok(),
        "{} of 13 cases failed{}\n{}",
        failed.len(),
        rendered
            .as_ref()
            .err()
            .map(|problem| format!("; the report did not render as it must: {problem}"))
            .unwrap_or_default(),
        failed.join("\n")
    );
}

/// FO-03's isolation by a silent network instead of refused connections: the silent
/// first host of the URL must not keep the gateway from the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fo_03_split_brain_blackholed_old_primary() {
    init_tracing();
    assert_passed(resilience::fo_03_split_brain_blackholed_old_primary().await);
}

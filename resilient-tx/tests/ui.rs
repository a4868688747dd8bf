//! Compile-time behaviour of `#[retriable_tx]`: what compiles (`ui/pass`) and the
//! error, and where it points, for each mistake (`ui/fail`, with `.stderr` snapshots).
//!
//! Refresh the snapshots with `TRYBUILD=overwrite cargo test -p resilient-tx --test ui`
//! and read every changed `.stderr`: the message must say what is wrong, on the
//! tokens that are wrong.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}

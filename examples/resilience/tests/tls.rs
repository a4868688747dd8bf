//! One case of the matrix with `--tls`: CL-02 against a TLS-only server, the gateway on
//! `sslmode=verify-full`, the network partition made by the fault proxy, which must
//! forward TLS untouched for the gateway to connect at all and for the partition and
//! its heal to act on an encrypted stream. One case, not thirteen: the matrix test
//! runs them all in plain text, and the demo (`--tls`) all of them over TLS.
//!
//! A test binary of its own, so the process-wide TLS switch reaches no other test.

use resilience::Case;
use resilient_tx_testkit::init_tracing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_02_network_partition_over_tls() {
    init_tracing();
    resilience::set_tls(true);
    let observation = resilience::run(Case::Cl02).await;
    let report = observation.report();
    println!("{report}");
    assert!(observation.passed(), "{report}");
    assert!(
        report.contains("over TLS (sslmode=verify-full)"),
        "the case ran over TLS: {report}"
    );
}

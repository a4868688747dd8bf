//! The thirteen cases of the resilience matrix (`RESILIENCE-MATRIX.md`), one test each,
//! against real PostgreSQL servers (a streaming replica and the test kit's fault proxy
//! where the case needs them), driving the gateway over real HTTP.
//!
//! The case logic lives in the `resilience` library, shared with its binary;
//! each test runs one case (which starts its own servers, so the tests are independent
//! and run in parallel) and asserts that every check of its observation held. The
//! observation is printed either way, figures included.

use resilience::Observation;
use resilient_tx_testkit::init_tracing;

fn assert_passed(observation: Observation) {
    let report = observation.report();
    println!("{report}");
    assert!(observation.passed(), "{report}");
}

/// CL-01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_01_database_shutdown() {
    init_tracing();
    assert_passed(resilience::cl_01_database_shutdown().await);
}

/// CL-02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_02_network_partition() {
    init_tracing();
    assert_passed(resilience::cl_02_network_partition().await);
}

/// CL-03.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_03_connection_drop() {
    init_tracing();
    assert_passed(resilience::cl_03_connection_drop().await);
}

/// CL-04.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_04_slow_network() {
    init_tracing();
    assert_passed(resilience::cl_04_slow_network().await);
}

/// CP-01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_01_pool_exhaustion() {
    init_tracing();
    assert_passed(resilience::cp_01_pool_exhaustion().await);
}

/// CP-02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_02_stale_connections() {
    init_tracing();
    assert_passed(resilience::cp_02_stale_connections().await);
}

/// CP-03.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_03_pool_recovery() {
    init_tracing();
    assert_passed(resilience::cp_03_pool_recovery().await);
}

/// FO-01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fo_01_primary_failure() {
    init_tracing();
    assert_passed(resilience::fo_01_primary_failure().await);
}

/// FO-02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fo_02_replica_lag() {
    init_tracing();
    assert_passed(resilience::fo_02_replica_lag().await);
}

/// FO-03.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fo_03_split_brain() {
    init_tracing();
    assert_passed(resilience::fo_03_split_brain().await);
}

/// TX-01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_01_deadlock() {
    init_tracing();
    assert_passed(resilience::tx_01_deadlock().await);
}

/// TX-02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_02_long_transaction() {
    init_tracing();
    assert_passed(resilience::tx_02_long_transaction().await);
}

/// TX-03.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_03_mid_transaction_failure() {
    init_tracing();
    assert_passed(resilience::tx_03_mid_transaction_failure().await);
}

/// FO-03's isolation by a silent network instead of refused connections: the silent
/// first host of the URL must not keep the gateway from the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fo_03_split_brain_blackholed_old_primary() {
    init_tracing();
    assert_passed(resilience::fo_03_split_brain_blackholed_old_primary().await);
}

//! FO-01 and FO-03 against real orchestrators: Patroni (on etcd, behind HAProxy) and
//! pg_auto_failover, each failing over a two-node cluster while two gateways (one
//! through HAProxy, one through the multi-host URL; pg_auto_failover's formation URL
//! only) take concurrent keyed writes. One cluster per test serves FO-01 (the event)
//! and FO-03 (the old primary's return and a switchover back to it).
//!
//! The tests hold the runs that prove the targets, one cluster each: a planned
//! switchover per orchestrator (nothing but 201, nothing lost or doubled, the first
//! gateway write within a second of the new primary taking writes) and an unplanned
//! failover per orchestrator with synchronous replication (Patroni's
//! `synchronous_mode`; pg_auto_failover's own once its standby caught up): nothing
//! acknowledged lost or doubled, 503 with `Retry-After` while there is no primary,
//! never a 500. And one unplanned Patroni failover with asynchronous replication and
//! the standby 300 ms behind, where every write waits for a standby (`replicated`):
//! nothing acknowledged lost, though a kill like it without the wait loses most writes
//! of those 300 ms. Repeated runs and the losses without the wait are for the demo
//! (`--topology`, `--replication`, `--runs`, `--lag`); `examples/resilience/README.md`
//! has their figures.

use std::time::Duration;

use resilience::{Event, Observation, Orchestrator, Replication, Scenario};
use resilient_tx_testkit::init_tracing;

/// Runs `scenario` and asserts that each of its cases ran and passed; the reports are
/// printed either way, figures included.
async fn assert_passes(scenario: Scenario) {
    init_tracing();
    let observations = resilience::run_scenario(scenario).await;
    for observation in &observations {
        println!("{}", observation.report());
    }
    let cases: Vec<&str> = observations.iter().map(|o| o.case.id()).collect();
    assert_eq!(cases, ["FO-01", "FO-03"], "both cases ran");
    let failed: Vec<String> = observations
        .iter()
        .filter(|o| !o.passed())
        .map(Observation::report)
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_planned_switchover_through_haproxy_and_the_multi_host_url() {
    assert_passes(Scenario::new(
        Orchestrator::Patroni,
        Event::Switchover,
        Replication::Asynchronous,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_failover_planned_switchover_through_the_formation_url() {
    assert_passes(Scenario::new(
        Orchestrator::AutoFailover,
        Event::Switchover,
        Replication::Synchronous,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_unplanned_failover_with_synchronous_mode_loses_no_acknowledged_write() {
    assert_passes(Scenario::new(
        Orchestrator::Patroni,
        Event::Kill,
        Replication::Synchronous,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_failover_unplanned_failover_loses_no_acknowledged_write() {
    assert_passes(Scenario::new(
        Orchestrator::AutoFailover,
        Event::Kill,
        Replication::Synchronous,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_unplanned_failover_asynchronous_with_replicated_writes_loses_none() {
    let mut scenario = Scenario::new(Orchestrator::Patroni, Event::Kill, Replication::Waited);
    scenario.standby_lag = Some(Duration::from_millis(300));
    assert_passes(scenario).await;
}

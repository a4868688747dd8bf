//! FO-01 and FO-03 under a real orchestrator: one [`Scenario`] on one cluster.
//!
//! FO-01: one gateway per route (HAProxy's write port, the multi-host URL), each under
//! concurrent keyed writers, while the orchestrator switches the primary over (its own
//! command) or replaces a primary that was SIGKILLed. Side connections measure when
//! the new primary, and each route to it, took a real write (the test kit's
//! `wait_writable`); the writers' answers tell how long the gateway took after that,
//! what it answered meanwhile, and the registry read on the new primary afterwards
//! tells whether every acknowledged write is there exactly once.
//!
//! FO-03 goes on with the same cluster: the old primary comes back (a killed node is
//! started again and the orchestrator makes it a standby, Patroni rewinding it), every
//! gateway connection is ended so that each gateway chooses a server again (the old
//! primary is listed first in the multi-host URL), and a planned switchover makes the
//! old primary the primary again. Nothing the gateway wrote may be lost or doubled, no
//! write acknowledged before the failover and lost by it may come back, and a client
//! sees no error.
//!
//! `measure` runs an event and times it with side connections, `judge` holds one
//! gateway's writes around an event to the targets, `fo01` and `fo03` are the cases.

mod fo01;
mod fo03;
mod judge;
mod measure;

use std::sync::Arc;
use std::time::Duration;

use crate::case::Case;
use crate::harness::{
    App, CaseResult, Http, Orchestrated, Phases, Recorder, SERVERS, WriteRecord, Writers, config,
};
use crate::routes::REPLICATED_SERVERS;
use crate::topology::{Event, Orchestrator, Replication, Route, Scenario};

/// How often a writer repeats a write after a retryable answer (with its key, 200 ms
/// apart): enough to outlast Patroni's unplanned failover, which waits out the leader
/// lock's 20 s time to live.
const CLIENT_RETRIES: u32 = 400;

/// How long after a route to the new primary took a side write the gateway must have
/// acknowledged one of its own.
const FIRST_WRITE_TARGET: Duration = Duration::from_secs(1);

/// How long a failover, a switchover or a probe of one may take on a loaded machine.
const EVENT_BOUND: Duration = Duration::from_secs(90);

/// How long a node may take to come back as a standby (a rewind included).
const REJOIN_BOUND: Duration = Duration::from_secs(120);

/// How long the writers may take to get a number of writes through.
const LOAD_BOUND: Duration = Duration::from_secs(60);

/// A gateway on one route.
struct Gateway {
    route: Route,
    app: App,
}

/// What FO-01 leaves for FO-03.
struct AfterFailover {
    /// The node that was the primary before the event.
    old: usize,
    /// The primary after it.
    new: usize,
    /// FO-01's writes, by gateway (in the order of the scenario's routes).
    records: Vec<Vec<WriteRecord>>,
    /// The acknowledged writes the failover lost, by gateway.
    lost: Vec<Vec<String>>,
    /// The old primary was started again already.
    restarted: bool,
}

/// Runs `scenario`: FO-01, then FO-03 if it asks for it.
pub(crate) async fn scenario(phases: &Phases, scenario: &Scenario) -> CaseResult {
    let rec = phases.begin(Case::Fo01);
    rec.step(format!("starting {} (2 nodes)", scenario.cluster()));
    let cluster = Arc::new(Orchestrated::start(scenario.orchestrator, scenario.replication).await?);
    let mut gateways = Vec::new();
    for &route in &scenario.routes {
        let name = format!("gw-{}", route.slug());
        let mut settings = config(&cluster.url(route), &name);
        settings.deadline = scenario.deadline;
        settings.retries = 30;
        let app = App::start(&rec, settings).await?;
        app.wait_ready(Duration::from_secs(30)).await?;
        gateways.push(Gateway { route, app });
    }
    let failover = fo01::primary_failure(&rec, &cluster, &gateways, scenario).await?;
    if scenario.old_primary_returns {
        let rec = phases.begin(Case::Fo03);
        fo03::old_primary_returns(&rec, &cluster, &gateways, scenario, failover).await?;
    }
    for gateway in gateways {
        gateway.app.shutdown().await;
    }
    Ok(())
}

/// Where the scenario's writers create their servers.
fn writes_path(scenario: &Scenario) -> &'static str {
    match scenario.replication {
        Replication::Waited => REPLICATED_SERVERS,
        Replication::Synchronous | Replication::Asynchronous => SERVERS,
    }
}

/// The writers of every gateway, recording on `rec`'s timeline.
fn start_writers(
    rec: &Recorder,
    gateways: &[Gateway],
    scenario: &Scenario,
    case: &str,
) -> Vec<Writers> {
    gateways
        .iter()
        .map(|g| {
            let http = Http::new(g.app.server.url(), rec.clone());
            let prefix = format!("{case}-{}", g.route.slug());
            Writers::start(
                &http,
                writes_path(scenario),
                &prefix,
                scenario.writers,
                CLIENT_RETRIES,
                scenario.pause,
            )
        })
        .collect()
}

/// Waits until every gateway's writers got `more` writes through beyond `since`.
async fn wait_more(loads: &[Writers], since: &[usize], more: usize) -> bool {
    let mut all = true;
    for (load, &before) in loads.iter().zip(since) {
        all &= load.wait_acked(before + more, LOAD_BOUND).await;
    }
    all
}

fn acked(loads: &[Writers]) -> Vec<usize> {
    loads.iter().map(Writers::acked).collect()
}

/// Whether a scenario's acknowledged writes must survive its event: a switchover
/// loses nothing, nor a failover with synchronous replication (pg_auto_failover's,
/// or Patroni's `synchronous_mode`), nor writes that waited for a standby.
fn lossless(scenario: &Scenario) -> bool {
    scenario.event == Event::Switchover
        || scenario.orchestrator == Orchestrator::AutoFailover
        || scenario.replication != Replication::Asynchronous
}

/// What the gateway's runtime counted, as a note.
fn note_metrics(rec: &Recorder, gateway: &Gateway) {
    let m = gateway.app.metrics();
    rec.note(format!(
        "{}: runtime: {} calls, {} connection retries, {} read-only retries, {} retry budget \
         refusals, {} stale connections replaced, {} ambiguous commits checked by key, {} \
         stored results returned",
        gateway.route.label(),
        m.calls,
        m.retries_connection,
        m.retries_read_only,
        m.budget_refusals,
        m.stale_connections_replaced,
        m.ambiguous_checked_by_key,
        m.stored_results_returned
    ));
}

/// `"none"` for an empty tally.
fn none_if_empty(tally: String) -> String {
    if tally.is_empty() {
        "none".to_owned()
    } else {
        tally
    }
}

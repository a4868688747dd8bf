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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::case::Case;
use crate::harness::{
    App, Audit, CaseError, CaseResult, Http, Orchestrated, Recorder, Reply, SERVERS, WriteRecord,
    Writers, audit, config, in_recovery_at, registry_at, stop, tally, terminate_at,
};
use crate::routes::REPLICATED_SERVERS;
use crate::runner::Phases;
use crate::text::secs;
use crate::topology::{Event, Replication, Route, Scenario};

/// Keyed writers per gateway.
const WRITERS: usize = 4;

/// How often a writer repeats a write after a retryable answer (with its key, 200 ms
/// apart): enough to outlast Patroni's unplanned failover, which waits out the leader
/// lock's 20 s time to live.
const CLIENT_RETRIES: u32 = 400;

/// The gateway's deadline per call.
const DEADLINE: Duration = Duration::from_secs(10);

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
        settings.deadline = DEADLINE;
        settings.retries = 30;
        let app = App::start(&rec, settings).await?;
        app.wait_ready(Duration::from_secs(30)).await?;
        gateways.push(Gateway { route, app });
    }
    let failover = primary_failure(&rec, &cluster, &gateways, scenario).await?;
    if scenario.old_primary_returns {
        let rec = phases.begin(Case::Fo03);
        old_primary_returns(&rec, &cluster, &gateways, scenario, failover).await?;
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
fn start_writers(rec: &Recorder, gateways: &[Gateway], scenario: &Scenario, case: &str) -> Vec<Writers> {
    gateways
        .iter()
        .map(|g| {
            let http = Http::new(g.app.server.url(), rec.clone());
            let prefix = format!("{case}-{}", g.route.slug());
            Writers::start(&http, writes_path(scenario), &prefix, WRITERS, CLIENT_RETRIES)
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

/// When the routes to the new primary took a side write after the event.
struct Writable {
    /// The new primary, on a connection straight to it.
    node: Instant,
    /// Each route, in the scenario's order.
    routes: Vec<Instant>,
}

/// Runs `event` and measures when the new primary `new`, then each route to it, took a
/// write on a side connection. A route is probed from the moment no write through it
/// can land on the old primary any more: at once after a kill, once the new primary
/// took its first write after a switchover (the orchestrators demote the old primary
/// before they promote the new one). Returns the instant of the event (the command
/// issued, or the killed node's processes gone).
async fn event_and_writable(
    cluster: &Arc<Orchestrated>,
    event: Event,
    new: usize,
    routes: &[Route],
) -> Result<(Instant, Writable), CaseError> {
    let spawn_route_probes = |routes: &[Route]| {
        routes
            .iter()
            .map(|&route| {
                let cluster = cluster.clone();
                tokio::spawn(async move { cluster.wait_writable(route, EVENT_BOUND).await })
            })
            .collect::<Vec<_>>()
    };
    let node_probe = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            cluster
                .wait_writable_via(resilient_tx_testkit::Via::Node(new), EVENT_BOUND)
                .await
        })
    };
    let issued = Instant::now();
    let (at, route_probes) = match event {
        Event::Switchover => {
            let promoted = cluster.switchover().await?;
            if promoted != new {
                return Err(stop(format!("the switchover went to node {promoted}, not {new}")));
            }
            (issued, None)
        }
        Event::Kill => {
            let killed = cluster.kill_primary().await?;
            (Instant::from_std(killed.at), Some(spawn_route_probes(routes)))
        }
    };
    let node = node_probe.await.map_err(|e| stop(e.to_string()))??;
    let route_probes = route_probes.unwrap_or_else(|| spawn_route_probes(routes));
    let mut writable = Vec::new();
    for probe in route_probes {
        writable.push(Instant::from_std(
            probe.await.map_err(|e| stop(e.to_string()))??,
        ));
    }
    Ok((
        at,
        Writable {
            node: Instant::from_std(node),
            routes: writable,
        },
    ))
}

/// The first write acknowledged after `after`: how long after it.
fn first_ack_after(records: &[WriteRecord], after: Instant) -> Option<Duration> {
    records
        .iter()
        .filter(|r| r.acked() && r.finished >= after)
        .map(|r| r.finished - after)
        .min()
}

/// The longest time without an acknowledged write, from `from` on.
fn longest_gap(records: &[WriteRecord], from: Instant) -> Duration {
    let mut acks: Vec<Instant> = records
        .iter()
        .filter(|r| r.acked() && r.finished >= from)
        .map(|r| r.finished)
        .collect();
    acks.sort();
    let mut previous = from;
    let mut gap = Duration::ZERO;
    for at in acks {
        gap = gap.max(at - previous);
        previous = at;
    }
    gap
}

fn non_2xx(records: &[WriteRecord]) -> Vec<&Reply> {
    records
        .iter()
        .flat_map(|r| &r.replies)
        .filter(|r| !r.ok())
        .collect()
}

/// The figures and checks of one gateway's writes around one event: time to the new
/// primary and to the gateway's first write, the answers, and the writes set against
/// the registry read afterwards. Returns the first write's delay.
#[allow(clippy::too_many_arguments)]
fn judge_event(
    rec: &Recorder,
    route: Route,
    event: Event,
    lossless: bool,
    at: Instant,
    node_writable: Instant,
    route_writable: Instant,
    records: &[WriteRecord],
    registry: &HashMap<String, i64>,
) -> Option<Duration> {
    let r = route.label();
    rec.figure(
        format!("{r}: writable after the event"),
        format!(
            "{} through {r}, {} on the new primary itself",
            secs(route_writable - at),
            secs(node_writable.saturating_duration_since(at))
        ),
    );
    let first = first_ack_after(records, route_writable);
    let first_after_node = first_ack_after(records, node_writable);
    let none = || "none".to_owned();
    rec.figure(
        format!("{r}: first gateway write after that"),
        format!(
            "{} after the side write through {r}, {} after the one on the new primary itself",
            first.map(secs).unwrap_or_else(none),
            first_after_node.map(secs).unwrap_or_else(none)
        ),
    );
    rec.figure(
        format!("{r}: longest time without an acknowledged write"),
        secs(longest_gap(records, at)),
    );
    let all: Vec<&Reply> = records.iter().flat_map(|r| &r.replies).collect();
    let bad = non_2xx(records);
    rec.figure(format!("{r}: answers"), tally(all.iter().copied()));
    let Audit {
        acked,
        lost,
        wrong_id,
        unknown,
        ..
    } = audit(records, registry, true);
    rec.check(
        first.is_some_and(|first| first <= FIRST_WRITE_TARGET),
        format!(
            "{r}: the gateway's first write came within {} of a side write through {r} \
             ({})",
            secs(FIRST_WRITE_TARGET),
            first.map(secs).unwrap_or_else(|| "none at all".to_owned())
        ),
    );
    match event {
        Event::Switchover => rec.check(
            bad.is_empty(),
            format!(
                "{r}: every answer during the switchover was a success, none a 5xx ({})",
                tally(bad.iter().copied())
            ),
        ),
        Event::Kill => rec.check(
            bad.iter()
                .all(|b| b.status == 503 && b.retry_after.is_some() && b.acceptable()),
            format!(
                "{r}: while there was no primary the gateway answered 503 with Retry-After, \
                 never a 500 (not 2xx: {})",
                tally(bad.iter().copied())
            ),
        ),
    };
    if lossless {
        rec.check(
            lost.is_empty(),
            format!(
                "{r}: every acknowledged write is on the new primary ({acked} acknowledged, \
                 lost: {lost:?})"
            ),
        );
    } else {
        rec.figure(
            format!("{r}: acknowledged writes lost (asynchronous replication)"),
            format!("{} of {acked}", lost.len()),
        );
        if !lost.is_empty() {
            rec.note(format!(
                "{r}: {} acknowledged write(s) lost: committed on the old primary, not yet \
                 on the standby when it died ({lost:?})",
                lost.len()
            ));
        }
    }
    rec.check(
        wrong_id.is_empty() && !bad.iter().any(|b| b.status == 409),
        format!(
            "{r}: none applied twice: each under the id its client was given, no 409 \
             (mismatched: {wrong_id:?})"
        ),
    );
    rec.check(
        unknown == 0,
        format!("{r}: every write was acknowledged in the end ({unknown} were not)"),
    );
    first
}

/// Whether a scenario's acknowledged writes must survive its event: a switchover
/// loses nothing, nor a failover with synchronous replication (pg_auto_failover's,
/// or Patroni's `synchronous_mode`), nor writes that waited for a standby.
fn lossless(scenario: &Scenario) -> bool {
    scenario.event == Event::Switchover
        || scenario.orchestrator == crate::topology::Orchestrator::AutoFailover
        || scenario.replication != Replication::Asynchronous
}

/// FO-01.
async fn primary_failure(
    rec: &Recorder,
    cluster: &Arc<Orchestrated>,
    gateways: &[Gateway],
    scenario: &Scenario,
) -> Result<AfterFailover, CaseError> {
    let old = cluster.primary().await?;
    let new = (old + 1) % 2;
    rec.step(format!(
        "{WRITERS} keyed writers per gateway, repeating a write with its key after a 503"
    ));
    let loads = start_writers(rec, gateways, scenario, "fo01");
    let before = acked(&loads);
    if !wait_more(&loads, &before, 10).await {
        return Err(stop("the writers did not get 10 writes through before the event"));
    }
    let before = acked(&loads);
    let what = match scenario.event {
        Event::Switchover => format!(
            "{} from node {old} to node {new}",
            scenario.orchestrator.switchover_command()
        ),
        Event::Kill => format!("SIGKILL of node {old}, the primary"),
    };
    rec.step(&what);
    let (at, writable) = event_and_writable(cluster, scenario.event, new, &scenario.routes).await?;
    let last_writable = writable.routes.iter().copied().max().unwrap_or(writable.node);
    rec.fault_window(&what, at, last_writable);
    rec.step(format!(
        "the new primary took a side write {} after the event",
        secs(writable.node.saturating_duration_since(at))
    ));
    let resumed = wait_more(&loads, &before, 20).await;
    let primary = cluster.wait_whole(EVENT_BOUND).await?;
    rec.check(
        primary == new && resumed,
        format!(
            "node {new} is the primary and every gateway's writes went on there, without a \
             restart (primary: node {primary})"
        ),
    );
    let mut records = Vec::new();
    for load in loads {
        records.push(load.stop().await?);
    }
    let registry = registry_at(&cluster.node_url(new)).await?;
    let mut slowest = None;
    for ((gateway, records), &route_writable) in gateways.iter().zip(&records).zip(&writable.routes)
    {
        let first = judge_event(
            rec,
            gateway.route,
            scenario.event,
            lossless(scenario),
            at,
            writable.node,
            route_writable,
            records,
            &registry,
        );
        if let Some(first) = first {
            if slowest.is_none_or(|(_, s)| first > s) {
                slowest = Some((route_writable, first));
            }
        }
        note_metrics(rec, gateway);
    }
    if let Some((from, took)) = slowest {
        rec.recovery(from, took);
    }
    let lost: Vec<Vec<String>> = records
        .iter()
        .map(|r| audit(r, &registry, true).lost)
        .collect();
    rec.summary(format!(
        "{}: writable {} after the event; first gateway write {} after that (slowest \
         route); {} acknowledged writes, {} lost; answers not 2xx: {}",
        scenario.event,
        secs(last_writable - at),
        slowest.map(|(_, t)| secs(t)).unwrap_or_else(|| "-".to_owned()),
        records.iter().flatten().filter(|r| r.acked()).count(),
        lost.iter().map(Vec::len).sum::<usize>(),
        none_if_empty(tally(records.iter().flat_map(|r| non_2xx(r)))),
    ));
    Ok(AfterFailover {
        old,
        new,
        records,
        lost,
    })
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

/// FO-03.
async fn old_primary_returns(
    rec: &Recorder,
    cluster: &Arc<Orchestrated>,
    gateways: &[Gateway],
    scenario: &Scenario,
    failover: AfterFailover,
) -> CaseResult {
    let AfterFailover {
        old,
        new,
        records,
        lost,
    } = failover;
    let loads = start_writers(rec, gateways, scenario, "fo03");
    let before = acked(&loads);
    if !wait_more(&loads, &before, 10).await {
        return Err(stop("the writers did not get 10 writes through on the new primary"));
    }

    let back = Instant::now();
    if scenario.event == Event::Kill {
        rec.step(format!(
            "starting node {old} again: the orchestrator makes the old primary a standby"
        ));
        cluster.start_node(old)?;
    } else {
        rec.step(format!("node {old}, the old primary, follows node {new} as a standby"));
    }
    let primary = cluster.wait_whole(REJOIN_BOUND).await?;
    let standby = in_recovery_at(&cluster.node_url(old)).await?;
    rec.fault_window(format!("node {old} back as a standby"), back, Instant::now());
    rec.check(
        primary == new && standby,
        format!(
            "node {old} is back as a standby of node {new} (primary: node {primary}, node {old} \
             in recovery: {standby})"
        ),
    );

    rec.step("ending every gateway connection, so that each gateway chooses a server again");
    let before = acked(&loads);
    for gateway in gateways {
        let ended = terminate_at(&cluster.node_url(new), &gateway.app.application_name).await?;
        rec.fault_at(
            Instant::now(),
            format!("{}: {ended} connections ended", gateway.route.label()),
        );
    }
    let continued = wait_more(&loads, &before, 20).await;
    rec.check(
        continued,
        format!(
            "with the old primary back (a standby, listed first in the multi-host URL on port \
             {}), every gateway's writes go on on node {new}",
            cluster.node_port(old)
        ),
    );

    rec.step(format!(
        "{}: the old primary, node {old}, becomes the primary again",
        scenario.orchestrator.switchover_command()
    ));
    let before = acked(&loads);
    let (at, writable) = event_and_writable(cluster, Event::Switchover, old, &scenario.routes).await?;
    let last_writable = writable.routes.iter().copied().max().unwrap_or(writable.node);
    rec.fault_window(format!("switchover back to node {old}"), at, last_writable);
    let resumed = wait_more(&loads, &before, 20).await;
    rec.check(resumed, format!("writes went on on node {old} after the switchover back"));
    let mut records_back = Vec::new();
    for load in loads {
        records_back.push(load.stop().await?);
    }

    let on_old = registry_at(&cluster.node_url(old)).await?;
    let mut slowest = None;
    for (i, gateway) in gateways.iter().enumerate() {
        let r = gateway.route.label();
        let first = judge_event(
            rec,
            gateway.route,
            Event::Switchover,
            true,
            at,
            writable.node,
            writable.routes[i],
            &records_back[i],
            &on_old,
        );
        if let Some(first) = first {
            if slowest.is_none_or(|(_, s)| first > s) {
                slowest = Some((writable.routes[i], first));
            }
        }
        // FO-01's writes: those the failover kept are still there, once; those it lost
        // stay lost (a rewound old primary must not bring them back).
        let now = audit(&records[i], &on_old, true);
        let mut lost_now = now.lost.clone();
        lost_now.sort();
        let mut lost_then = lost[i].clone();
        lost_then.sort();
        let back: Vec<&String> = lost_then.iter().filter(|n| !lost_now.contains(n)).collect();
        let missing: Vec<&String> = lost_now.iter().filter(|n| !lost_then.contains(n)).collect();
        rec.check(
            back.is_empty() && missing.is_empty() && now.wrong_id.is_empty(),
            format!(
                "{r}: on node {old}, primary again, FO-01's acknowledged writes are as the \
                 failover left them: the {} it kept each once under its id, the {} it lost \
                 still absent (back: {back:?}; missing now: {missing:?}; mismatched: {:?})",
                now.acked - lost_then.len(),
                lost_then.len(),
                now.wrong_id
            ),
        );
        note_metrics(rec, gateway);
    }
    if let Some((from, took)) = slowest {
        rec.recovery(from, took);
    }
    rec.summary(format!(
        "node {old} back as a standby, skipped by every route; switched back to it: writable \
         {} after the command, first gateway write {} after that; {} acknowledged writes, \
         answers not 2xx: {}",
        secs(last_writable - at),
        slowest.map(|(_, t)| secs(t)).unwrap_or_else(|| "-".to_owned()),
        records_back.iter().flatten().filter(|r| r.acked()).count(),
        none_if_empty(tally(records_back.iter().flat_map(|r| non_2xx(r)))),
    ));
    Ok(())
}

/// `"none"` for an empty tally.
fn none_if_empty(tally: String) -> String {
    if tally.is_empty() {
        "none".to_owned()
    } else {
        tally
    }
}

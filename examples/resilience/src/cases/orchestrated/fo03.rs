//! FO-03 under an orchestrator: the old primary back as a standby, every gateway
//! choosing its server again, and a switchover that makes the old primary the primary
//! again; FO-01's writes as the failover left them.

use std::sync::Arc;

use tokio::time::Instant;

use super::judge::{Around, judge_event};
use super::measure::{event_and_writable, non_2xx};
use super::{
    AfterFailover, Gateway, REJOIN_BOUND, acked, none_if_empty, note_metrics, start_writers,
    wait_more,
};
use crate::harness::{
    CaseResult, Orchestrated, Recorder, audit, in_recovery_at, registry_at, stop, tally,
    terminate_at,
};
use crate::text::secs;
use crate::topology::{Event, Replication, Scenario};

/// FO-03.
pub(super) async fn old_primary_returns(
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
        restarted,
    } = failover;
    let loads = start_writers(rec, gateways, scenario, "fo03");
    let before = acked(&loads);
    if !wait_more(&loads, &before, 10).await {
        return Err(stop(
            "the writers did not get 10 writes through on the new primary",
        ));
    }

    let back = Instant::now();
    if scenario.event == Event::Kill && !restarted {
        rec.step(format!(
            "starting node {old} again: the orchestrator makes the old primary a standby"
        ));
        cluster.start_node(old)?;
    } else {
        rec.step(format!(
            "node {old}, the old primary, follows node {new} as a standby"
        ));
    }
    let primary = cluster.wait_whole(REJOIN_BOUND).await?;
    let standby = in_recovery_at(&cluster.node_url(old)).await?;
    rec.fault_window(
        format!("node {old} back as a standby"),
        back,
        Instant::now(),
    );
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
    let (at, writable) =
        event_and_writable(cluster, Event::Switchover, old, &scenario.routes, None).await?;
    let last_writable = writable
        .routes
        .iter()
        .copied()
        .max()
        .unwrap_or(writable.node);
    rec.fault_window(format!("switchover back to node {old}"), at, last_writable);
    let resumed = wait_more(&loads, &before, 20).await;
    rec.check(
        resumed,
        format!("writes went on on node {old} after the switchover back"),
    );
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
            &Around {
                route: gateway.route,
                event: Event::Switchover,
                lossless: true,
                waited: scenario.replication == Replication::Waited,
                at,
                node_writable: writable.node,
                route_writable: writable.routes[i],
                standby_back: None,
                records: &records_back[i],
                registry: &on_old,
            },
        );
        if let Some(first) = first
            && slowest.is_none_or(|(_, s)| first > s)
        {
            slowest = Some((writable.routes[i], first));
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
        slowest
            .map(|(_, t)| secs(t))
            .unwrap_or_else(|| "-".to_owned()),
        records_back.iter().flatten().filter(|r| r.acked()).count(),
        none_if_empty(tally(records_back.iter().flat_map(|r| non_2xx(r)))),
    ));
    Ok(())
}

//! FO-01 under an orchestrator: the event under load, timed, and every gateway's
//! writes judged against the new primary's registry.

use std::sync::Arc;

use tokio::time::Instant;

use super::judge::{Around, judge_event};
use super::measure::{event_and_writable, non_2xx};
use super::{
    AfterFailover, EVENT_BOUND, Gateway, REJOIN_BOUND, acked, lossless, none_if_empty,
    note_metrics, start_writers, wait_more,
};
use crate::harness::{CaseError, Orchestrated, Recorder, audit, registry_at, stop, tally};
use crate::text::secs;
use crate::topology::{Event, Replication, Scenario};

/// FO-01.
pub(super) async fn primary_failure(
    rec: &Recorder,
    cluster: &Arc<Orchestrated>,
    gateways: &[Gateway],
    scenario: &Scenario,
) -> Result<AfterFailover, CaseError> {
    let old = cluster.primary().await?;
    let new = (old + 1) % 2;
    rec.step(format!(
        "{}, repeating a write with its key after a 503",
        scenario.load_label()
    ));
    rec.figure("load", scenario.load_label());
    let loads = start_writers(rec, gateways, scenario, "fo01");
    let before = acked(&loads);
    if !wait_more(&loads, &before, 10).await {
        return Err(stop(
            "the writers did not get 10 writes through before the event",
        ));
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
    let (at, writable) = event_and_writable(
        cluster,
        scenario.event,
        new,
        &scenario.routes,
        scenario.standby_lag,
    )
    .await?;
    let last_writable = writable
        .routes
        .iter()
        .copied()
        .max()
        .unwrap_or(writable.node);
    rec.fault_window(&what, at, last_writable);
    rec.step(format!(
        "the new primary took a side write {} after the event",
        secs(writable.node.saturating_duration_since(at))
    ));
    // Writes that wait for a standby cannot be acknowledged while the new primary has
    // none: the old primary is started again to be one (as FO-03 would).
    let standby_back =
        if scenario.replication == Replication::Waited && scenario.event == Event::Kill {
            rec.step(format!(
                "no standby is left to confirm a write: starting node {old} again to be one"
            ));
            let back = Instant::now();
            cluster.start_node(old)?;
            cluster.wait_whole(REJOIN_BOUND).await?;
            rec.fault_window(
                format!("node {old} coming back as a standby"),
                back,
                Instant::now(),
            );
            Some(back)
        } else {
            None
        };
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
            &Around {
                route: gateway.route,
                event: scenario.event,
                lossless: lossless(scenario),
                waited: scenario.replication == Replication::Waited,
                at,
                node_writable: writable.node,
                route_writable,
                standby_back,
                records,
                registry: &registry,
            },
        );
        if let Some(first) = first
            && slowest.is_none_or(|(_, s)| first > s)
        {
            slowest = Some((route_writable, first));
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
        slowest
            .map(|(_, t)| secs(t))
            .unwrap_or_else(|| "-".to_owned()),
        records.iter().flatten().filter(|r| r.acked()).count(),
        lost.iter().map(Vec::len).sum::<usize>(),
        none_if_empty(tally(records.iter().flat_map(|r| non_2xx(r)))),
    ));
    Ok(AfterFailover {
        old,
        new,
        records,
        lost,
        restarted: standby_back.is_some(),
    })
}

//! Running an event and timing it: when the new primary, and each route to it, took
//! a write on a side connection (the test kit's `wait_writable`); when the gateway's
//! writes came back.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::EVENT_BOUND;
use crate::harness::{CaseError, Orchestrated, Reply, WriteRecord, stop};
use crate::topology::{Event, Route};

/// When the routes to the new primary took a side write after the event.
pub(super) struct Writable {
    /// The new primary, on a connection straight to it.
    pub(super) node: Instant,
    /// Each route, in the scenario's order.
    pub(super) routes: Vec<Instant>,
}

/// Runs `event` and measures when the new primary `new`, then each route to it, took a
/// write on a side connection. A route is probed from the moment no write through it
/// can land on the old primary any more: at once after a kill, once the new primary
/// took its first write after a switchover (the orchestrators demote the old primary
/// before they promote the new one). Returns the instant of the event (the command
/// issued, or the killed node's processes gone).
pub(super) async fn event_and_writable(
    cluster: &Arc<Orchestrated>,
    event: Event,
    new: usize,
    routes: &[Route],
    standby_lag: Option<Duration>,
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
                return Err(stop(format!(
                    "the switchover went to node {promoted}, not {new}"
                )));
            }
            (issued, None)
        }
        Event::Kill => {
            let frozen = match standby_lag {
                Some(lag) => {
                    let old = cluster.primary().await?;
                    let frozen = cluster.freeze_senders(old).await?;
                    tokio::time::sleep(lag).await;
                    Some(frozen)
                }
                None => None,
            };
            let killed = cluster.kill_primary().await?;
            drop(frozen);
            (
                Instant::from_std(killed.at),
                Some(spawn_route_probes(routes)),
            )
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

pub(super) fn non_2xx(records: &[WriteRecord]) -> Vec<&Reply> {
    records
        .iter()
        .flat_map(|r| &r.replies)
        .filter(|r| !r.ok())
        .collect()
}

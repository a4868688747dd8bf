//! Reading a Patroni cluster's state from Patroni's REST API: `GET /cluster`
//! for the members, `GET /primary` for "this node leads and runs".

use std::io;
use std::time::Duration;

use serde::Deserialize;

use crate::daemon;
use crate::patroni_node::PatroniNode;
use crate::rest;
use crate::wait::{self, Probe};

pub(crate) use rest::client;

/// One member of a Patroni cluster, as `GET /cluster` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PatroniMember {
    /// Member name (`node<index>`).
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, …
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, `creating replica`, …
    pub state: String,
    /// PostgreSQL's port.
    pub port: u16,
    /// The timeline, when PostgreSQL runs.
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Replication lag in bytes; `None` when unknown (or for the leader).
    #[serde(default, deserialize_with = "lag")]
    pub lag: Option<u64>,
}

/// Patroni reports the lag as a number of bytes or as the string "unknown".
fn lag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(deserializer)?.as_u64())
}

#[derive(Deserialize)]
struct ClusterResponse {
    members: Vec<PatroniMember>,
}

/// Whether a member holds the leader lock (`master` in older Patroni
/// versions).
fn is_leader(member: &PatroniMember) -> bool {
    matches!(member.role.as_str(), "leader" | "master")
}

/// Whether a member's PostgreSQL runs (`streaming` is what newer Patroni
/// versions report for a replica that streams).
fn is_up(member: &PatroniMember) -> bool {
    matches!(member.state.as_str(), "running" | "streaming")
}

/// The members, from the first running node whose REST API answers.
pub(crate) async fn members(
    client: &reqwest::Client,
    nodes: &[PatroniNode],
) -> io::Result<Vec<PatroniMember>> {
    let mut errors = Vec::new();
    for node in nodes.iter().filter(|node| node.is_running()) {
        let url = format!("{}/cluster", node.rest_url());
        match rest::get(client, &url).await {
            Ok((200, body)) => {
                return serde_json::from_str::<ClusterResponse>(&body)
                    .map(|cluster| cluster.members)
                    .map_err(|e| {
                        io::Error::other(format!("unexpected answer of {url}: {e}: {body}"))
                    });
            }
            Ok((status, body)) => errors.push(format!("{url}: {status} {body}")),
            Err(e) => errors.push(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotConnected,
        format!("no Patroni REST API answered: {}", errors.join("; ")),
    ))
}

/// The node index of the running leader among `members`. A node we killed
/// is no leader, although its lock lives on in etcd until it expires.
pub(crate) fn leader_of(members: &[PatroniMember], nodes: &[PatroniNode]) -> Option<usize> {
    let leader = members.iter().find(|m| is_leader(m) && is_up(m))?;
    nodes
        .iter()
        .position(|node| node.name() == leader.name && node.is_running())
}

/// The leader's index if exactly the `running` nodes are members, one leads
/// and all others stream with a known lag, and (in synchronous mode, with
/// more than one node) one of them is the synchronous standby.
pub(crate) fn healthy_leader(
    members: &[PatroniMember],
    running: &[&PatroniNode],
    synchronous_mode: bool,
) -> Option<usize> {
    let member = |node: &PatroniNode| members.iter().find(|m| m.name == node.name());
    let leaders: Vec<&PatroniNode> = running
        .iter()
        .copied()
        .filter(|node| member(node).is_some_and(|m| is_leader(m) && is_up(m)))
        .collect();
    let [leader] = leaders.as_slice() else {
        return None;
    };
    let replicas_stream = running
        .iter()
        .filter(|node| node.index() != leader.index())
        .all(|node| {
            member(node).is_some_and(|m| {
                matches!(m.role.as_str(), "replica" | "sync_standby") && is_up(m) && m.lag.is_some()
            })
        });
    let sync_ok = !synchronous_mode
        || running.len() < 2
        || members.iter().any(|m| m.role == "sync_standby" && is_up(m));
    (replicas_stream && sync_ok).then_some(leader.index())
}

/// `node0 leader running, node1 replica streaming lag 0` for messages.
pub(crate) fn describe(members: &[PatroniMember]) -> String {
    if members.is_empty() {
        return "no members".to_owned();
    }
    members
        .iter()
        .map(|m| {
            let lag = m.lag.map(|lag| format!(" lag {lag}")).unwrap_or_default();
            format!("{} {} {}{lag}", m.name, m.role, m.state)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `node`'s own REST API answers `GET path` (`/primary`,
/// `/replica`, …) with 200; `Err` says what it answered instead.
pub(crate) async fn confirms(
    client: &reqwest::Client,
    node: &PatroniNode,
    path: &str,
) -> Result<(), String> {
    let url = format!("{}{path}", node.rest_url());
    match rest::get(client, &url).await {
        Ok((200, _)) => Ok(()),
        Ok((status, _)) => Err(format!("GET {url}: {status}")),
        Err(e) => Err(e),
    }
}

/// Waits until `node`'s REST API answers `GET /primary` with 200: it holds
/// the leader lock and its PostgreSQL runs as primary.
pub(crate) async fn wait_primary(
    client: &reqwest::Client,
    node: &PatroniNode,
    timeout: Duration,
) -> io::Result<()> {
    let url = format!("{}/primary", node.rest_url());
    let what = format!("{} to lead (GET {url} answering 200)", node.name());
    wait::until(&what, timeout, &[node.log_path()], || async {
        if let Some(how) = node.exit_status() {
            return Probe::Failed(format!("Patroni of {} stopped: {how}", node.name()));
        }
        if daemon::log_shows_port_clash(node.log_path()) {
            return Probe::Failed(format!("a port of {} is already in use", node.name()));
        }
        match confirms(client, node, "/primary").await {
            Ok(()) => Probe::Ready(()),
            Err(why) => Probe::NotYet(why),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_members_of_get_cluster() {
        let body = r#"{"members": [
            {"name": "node0", "role": "leader", "state": "running", "api_url": "x",
             "host": "127.0.0.1", "port": 24010, "timeline": 1},
            {"name": "node1", "role": "replica", "state": "creating replica",
             "host": "127.0.0.1", "port": 24011, "lag": "unknown"},
            {"name": "node2", "role": "sync_standby", "state": "streaming",
             "host": "127.0.0.1", "port": 24012, "timeline": 1, "lag": 0}]}"#;
        let members = serde_json::from_str::<ClusterResponse>(body)
            .expect("parses")
            .members;
        assert_eq!(members.len(), 3);
        assert_eq!(members[0].lag, None);
        assert_eq!(members[1].lag, None);
        assert_eq!(members[2].lag, Some(0));
        assert_eq!(
            describe(&members),
            "node0 leader running, node1 replica creating replica, node2 sync_standby streaming lag 0"
        );
    }
}

//! What the failover cases run against: a hand-promoted streaming replica (the
//! matrix's own FO-01 and FO-03), or a real orchestrator — Patroni behind HAProxy, or
//! pg_auto_failover — with the event it handles, the route the gateway takes to the
//! primary, and how the cluster replicates. A [`Scenario`] is one such run.

use std::fmt;
use std::time::Duration;

/// Which servers FO-01 and FO-03 fail over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// A primary and a streaming replica the case stops and promotes itself (the
    /// matrix's cases).
    Replica,
    /// Patroni on a local etcd, behind HAProxy.
    Patroni,
    /// A pg_auto_failover monitor and its nodes.
    AutoFailover,
}

impl Topology {
    /// The name the demo's `--topology` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Topology::Replica => "replica",
            Topology::Patroni => "patroni",
            Topology::AutoFailover => "auto-failover",
        }
    }

    /// The topology whose [`flag`](Self::flag) is `name`.
    pub fn from_flag(name: &str) -> Option<Topology> {
        [Topology::Replica, Topology::Patroni, Topology::AutoFailover]
            .into_iter()
            .find(|t| t.flag() == name)
    }

    /// The orchestrator, unless the case promotes the replica itself.
    pub fn orchestrator(self) -> Option<Orchestrator> {
        match self {
            Topology::Replica => None,
            Topology::Patroni => Some(Orchestrator::Patroni),
            Topology::AutoFailover => Some(Orchestrator::AutoFailover),
        }
    }
}

/// A real failover manager the kit starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Orchestrator {
    /// Patroni on etcd, behind HAProxy: routes through HAProxy and the multi-host URL.
    Patroni,
    /// pg_auto_failover: the formation's multi-host URL only (it has no proxy).
    AutoFailover,
}

impl Orchestrator {
    /// The routes a gateway can take to its primary.
    pub fn routes(self) -> &'static [Route] {
        match self {
            Orchestrator::Patroni => &[Route::Proxy, Route::MultiHost],
            Orchestrator::AutoFailover => &[Route::MultiHost],
        }
    }

    /// How the orchestrator moves the primary in a planned switchover.
    pub fn switchover_command(self) -> &'static str {
        match self {
            Orchestrator::Patroni => "patronictl switchover",
            Orchestrator::AutoFailover => "pg_autoctl perform switchover",
        }
    }
}

impl fmt::Display for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Orchestrator::Patroni => "Patroni",
            Orchestrator::AutoFailover => "pg_auto_failover",
        })
    }
}

/// What happens to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A planned switchover, by the orchestrator's own command.
    Switchover,
    /// An unplanned failover: the primary's node (Patroni or `pg_autoctl`, and PostgreSQL)
    /// is SIGKILLed, as in a machine crash.
    Kill,
}

impl Event {
    /// The name the demo's `--event` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Event::Switchover => "switchover",
            Event::Kill => "kill",
        }
    }

    /// The event whose [`flag`](Self::flag) is `name`.
    pub fn from_flag(name: &str) -> Option<Event> {
        [Event::Switchover, Event::Kill]
            .into_iter()
            .find(|e| e.flag() == name)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Event::Switchover => "planned switchover",
            Event::Kill => "unplanned failover (SIGKILL of the primary)",
        })
    }
}

/// How a gateway reaches the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Through HAProxy's write port (Patroni's `/primary` health check).
    Proxy,
    /// A URL listing every node with `target_session_attrs=read-write`.
    MultiHost,
}

impl Route {
    /// A short name for labels and row prefixes: `HAProxy`, `URL`.
    pub fn label(self) -> &'static str {
        match self {
            Route::Proxy => "HAProxy",
            Route::MultiHost => "URL",
        }
    }

    /// A name safe in row names and `application_name`s: `proxy`, `url`.
    pub fn slug(self) -> &'static str {
        match self {
            Route::Proxy => "proxy",
            Route::MultiHost => "url",
        }
    }
}

/// How a Patroni cluster replicates, and whether the gateway's writes wait for a
/// standby themselves (pg_auto_failover replicates synchronously once its standby
/// caught up, whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Replication {
    /// Patroni's `synchronous_mode`: a commit returns once the synchronous standby
    /// has it.
    Synchronous,
    /// Asynchronous streaming: an acknowledged commit may not have reached the
    /// standby when the primary dies.
    Asynchronous,
    /// Asynchronous streaming, the writes made with `replicated = "…"`: each call
    /// returns once a standby has flushed its commit, or says that none did.
    Waited,
}

impl Replication {
    /// The name the demo's `--replication` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Replication::Synchronous => "sync",
            Replication::Asynchronous => "async",
            Replication::Waited => "async-waited",
        }
    }

    /// The replication whose [`flag`](Self::flag) is `name`.
    pub fn from_flag(name: &str) -> Option<Replication> {
        [
            Replication::Synchronous,
            Replication::Asynchronous,
            Replication::Waited,
        ]
        .into_iter()
        .find(|r| r.flag() == name)
    }

    /// Whether Patroni runs with `synchronous_mode`.
    pub fn synchronous(self) -> bool {
        self == Replication::Synchronous
    }
}

/// One run of FO-01 (the event under load) and, with `old_primary_returns`, FO-03
/// (the old primary comes back and is made primary again) on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Who fails the primary over.
    pub orchestrator: Orchestrator,
    /// What happens to the primary.
    pub event: Event,
    /// How Patroni replicates (ignored by pg_auto_failover, which replicates
    /// synchronously once its standby caught up).
    pub replication: Replication,
    /// One gateway per route, all under load at the same time.
    pub routes: Vec<Route>,
    /// Go on with FO-03 after FO-01.
    pub old_primary_returns: bool,
    /// Keyed writers per gateway.
    pub writers: usize,
    /// How long each writer pauses after a write (0: back to back, the most writes in
    /// flight when the primary fails).
    pub pause: Duration,
    /// The gateways' deadline per call.
    pub deadline: Duration,
    /// Before a kill, the primary's WAL senders are stopped for this long (a standby
    /// that far behind); the kill follows, and takes the WAL they did not send.
    pub standby_lag: Option<Duration>,
}

impl Scenario {
    /// FO-01 and FO-03 under `orchestrator` after `event`, through every route it
    /// offers, replicating as `replication` says.
    pub fn new(orchestrator: Orchestrator, event: Event, replication: Replication) -> Scenario {
        Scenario {
            orchestrator,
            event,
            replication,
            routes: orchestrator.routes().to_vec(),
            old_primary_returns: true,
            writers: 4,
            pause: Duration::from_millis(20),
            deadline: Scenario::deadline_for(event),
            standby_lag: None,
        }
    }

    /// The gateways' deadline for `event`: 10 s for a switchover. 15 s for an unplanned
    /// failover: with 10 s, Patroni's outage of about 20 s (the leader lock's time to
    /// live) ends right where the writers' second calls reach their deadlines (2 × 10 s
    /// plus the client's 200 ms pause), and a call whose deadline runs out in the
    /// attempt that starts as the new primary comes up answers 504 `timeout` instead of
    /// 503 (see the README's known limits; `--deadline 10` shows it).
    pub fn deadline_for(event: Event) -> Duration {
        match event {
            Event::Switchover => Duration::from_secs(10),
            Event::Kill => Duration::from_secs(15),
        }
    }

    /// The cluster in words: `Patroni, synchronous_mode`, `pg_auto_failover`.
    pub fn cluster(&self) -> String {
        match (self.orchestrator, self.replication) {
            (Orchestrator::AutoFailover, _) => "pg_auto_failover".to_owned(),
            (Orchestrator::Patroni, Replication::Synchronous) => {
                "Patroni, synchronous_mode".to_owned()
            }
            (Orchestrator::Patroni, Replication::Asynchronous) => {
                "Patroni, asynchronous".to_owned()
            }
            (Orchestrator::Patroni, Replication::Waited) => {
                "Patroni, asynchronous, writes wait for a standby".to_owned()
            }
        }
    }

    /// The routes in words: `HAProxy + URL`.
    pub fn routes_label(&self) -> String {
        self.routes
            .iter()
            .map(|r| r.label())
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// One line naming the scenario, for the matrix and the report.
    pub fn label(&self) -> String {
        format!(
            "{}; {}; via {}",
            self.cluster(),
            self.event,
            self.routes_label()
        )
    }

    /// The load in words: `4 keyed writers per gateway, 20 ms apart`.
    pub fn load_label(&self) -> String {
        let pace = if self.pause.is_zero() {
            "back to back".to_owned()
        } else {
            format!("{} ms apart", self.pause.as_millis())
        };
        let lag = match self.standby_lag {
            Some(lag) if self.event == Event::Kill => {
                format!("; the standby {} ms behind at the kill", lag.as_millis())
            }
            _ => String::new(),
        };
        format!(
            "{} keyed writers per gateway, {pace}; gateway deadline {} s{lag}",
            self.writers,
            self.deadline.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_every_choice_once() {
        for topology in [Topology::Replica, Topology::Patroni, Topology::AutoFailover] {
            assert_eq!(Topology::from_flag(topology.flag()), Some(topology));
        }
        for event in [Event::Switchover, Event::Kill] {
            assert_eq!(Event::from_flag(event.flag()), Some(event));
        }
        for replication in [
            Replication::Synchronous,
            Replication::Asynchronous,
            Replication::Waited,
        ] {
            assert_eq!(
                Replication::from_flag(replication.flag()),
                Some(replication)
            );
        }
        assert_eq!(Topology::from_flag("kubernetes"), None);
    }

    #[test]
    fn a_scenario_takes_every_route_its_orchestrator_offers() {
        let patroni = Scenario::new(Orchestrator::Patroni, Event::Kill, Replication::Synchronous);
        assert_eq!(patroni.routes, [Route::Proxy, Route::MultiHost]);
        assert_eq!(
            patroni.label(),
            "Patroni, synchronous_mode; unplanned failover (SIGKILL of the primary); via \
             HAProxy + URL"
        );
        let auto = Scenario::new(
            Orchestrator::AutoFailover,
            Event::Switchover,
            Replication::Asynchronous,
        );
        assert_eq!(auto.routes, [Route::MultiHost]);
        assert_eq!(auto.cluster(), "pg_auto_failover");
    }
}

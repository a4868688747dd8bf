//! # resilience
//!
//! The resilience matrix (`RESILIENCE-MATRIX.md`) for the example gateway
//! (`examples/gateway`): thirteen cases, each a function that starts its own throwaway
//! PostgreSQL servers (a primary, a streaming replica, fault proxies, as the case
//! needs), starts the gateway in-process in front of them with
//! [`gateway::serve_with`] (adding the suite's own [`routes`] under `/api/test`),
//! drives it over real HTTP while it stops, partitions, slows, kills or promotes the
//! servers, and returns an [`Observation`]: pass or fail, what was observed, how long
//! recovery took.
//!
//! The test (`tests/resilience.rs`) runs every case once and asserts on the
//! observations; the `resilience` binary (`cargo run -p resilience`) runs them and
//! prints the [`matrix`]. Both run exactly this code, and both render the HTML
//! [`report`] ([`html`]) from the observations, each of which carries its
//! [`Timeline`]: every request of the suite's client, the fault windows, the recovery.
//!
//! | family | cases |
//! |---|---|
//! | connection loss | [`cl_01_database_shutdown`], [`cl_02_network_partition`], [`cl_03_connection_drop`], [`cl_04_slow_network`] |
//! | connection pool | [`cp_01_pool_exhaustion`], [`cp_02_stale_connections`], [`cp_03_pool_recovery`] |
//! | failover | [`fo_01_primary_failure`], [`fo_02_replica_lag`], [`fo_03_split_brain`] |
//! | transaction safety | [`tx_01_deadlock`], [`tx_02_long_transaction`], [`tx_03_mid_transaction_failure`] |
//!
//! With [`set_tls`] (the demo's `--tls`) the cases start TLS-only servers and the
//! gateway connects with `sslmode=verify-full` against the test kit's CA, for every
//! host and the replica; TX-03, whose proxy cuts at exact points of the protocol it
//! must read, stays in plain text.
//!
//! Time bounds are generous (a loaded two-core machine runs several cases at once);
//! the figures (time to recover, time to the first write after a failover) are
//! reported, not asserted tightly. The PostgreSQL binaries must be installed (see the
//! test kit).
//!
//! Modules, in the order they depend on one another: [`routes`] (the test routes the
//! gateway serves for the suite), `harness` (what every case uses: the recorder, the
//! gateway under test, its HTTP client, database inspection, a background writer),
//! `cases` (the cases, by family), `case` and `runner` (which case runs which code,
//! within a time limit, one after the other or in parallel), `timeline` and
//! `observation` (what was seen), [`matrix`] and [`report`] (as text, as HTML), and
//! `expected_logs` (the log lines a case provokes on purpose).

#![deny(missing_docs, missing_debug_implementations)]

mod case;
mod cases;
mod expected_logs;
mod harness;
pub mod matrix;
mod observation;
mod progress;
pub mod report;
pub mod routes;
mod runner;
mod text;
mod timeline;
pub mod topology;

pub use case::Case;
pub use expected_logs::ExpectedLogs;
pub use harness::{set_tls, tls_on};
pub use matrix::matrix;
pub use observation::{Check, Observation};
pub use progress::set_progress;
pub use report::html;
pub use runner::{
    CASE_LIMIT, SCENARIO_LIMIT, run, run_all, run_in_parallel, run_scenario,
    run_scenarios_in_parallel,
};
pub use timeline::{Fault, RequestSample, Span, Timeline};
pub use topology::{Event, Orchestrator, Replication, Route, Scenario, Topology};

use runner::run_with;

/// CL-01: the server is stopped (fast), later started. The readiness probe and the API
/// answer 503 `database_unavailable` within the deadline while it is down, both answer
/// 200 after it starts, without a restart of the gateway.
pub async fn cl_01_database_shutdown() -> Observation {
    run(Case::Cl01).await
}

/// CL-02: the proxy swallows all traffic, later heals. The API answers 503/504 within
/// the configured deadline, readiness 503; after the heal, 200 again.
pub async fn cl_02_network_partition() -> Observation {
    run(Case::Cl02).await
}

/// CL-03: every gateway connection is terminated (`pg_terminate_backend`) twice during
/// a concurrent load. Requests succeed after retries on fresh connections or answer a
/// documented 503; never a 500; the pool refills.
pub async fn cl_03_connection_drop() -> Observation {
    run(Case::Cl03).await
}

/// CL-04: the proxy adds latency. Requests within the per-attempt timeout succeed,
/// slower ones answer a timeout error within the deadline, and the gateway recovers
/// when the latency goes.
pub async fn cl_04_slow_network() -> Observation {
    run(Case::Cl04).await
}

/// CP-01: 25 concurrent slow requests against a pool of 15. Short ones queue and all
/// succeed; long ones leave the waiters past the pool timeout with 503
/// `pool_exhausted`; afterwards every connection is idle, none leaked.
pub async fn cp_01_pool_exhaustion() -> Observation {
    run(Case::Cp01).await
}

/// CP-02: the pool is filled, then the server restarts (fast, then a crash). The next
/// requests all succeed: stale connections are replaced without an error reaching a
/// client.
pub async fn cp_02_stale_connections() -> Observation {
    run(Case::Cp02).await
}

/// CP-03: after every connection is terminated, and after an outage, the pool returns
/// to its minimum of live connections, as `/health/status` shows.
pub async fn cp_03_pool_recovery() -> Observation {
    run(Case::Cp03).await
}

/// FO-01: primary + streaming replica, the gateway's URL lists both hosts with
/// `target_session_attrs=read-write`; the primary stops and the replica is promoted.
/// Writes resume on the new primary without a restart; every acknowledged write is
/// there; the time to the first successful write is measured.
pub async fn fo_01_primary_failure() -> Observation {
    run(Case::Fo01).await
}

/// FO-02: reads run on a replica whose replay is paused and resumed under a write
/// load: they never see a transaction half-applied, `Consistency: strong` reads the
/// caller's own writes from the primary, and reads fall back to the primary when the
/// replica stops.
pub async fn fo_02_replica_lag() -> Observation {
    run(Case::Fo02).await
}

/// FO-03: the primary is fenced read-only (25006 makes the gateway reconnect, not
/// fail), the replica promoted; the old primary comes back as a standby, then as an
/// isolated primary, then reachable but fenced. No write lands on it; no acknowledged
/// write is lost or doubled.
pub async fn fo_03_split_brain() -> Observation {
    run(Case::Fo03).await
}

/// FO-03 with the old primary cut off by a silent network (proxy blackhole) instead of
/// refused connections, while it is listed first in the gateway's URL: the silent
/// first host must not keep the gateway from the second. tokio-postgres tries the hosts
/// of a multi-host URL in order; the runtime bounds the connect to each host by its
/// own `connect_timeout` (as libpq does), so the startup that never completes on the
/// first host costs one bound and the second host is tried. Not one of the thirteen:
/// run as a test of its own.
pub async fn fo_03_split_brain_blackholed_old_primary() -> Observation {
    run_with(Case::Fo03, |rec| async move {
        cases::failover::split_brain(&rec, cases::failover::Isolation::Blackhole).await
    })
    .await
}

/// TX-01: two transfers lock two rows in opposite order. PostgreSQL aborts one
/// (40P01), the runtime retries it, both answer 200, each applied exactly once.
pub async fn tx_01_deadlock() -> Observation {
    run(Case::Tx01).await
}

/// TX-02: a transaction runs past `statement_timeout`, and another past the attempt
/// timer. Both answer 504 `timeout`, are rolled back, leave no lock behind, and the
/// connection (or the pool) is clean for the next request.
pub async fn tx_02_long_transaction() -> Observation {
    run(Case::Tx02).await
}

/// TX-03: the fault proxy cuts the connection between the two updates of a transfer,
/// and during COMMIT. Nothing partial is ever visible; each request succeeds exactly
/// once or fails cleanly; a client retry with the same `Idempotency-Key` returns the
/// first result.
pub async fn tx_03_mid_transaction_failure() -> Observation {
    run(Case::Tx03).await
}

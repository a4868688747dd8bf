//! The names, labels and descriptions of the series the `metrics` feature emits.
//!
//! Names follow OpenTelemetry's semantic conventions for database clients where one
//! exists (`db.client.*`); the runtime's own carry the `resilient_tx.` prefix. An
//! exporter turns them into its own spelling (Prometheus: `db_client_operation_duration_seconds`,
//! `resilient_tx_call_retries_total`).

// Without the feature only the pool names are used; the rest stays for the tests that
// hold the guide to this list.
#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

/// Duration of one call, first attempt to its result, backoffs and verification
/// included (histogram, seconds).
pub(crate) const OPERATION_DURATION: &str = "db.client.operation.duration";
/// Duration of one attempt: checkout, body, COMMIT (histogram, seconds).
pub(crate) const ATTEMPT_DURATION: &str = "resilient_tx.attempt.duration";
/// Retries, by the failure that caused them (counter).
pub(crate) const CALL_RETRIES: &str = "resilient_tx.call.retries";
/// Calls that ended with an error after retrying, by error kind (counter).
pub(crate) const CALL_GIVE_UPS: &str = "resilient_tx.call.give_ups";
/// Keyed calls that returned a stored result without running (counter).
pub(crate) const STORED_RESULTS: &str = "resilient_tx.call.stored_results";
/// Ambiguous COMMITs, by how each was settled (counter).
pub(crate) const COMMIT_AMBIGUOUS: &str = "resilient_tx.commit.ambiguous";
/// Retries refused because the retry budget was spent (counter).
pub(crate) const BUDGET_REFUSALS: &str = "resilient_tx.retry_budget.refusals";

/// Open connections by state, idle or used (gauge).
pub(crate) const CONNECTION_COUNT: &str = "db.client.connection.count";
/// Most connections the pool opens (gauge).
pub(crate) const CONNECTION_MAX: &str = "db.client.connection.max";
/// Callers waiting for a connection (gauge).
pub(crate) const PENDING_REQUESTS: &str = "db.client.connection.pending_requests";
/// Time to open one connection (histogram, seconds).
pub(crate) const CREATE_TIME: &str = "db.client.connection.create_time";
/// Time a checkout waited for a usable connection (histogram, seconds).
pub(crate) const WAIT_TIME: &str = "db.client.connection.wait_time";
/// Checkouts that ran out of time (counter).
pub(crate) const TIMEOUTS: &str = "db.client.connection.timeouts";
/// Connections opened (counter).
pub(crate) const OPENED: &str = "resilient_tx.connection.opened";
/// Connects that failed, by failure (counter).
pub(crate) const CONNECT_FAILURES: &str = "resilient_tx.connection.connect_failures";
/// Dead pooled connections replaced at checkout (counter).
pub(crate) const STALE_REPLACED: &str = "resilient_tx.connection.stale_replaced";
/// Connections discarded after a failure instead of going back to the pool (counter).
pub(crate) const DISCARDED: &str = "resilient_tx.connection.discarded";

/// The pool of the primary (or of the hosts of the URL), the value of [`POOL_NAME`].
pub(crate) const PRIMARY: &str = "primary";
/// The read replica's pool.
pub(crate) const REPLICA: &str = "replica";

/// `db.system.name`: on every series.
pub(crate) const SYSTEM: &str = "db.system.name";
/// The value of [`SYSTEM`].
pub(crate) const POSTGRESQL: &str = "postgresql";
/// The `#[retriable_tx]` function's path (`Db::transaction` calls: `transaction`).
pub(crate) const FUNCTION: &str = "code.function.name";
/// What went wrong: a failure class, an error kind, `application_error` or `cancelled`.
pub(crate) const ERROR_TYPE: &str = "error.type";
/// `primary` or `replica`.
pub(crate) const POOL_NAME: &str = "db.client.connection.pool.name";
/// `idle` or `used`, on [`CONNECTION_COUNT`]. (Emitted as a literal, for a static key.)
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const STATE: &str = "db.client.connection.state";
/// How an ambiguous COMMIT was settled, on [`COMMIT_AMBIGUOUS`].
pub(crate) const OUTCOME: &str = "outcome";

/// `outcome` of an ambiguous COMMIT that verification found committed.
pub(crate) const VERIFIED_COMMITTED: &str = "verified_committed";
/// `outcome` of one that verification found not committed: the call retried.
pub(crate) const VERIFIED_NOT_COMMITTED: &str = "verified_not_committed";
/// `outcome` of one settled by re-running an `idempotent` body.
pub(crate) const RERUN_IDEMPOTENT: &str = "rerun_idempotent";
/// `outcome` of one of a keyed call, settled by retrying with the key.
pub(crate) const CHECKED_BY_KEY: &str = "checked_by_key";
/// `outcome` of one the call returned as `CommitUnknown`.
pub(crate) const UNRESOLVED: &str = "unresolved";

/// `error.type` of a call whose body returned an error of the application's own.
pub(crate) const APPLICATION_ERROR: &str = "application_error";
/// `error.type` of a call dropped before it had an outcome (its caller went away).
pub(crate) const CANCELLED: &str = "cancelled";

/// What kind of series a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    /// In seconds.
    Histogram,
}

/// Every series: name, kind, description. The guide documents each one (a test holds
/// it to that).
pub(crate) const ALL: [(&str, Kind, &str); 17] = [
    (
        OPERATION_DURATION,
        Kind::Histogram,
        "Duration of a transactional call, from its start to its result: every attempt, \
         backoff and commit verification",
    ),
    (
        ATTEMPT_DURATION,
        Kind::Histogram,
        "Duration of one attempt of a call: checkout, body and COMMIT",
    ),
    (
        CALL_RETRIES,
        Kind::Counter,
        "Attempts retried, by the class of failure that ended the previous attempt",
    ),
    (
        CALL_GIVE_UPS,
        Kind::Counter,
        "Calls that returned an error after more than one attempt, by error kind",
    ),
    (
        STORED_RESULTS,
        Kind::Counter,
        "Keyed calls that returned the result an earlier call stored, without running",
    ),
    (
        COMMIT_AMBIGUOUS,
        Kind::Counter,
        "COMMITs whose reply was lost, by how each was settled",
    ),
    (
        BUDGET_REFUSALS,
        Kind::Counter,
        "Retries refused because the retry budget was spent",
    ),
    (
        CONNECTION_COUNT,
        Kind::Gauge,
        "Open connections of the pool, idle or used",
    ),
    (
        CONNECTION_MAX,
        Kind::Gauge,
        "Most connections the pool opens",
    ),
    (
        PENDING_REQUESTS,
        Kind::Gauge,
        "Callers waiting for a connection from the pool",
    ),
    (
        CREATE_TIME,
        Kind::Histogram,
        "Time it took to open a new connection (TCP, TLS, startup, authentication)",
    ),
    (
        WAIT_TIME,
        Kind::Histogram,
        "Time a checkout took to get a usable connection from the pool",
    ),
    (
        TIMEOUTS,
        Kind::Counter,
        "Checkouts that gave up because their time to get a connection ran out",
    ),
    (OPENED, Kind::Counter, "Connections opened"),
    (
        CONNECT_FAILURES,
        Kind::Counter,
        "Connects that failed, by the class of failure",
    ),
    (
        STALE_REPLACED,
        Kind::Counter,
        "Dead pooled connections found at checkout and replaced without an error",
    ),
    (
        DISCARDED,
        Kind::Counter,
        "Connections discarded after a failure instead of going back to the pool",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide is the reference operators read: every series must be in it.
    #[test]
    fn the_guide_documents_every_series() {
        let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/../resilient-tx/docs/guide.md");
        let guide = std::fs::read_to_string(guide).expect("the guide is readable");
        for (name, _, _) in ALL {
            assert!(
                guide.contains(&format!("`{name}`")),
                "the guide does not document {name}"
            );
        }
        for label in [SYSTEM, FUNCTION, ERROR_TYPE, POOL_NAME, STATE, OUTCOME] {
            assert!(
                guide.contains(&format!("`{label}`")),
                "the guide does not document the label {label}"
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = ALL.iter().map(|(name, _, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}

//! One transactional call: the attempt loop's state and decisions. The generated code
//! of `#[retriable_tx]` and [`Db::transaction`](crate::Db::transaction) drive it as
//!
//! ```text
//! loop {
//!     let mut tx = call.begin().await?;             // connection, BEGIN pending
//!     let result = call.run(body(&mut tx)).await;   // the user's body
//!     if let Break(done) = call.end(tx, result).await { return done; }  // COMMIT or retry
//! }
//! ```

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::field::Empty;
use tracing::instrument::{Instrument, Instrumented};
use tracing::{Span, debug_span, info_span};

use crate::backoff::{CONNECTION_BACKOFF_FLOOR, full_jitter};
use crate::classify::{Action, Failure};
use crate::db::Db;
use crate::error::{AsTxError, TxError};
use crate::policy::{CallOptions, Policy};
use crate::pool::Pooled;
use crate::tx::Tx;
use crate::verification::{CommitVerification, Evidence, Verdict};
use crate::xact_status::NOTE_XID;

/// Lock timeouts (55P03) are retried at most this often: a lock held that long is
/// rarely released by the next try.
const LOCK_RETRIES: u32 = 2;

/// Attempts in a row met with silence before the call gives up.
const SILENT_ATTEMPTS: u32 = 2;

/// Between the server's statement timeout and the client's timer: the server's cancel
/// (a clean 57014, the connection kept) should win whenever the server is answering.
const CLIENT_TIMER_MARGIN: Duration = Duration::from_millis(500);

/// Every this many commits, markers older than [`MARKER_RETENTION`] are purged.
const MARKER_PURGE_EVERY: u64 = 10_000;

/// How long commit markers are kept: far longer than any call's deadline.
const MARKER_RETENTION: Duration = Duration::from_secs(3600);

/// The state of one call across its attempts.
#[doc(hidden)]
pub struct Call<'db> {
    db: &'db Db,
    name: &'static str,
    policy: Policy,
    begin_sql: Arc<str>,
    deadline: Instant,
    attempt: u32,
    span: Span,
    attempt_span: Span,
    key: Option<String>,
    /// How this call verifies an ambiguous COMMIT (decided once the key is known).
    verification: CommitVerification,
    /// The current attempt runs on the replica.
    on_replica: bool,
    /// Attempts in a row that met silence (a connect or a round trip that never
    /// answered).
    silent_attempts: u32,
}

impl<'db> Call<'db> {
    /// Starts a call with the options of a `#[retriable_tx]` attribute.
    pub fn new(db: &'db Db, options: &'static CallOptions) -> Self {
        Call::with_policy(db, options.over(db.policy()), options.name)
    }

    /// Starts a call with an explicit policy.
    pub fn with_policy(db: &'db Db, policy: Policy, name: &'static str) -> Self {
        db.counters().call();
        db.budget().deposit();
        let span = info_span!(
            "retriable_tx",
            function = name,
            attempts = Empty,
            outcome = Empty
        );
        Call {
            db,
            name,
            begin_sql: begin_sql(&policy).into(),
            deadline: Instant::now() + policy.deadline,
            policy,
            attempt: 0,
            attempt_span: Span::none(),
            span,
            key: None,
            verification: CommitVerification::Off,
            on_replica: false,
            silent_attempts: 0,
        }
    }

    /// Starts the next attempt: a usable connection and a transaction whose BEGIN will
    /// travel with the first statement. Failures to get a connection are retried here.
    pub async fn begin(&mut self) -> Result<Tx<'db>, TxError> {
        if self.attempt == 0 {
            self.verification = self.wants_verification().await;
            if self.verification == CommitVerification::TransactionId {
                self.begin_sql = format!("{}; {NOTE_XID}", self.begin_sql).into();
            }
        }
        loop {
            self.attempt += 1;
            self.db.counters().attempt();
            self.attempt_span = debug_span!(
                parent: &self.span,
                "attempt",
                attempt = self.attempt,
                outcome = Empty,
                error_class = Empty,
                sqlstate = Empty,
                backoff_ms = Empty,
            );
            let now = Instant::now();
            let timer = self.attempt_timer(now);
            let attempt_deadline = now + timer;
            let bound = timer.min(self.db.pool_timeout());
            let span = self.attempt_span.clone();
            let acquired = self.acquire(bound).instrument(span).await;
            match acquired {
                Ok(conn) => {
                    return Ok(Tx::new(
                        conn,
                        self.begin_sql.clone(),
                        self.policy.read_only,
                        self.verification == CommitVerification::TransactionId,
                        attempt_deadline,
                        timer,
                    ));
                }
                Err(error) => {
                    if !self.retry_after(&error).await {
                        self.gave_up(&error);
                        return Err(error);
                    }
                }
            }
        }
    }

    /// A connection for this attempt: from the replica for read-only work when one is
    /// configured and reachable, otherwise from the primary.
    async fn acquire(&mut self, bound: Duration) -> Result<Pooled<'db>, TxError> {
        self.on_replica = false;
        if let (true, Some(replica)) = (self.policy.read_only, self.db.replica()) {
            match replica.acquire(bound).await {
                Ok(conn) => {
                    self.on_replica = true;
                    return Ok(conn);
                }
                Err(error) if error.failure() == Failure::Unreachable => {
                    tracing::info!(parent: &self.attempt_span, error = %error,
                        "read replica unreachable: reading from the primary");
                }
                Err(error) => return Err(error),
            }
        }
        self.db.pool().acquire(bound).await
    }

    /// Runs the body of an attempt inside the attempt's span.
    pub fn run<F: Future>(&self, body: F) -> Instrumented<F> {
        body.instrument(self.attempt_span.clone())
    }

    /// Ends an attempt: COMMIT after a successful body; otherwise roll back, then
    /// either back off and ask for another attempt (`Continue`) or return (`Break`).
    pub async fn end<T, E>(
        &mut self,
        mut tx: Tx<'db>,
        result: Result<T, E>,
    ) -> ControlFlow<Result<T, E>>
    where
        E: From<TxError> + AsTxError,
    {
        match result {
            Ok(value) => {
                let marker = self.verification.marker();
                let insert = self.db.marker_table().insert.as_str();
                let committed = tx
                    .commit(marker.as_deref().map(|m| (insert, m)))
                    .instrument(self.attempt_span.clone())
                    .await;
                let evidence = match marker {
                    Some(marker) => Some(Evidence::Marker(marker)),
                    None => tx.xact_identity().map(Evidence::Xact),
                };
                // The connection goes back to the pool before any backoff.
                drop(tx);
                match committed {
                    Ok(()) => {
                        self.committed();
                        ControlFlow::Break(Ok(value))
                    }
                    Err(error) => {
                        let error = match (error.failure(), &evidence) {
                            (Failure::CommitUnknown, Some(evidence)) => {
                                match self.settle_ambiguous(error, evidence).await {
                                    Ok(()) => return ControlFlow::Break(Ok(value)),
                                    Err(error) => error,
                                }
                            }
                            _ => error,
                        };
                        if self.retry_after(&error).await {
                            return ControlFlow::Continue(());
                        }
                        self.gave_up(&error);
                        ControlFlow::Break(Err(E::from(error)))
                    }
                }
            }
            Err(user_error) => {
                tx.rollback();
                drop(tx);
                let Some(error) = user_error.as_tx_error().cloned() else {
                    self.span.record("outcome", "application_error");
                    self.span.record("attempts", self.attempt);
                    return ControlFlow::Break(Err(user_error));
                };
                if self.retry_after(&error).await {
                    return ControlFlow::Continue(());
                }
                self.gave_up(&error);
                ControlFlow::Break(Err(user_error))
            }
        }
    }

    /// Verifies an ambiguous COMMIT: `Ok` when it committed; otherwise the error to go
    /// on with (retriable when it did not commit).
    async fn settle_ambiguous(
        &mut self,
        error: TxError,
        evidence: &Evidence,
    ) -> Result<(), TxError> {
        let counters = self.db.counters();
        let verdict = self
            .verify_commit(evidence)
            .instrument(self.attempt_span.clone())
            .await;
        tracing::info!(parent: &self.attempt_span, function = self.name, verdict = ?verdict,
            "verified an ambiguous COMMIT");
        match verdict {
            Verdict::Committed => {
                counters.ambiguous_commit();
                counters.ambiguous_verified(true);
                self.committed();
                Ok(())
            }
            Verdict::NotCommitted => {
                counters.ambiguous_commit();
                counters.ambiguous_verified(false);
                Err(TxError::new(
                    Failure::ConnectionLost,
                    format!("{} (verified: it was not applied)", error.message()),
                ))
            }
            Verdict::Unknown(why) => {
                let table = self.db.marker_table();
                let unsettled = evidence.unsettled(why, table.name());
                tracing::warn!(parent: &self.attempt_span, function = self.name,
                    "COMMIT outcome unknown: {unsettled}");
                Err(TxError::new(
                    Failure::CommitUnknown,
                    format!("{}; {unsettled}", error.message()),
                ))
            }
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How long this attempt may take: the policy's timeout plus a margin for the
    /// server's own cancel, never past the call's deadline.
    fn attempt_timer(&self, now: Instant) -> Duration {
        let remaining = self.deadline.saturating_duration_since(now);
        match self.policy.timeout {
            Some(timeout) => (timeout + CLIENT_TIMER_MARGIN).min(remaining),
            None => remaining,
        }
    }

    /// Decides whether a failed attempt is retried; if so, waits out the backoff.
    async fn retry_after(&mut self, error: &TxError) -> bool {
        let failure = error.failure();
        error.set_attempts(self.attempt);
        self.attempt_span.record("outcome", "failed");
        self.attempt_span.record("error_class", failure.as_str());
        if let Some(code) = error.sqlstate() {
            self.attempt_span.record("sqlstate", code.code());
        }
        let counters = self.db.counters();
        if matches!(
            failure,
            Failure::ConnectionLost | Failure::ReadOnly | Failure::CommitUnknown
        ) {
            // Whatever killed this connection (a restart, a failover, a demotion) may
            // have killed its pooled siblings: check them once before their next use.
            let pool = match (self.on_replica, self.db.replica()) {
                (true, Some(replica)) => replica,
                _ => self.db.pool(),
            };
            pool.health.mark_suspect();
            if failure == Failure::ReadOnly && !self.on_replica {
                self.db.pool().health.read_only_met();
            }
        }
        let action = failure.action();
        if failure == Failure::CommitUnknown {
            // Verified ones were counted where they were settled.
            counters.ambiguous_commit();
        }
        let retriable = match action {
            Action::Retry | Action::Reconnect => true,
            // A keyed retry finds the stored result if the COMMIT did land.
            // Read-only work changes nothing, so running it again is always safe.
            Action::Resolve => {
                self.policy.idempotent || self.key.is_some() || self.policy.read_only
            }
            Action::Return => false,
        };
        if !retriable {
            if action == Action::Resolve {
                counters.ambiguous_unresolved();
                tracing::error!(parent: &self.attempt_span, function = self.name, error = %error,
                    "COMMIT outcome unknown and the function is not idempotent: not re-running it");
            }
            return false;
        }
        if self.attempt > self.policy.retries
            || (failure == Failure::LockUnavailable && self.attempt > LOCK_RETRIES)
        {
            return false;
        }
        if matches!(failure, Failure::ClientTimeout | Failure::ConnectTimeout) {
            self.silent_attempts += 1;
        } else {
            self.silent_attempts = 0;
        }
        if self.silent_attempts >= SILENT_ATTEMPTS {
            // A dead connection is replaced by the first retry; when the fresh one is
            // met with silence too, the network is partitioned, and more waiting only
            // keeps the caller from its error.
            tracing::warn!(parent: &self.attempt_span, function = self.name, error = %error,
                "the database stays silent: giving up instead of waiting out the deadline");
            return false;
        }
        if action == Action::Reconnect && !self.db.budget().try_withdraw() {
            counters.budget_refusal();
            tracing::warn!(parent: &self.attempt_span, function = self.name, error = %error,
                "retry budget spent: failing fast instead of adding load");
            return false;
        }
        let delay = match failure {
            Failure::StalePlan => Duration::ZERO,
            _ if action == Action::Reconnect => full_jitter(
                self.attempt,
                self.policy.backoff_base.max(CONNECTION_BACKOFF_FLOOR),
                self.policy.backoff_max,
            ),
            _ => full_jitter(
                self.attempt,
                self.policy.backoff_base,
                self.policy.backoff_max,
            ),
        };
        if Instant::now() + delay >= self.deadline {
            return false;
        }
        counters.retry(failure);
        if action == Action::Resolve {
            if self.key.is_some() {
                counters.ambiguous_checked_by_key();
            } else {
                counters.ambiguous_rerun();
            }
        }
        self.attempt_span
            .record("backoff_ms", delay.as_millis() as u64);
        let sqlstate = error.sqlstate().map(|s| s.code()).unwrap_or("");
        // The message alone: Display would add "gave up after N attempts".
        let cause = error.message();
        if failure == Failure::Conflict || failure == Failure::ConnectionLost {
            tracing::warn!(parent: &self.attempt_span, function = self.name, class = failure.as_str(),
                sqlstate, backoff_ms = delay.as_millis() as u64, attempt = self.attempt, cause, "retrying transaction");
        } else {
            tracing::info!(parent: &self.attempt_span, function = self.name, class = failure.as_str(),
                sqlstate, backoff_ms = delay.as_millis() as u64, attempt = self.attempt, cause, "retrying transaction");
        }
        tokio::time::sleep(delay).await;
        true
    }

    /// How this call verifies an ambiguous COMMIT: not at all when a key or
    /// `idempotent` already settles it, nor for read-only work, nor by marker when the
    /// marker table cannot be created (then an ambiguous COMMIT is `CommitUnknown`).
    async fn wants_verification(&self) -> CommitVerification {
        let verification = self.db.commit_verification();
        if self.key.is_some() || self.policy.idempotent || self.policy.read_only {
            return CommitVerification::Off;
        }
        if verification != CommitVerification::MarkerRow {
            return verification;
        }
        match self.db.migrate().await {
            Ok(()) => verification,
            Err(error) => {
                // Not cached: a database that is down now may let the next call create
                // the table. Each later call tries again.
                tracing::warn!(function = self.name, error = %error,
                    "commit verification is unavailable for this call: the marker table could not be created");
                CommitVerification::Off
            }
        }
    }

    pub(crate) fn db(&self) -> &'db Db {
        self.db
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub(crate) fn set_key(&mut self, key: String) {
        self.key = Some(key);
    }

    /// A keyed call found its result stored by an earlier call.
    pub(crate) fn returned_stored(&self) {
        self.db.counters().stored_result_returned();
        self.attempt_span.record("outcome", "stored_result");
        self.span.record("outcome", "stored_result");
        self.span.record("attempts", self.attempt);
    }

    fn committed(&self) {
        let commits = self.db.counters().commit();
        if self.verification == CommitVerification::MarkerRow && commits % MARKER_PURGE_EVERY == 0 {
            // Markers matter only until their call returns; keep the table small
            // without a background task of its own.
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(error) = db.purge_commit_markers(MARKER_RETENTION).await {
                    tracing::warn!(error = %error, "purging old commit markers failed");
                }
            });
        }
        self.attempt_span.record("outcome", "committed");
        self.span.record("outcome", "committed");
        self.span.record("attempts", self.attempt);
    }

    fn gave_up(&self, error: &TxError) {
        error.set_attempts(self.attempt);
        if self.attempt > 1 {
            self.db.counters().give_up();
        }
        self.span.record("outcome", error.kind().as_str());
        self.span.record("attempts", self.attempt);
    }
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("name", &self.name)
            .field("attempt", &self.attempt)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The BEGIN sent with the first statement: isolation, access mode, and the statement
/// timeout, in one simple query so none of it costs a round trip of its own.
fn begin_sql(policy: &Policy) -> String {
    let mut sql = String::from("BEGIN");
    if let Some(isolation) = policy.isolation {
        sql.push_str(" ISOLATION LEVEL ");
        sql.push_str(isolation.as_sql());
    }
    if policy.read_only {
        sql.push_str(" READ ONLY");
    }
    if let Some(timeout) = policy.timeout {
        sql.push_str(&format!(
            "; SET LOCAL statement_timeout = {}",
            timeout.as_millis().max(1)
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Isolation;

    #[test]
    fn begin_carries_isolation_access_mode_and_timeout() {
        assert_eq!(begin_sql(&Policy::default()), "BEGIN");
        let policy = Policy::default()
            .isolation(Isolation::Serializable)
            .read_only()
            .timeout(Duration::from_millis(1500));
        assert_eq!(
            begin_sql(&policy),
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY; SET LOCAL statement_timeout = 1500"
        );
    }
}

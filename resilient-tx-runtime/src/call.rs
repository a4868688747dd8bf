//! One transactional call: the attempt loop's state and its side effects. The generated
//! code of `#[retriable_tx]` and [`Db::transaction`](crate::Db::transaction) drive it as
//!
//! ```text
//! loop {
//!     let mut tx = call.begin().await?;             // connection, BEGIN pending
//!     let result = call.run(body(&mut tx)).await;   // the user's body
//!     if let Break(done) = call.end(tx, result).await { return done; }  // COMMIT or retry
//! }
//! ```
//!
//! What follows a failure is decided in [`crate::retry`]; how an ambiguous COMMIT is
//! settled, in [`crate::outcome`]; keys are claimed and stored by
//! [`crate::idempotency`]. This module carries the decisions out: metrics, spans,
//! logs, pool health, the retry budget and the sleeps.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::instrument::{Instrument, Instrumented};
use tracing::{Span, debug_span, info_span};

use crate::backoff::draw;
use crate::connection::PgConnection;
use crate::error::{Action, AsTxError, Failure, TxError};
use crate::idempotency::{self, Begin, CallKey, Fingerprint, Key};
use crate::metrics::names::APPLICATION_ERROR;
use crate::metrics::{CallClock, Counters};
use crate::outcome::{self, CommitVerification, Evidence, Probes, Verdict};
use crate::policy::{CallOptions, Policy};
use crate::pool::{Pool, Recoveries};
use crate::replication;
use crate::retry::{self, CallTraits, GiveUp, Retry, RetryState};
use crate::shared::DbRef;
use crate::tx::{Tx, begin_sql};

/// The state of one call across its attempts.
#[doc(hidden)]
pub struct Call<'db> {
    db: DbRef<'db>,
    name: &'static str,
    policy: Policy,
    begin_sql: Arc<str>,
    deadline: Instant,
    retry: RetryState,
    span: Span,
    attempt_span: Span,
    key: Option<CallKey>,
    /// How this call verifies an ambiguous COMMIT (decided once the key is known).
    verification: CommitVerification,
    /// The current attempt runs on the replica.
    on_replica: bool,
    /// The call's and the attempt's durations, for the metrics.
    clock: CallClock,
    /// Ends of outages since the current attempt began: they end its backoff.
    recoveries: Recoveries,
}

impl<'db> Call<'db> {
    /// Starts a call with the options of a `#[retriable_tx]` attribute.
    pub fn new(db: impl Into<DbRef<'db>>, options: &'static CallOptions) -> Self {
        let db = db.into();
        Call::with_policy(db, options.over(&db.shared.policy), options.name)
    }

    /// Starts a call with an explicit policy.
    pub fn with_policy(db: impl Into<DbRef<'db>>, policy: Policy, name: &'static str) -> Self {
        let db = db.into();
        db.shared.counters.call();
        db.shared.budget.deposit();
        let span = info_span!(
            "retriable_tx",
            function = name,
            attempts = Empty,
            outcome = Empty
        );
        Call {
            db,
            name,
            begin_sql: begin_sql(&policy, false).into(),
            deadline: Instant::now() + policy.deadline,
            policy,
            retry: RetryState::default(),
            attempt_span: Span::none(),
            span,
            key: None,
            verification: CommitVerification::Off,
            on_replica: false,
            clock: CallClock::new(name),
            recoveries: Recoveries::since_now(&db.shared.pool, db.replica()),
        }
    }

    /// Makes this a keyed call: it takes effect once per `key` within this function.
    pub fn with_idempotency_key(mut self, key: impl std::fmt::Display) -> Self {
        self.key = Some(CallKey::new(key.to_string(), self.name));
        self
    }

    /// Scopes the key by the method's type `S` as well as its name: methods named
    /// alike on two types of one module keep their keys apart.
    pub fn key_scope_of<S: ?Sized>(mut self) -> Self {
        if let Some(key) = &mut self.key {
            key.scope_of_type(core::any::type_name::<S>(), self.name);
        }
        self
    }

    /// `key_scope = "…"`: the key's scope, in place of the function's path.
    pub fn key_scope(mut self, scope: &'static str) -> Self {
        if let Some(key) = &mut self.key {
            key.scope = scope.into();
        }
        self
    }

    /// The fingerprint of the arguments, stored with the key and compared when the key
    /// comes back.
    pub fn key_fingerprint(mut self, fingerprint: Fingerprint) -> Self {
        if let Some(key) = &mut self.key {
            key.fingerprint = Some(fingerprint.finish());
        }
        self
    }

    /// Starts the next attempt: a usable connection and a transaction whose BEGIN will
    /// travel with the first statement. Failures to get a connection are retried here.
    pub async fn begin(&mut self) -> Result<Tx<'db>, TxError> {
        if self.retry.attempt == 0 {
            self.verification = self.wants_verification().await;
            if self.verification == CommitVerification::TransactionId {
                self.begin_sql = begin_sql(&self.policy, true).into();
            }
        }
        loop {
            self.retry.attempt += 1;
            self.retry.server_answered = false;
            self.counters().attempt();
            self.clock.attempt_started();
            self.recoveries = Recoveries::since_now(&self.db.shared.pool, self.db.replica());
            self.attempt_span = debug_span!(
                parent: &self.span,
                "attempt",
                attempt = self.retry.attempt,
                outcome = Empty,
                error_class = Empty,
                sqlstate = Empty,
                backoff_ms = Empty,
            );
            let now = Instant::now();
            let timer = self
                .policy
                .attempt_timer(self.deadline.saturating_duration_since(now));
            let attempt_deadline = now + timer;
            let bound = timer.min(self.db.shared.pool.pool_timeout);
            let span = self.attempt_span.clone();
            let acquired = self.db.acquire(&self.policy, bound).instrument(span).await;
            match acquired {
                Ok((conn, on_replica)) => {
                    self.on_replica = on_replica;
                    self.retry.runs += 1;
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

    /// Starts an attempt of a keyed call: claims the key, or returns the result a
    /// committed call with the same key stored.
    pub async fn begin_keyed<T: DeserializeOwned>(&mut self) -> Result<Begin<'db, T>, TxError> {
        let shared = self.db.shared;
        let tables = &shared.tables;
        let ready = match self.key_ref() {
            Ok(_) => {
                let remaining = self.deadline.saturating_duration_since(Instant::now());
                tables.ensure_keys(&shared.pool, remaining).await
            }
            Err(error) => Err(error),
        };
        let shape = match ready {
            Ok(shape) => shape,
            Err(error) => {
                // Nothing ran: the call ends before its first attempt.
                self.clock.call_ended(Some(error.kind().as_str()));
                self.span.record("outcome", error.kind().as_str());
                self.span.record("attempts", self.retry.attempt);
                return Err(error);
            }
        };
        loop {
            let mut tx = self.begin().await?;
            let key = match self.key_ref() {
                Ok(key) => key,
                // Checked above; the key does not change between attempts.
                Err(error) => return Err(error),
            };
            match idempotency::claim::<T>(&mut tx, &tables.keys, shape, key).await {
                Ok(None) => return Ok(Begin::Run(tx)),
                Ok(Some(stored)) => {
                    tx.rollback();
                    // A retry after `NotReplicated` learns here whether a standby has
                    // caught up since.
                    let replicated = self.confirm_replicated(tx.ended_connection()).await;
                    drop(tx);
                    if let Err(error) = replicated {
                        self.gave_up(&error);
                        return Err(error);
                    }
                    self.returned_stored();
                    return Ok(Begin::Stored(stored));
                }
                Err(error) => {
                    if let ControlFlow::Break(Err(error)) =
                        self.end::<(), TxError>(tx, Err(error)).await
                    {
                        return Err(error);
                    }
                }
            }
        }
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
        let value = match result {
            Ok(value) => value,
            Err(user_error) => {
                tx.rollback();
                drop(tx);
                let Some(error) = user_error.as_tx_error().cloned() else {
                    self.clock.attempt_ended(Some(APPLICATION_ERROR));
                    self.clock.call_ended(Some(APPLICATION_ERROR));
                    self.span.record("outcome", "application_error");
                    self.span.record("attempts", self.retry.attempt);
                    return ControlFlow::Break(Err(user_error));
                };
                if self.retry_after(&error).await {
                    return ControlFlow::Continue(());
                }
                self.gave_up(&error);
                return ControlFlow::Break(Err(user_error));
            }
        };
        let tables = &self.db.shared.tables;
        let evidence = Evidence::for_commit(self.verification, &tx);
        let mark = evidence
            .as_ref()
            .and_then(|evidence| evidence.mark(tables, tx.may_notify()));
        let committed = tx.commit(mark).instrument(self.attempt_span.clone()).await;
        let error = match committed {
            Ok(()) => {
                let replicated = self.confirm_replicated(tx.ended_connection()).await;
                drop(tx);
                self.committed();
                return ControlFlow::Break(match replicated {
                    Ok(()) => Ok(value),
                    Err(error) => {
                        self.gave_up(&error);
                        Err(E::from(error))
                    }
                });
            }
            Err(error) => error,
        };
        // The connection goes back to the pool before any backoff.
        drop(tx);
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

    /// Ends an attempt of a keyed call: stores the result with the key, then commits.
    pub async fn end_keyed<T, E>(
        &mut self,
        mut tx: Tx<'db>,
        result: Result<T, E>,
    ) -> ControlFlow<Result<T, E>>
    where
        T: Serialize,
        E: From<TxError> + AsTxError,
    {
        let result = match result {
            Ok(value) => {
                let table = &self.db.shared.tables.keys;
                let stored = match self.key_ref() {
                    Ok(key) => idempotency::store(&mut tx, table, key, &value).await,
                    Err(error) => Err(error),
                };
                match stored {
                    Ok(()) => Ok(value),
                    Err(error) => Err(E::from(error)),
                }
            }
            Err(error) => Err(error),
        };
        self.end(tx, result).await
    }

    /// Verifies an ambiguous COMMIT: `Ok` when it committed; otherwise the error to go
    /// on with (retriable when it did not commit).
    async fn settle_ambiguous(
        &mut self,
        error: TxError,
        evidence: &Evidence,
    ) -> Result<(), TxError> {
        let shared = self.db.shared;
        let probes = Probes::new(&shared.pool, self.deadline, self.name);
        let verdict = outcome::verify(probes, evidence, &shared.tables)
            .instrument(self.attempt_span.clone())
            .await;
        tracing::info!(parent: &self.attempt_span, function = self.name, verdict = ?verdict,
            "verified an ambiguous COMMIT");
        let counters = self.counters();
        match verdict {
            Verdict::Committed => {
                counters.ambiguous_commit();
                counters.ambiguous_verified(self.name, true);
                self.committed();
                if self.wants_replicated().is_none() {
                    return Ok(());
                }
                // The committing connection is gone: ask on a fresh one, whose server
                // the verification just found the commit on.
                let bound = self.deadline.saturating_duration_since(Instant::now());
                match shared.pool.acquire(bound).await {
                    Ok(mut conn) => self.confirm_replicated(Some(&mut conn)).await,
                    Err(error) => Err(replication::lost(error.message())),
                }
            }
            Verdict::NotCommitted => {
                counters.ambiguous_commit();
                counters.ambiguous_verified(self.name, false);
                self.retry.server_answered = true;
                Err(TxError::new(
                    Failure::ConnectionLost,
                    format!("{} (verified: it was not applied)", error.message()),
                ))
            }
            Verdict::Unknown(why) => {
                let unsettled = evidence.unsettled(why, &shared.tables);
                tracing::warn!(parent: &self.attempt_span, function = self.name,
                    "COMMIT outcome unknown: {unsettled}");
                Err(TxError::new(
                    Failure::CommitUnknown,
                    format!("{}; {unsettled}", error.message()),
                ))
            }
        }
    }

    /// The `replicated` bound, unless the call is read-only (it committed nothing).
    fn wants_replicated(&self) -> Option<Duration> {
        self.policy.replicated.filter(|_| !self.policy.read_only)
    }

    /// With `replicated`, waits on `conn` (the session that committed, or one on the
    /// server that has the commit) until a standby of its server has the commit.
    async fn confirm_replicated(&self, conn: Option<&mut PgConnection>) -> Result<(), TxError> {
        let Some(bound) = self.wants_replicated() else {
            return Ok(());
        };
        replication::confirm(conn, bound, self.deadline, &self.attempt_span, self.name).await
    }

    /// After a failed attempt: records it, asks [`retry::decide`], and carries the
    /// answer out; `true` once the backoff is slept and the next attempt may start.
    async fn retry_after(&mut self, error: &TxError) -> bool {
        let failure = error.failure();
        let attempt = self.retry.attempt;
        error.set_attempts(attempt);
        self.attempt_span.record("outcome", "failed");
        self.attempt_span.record("error_class", failure.as_str());
        if let Some(code) = error.sqlstate() {
            self.attempt_span.record("sqlstate", code.code());
        }
        self.note_trouble(failure);
        self.clock.attempt_ended(Some(failure.as_str()));
        let counters = self.counters();
        if failure == Failure::CommitUnknown {
            // Verified ones were counted where they were settled.
            counters.ambiguous_commit();
        }
        let traits = CallTraits {
            keyed: self.key.is_some(),
        };
        let now = Instant::now();
        let decision = retry::decide(
            &self.retry,
            &self.policy,
            traits,
            failure,
            now,
            self.deadline,
            draw(),
        );
        let delay = match decision {
            Retry::After { delay, reconnect } => {
                if reconnect && !self.db.shared.budget.try_withdraw() {
                    counters.budget_refusal(self.name);
                    tracing::warn!(parent: &self.attempt_span, function = self.name, error = %error,
                        "retry budget spent: failing fast instead of adding load");
                    return false;
                }
                delay
            }
            Retry::GiveUp(why) => {
                match why {
                    GiveUp::Ambiguous => {
                        counters.ambiguous_unresolved();
                        tracing::error!(parent: &self.attempt_span, function = self.name, error = %error,
                            "COMMIT outcome unknown and the function is not idempotent: not re-running it");
                    }
                    GiveUp::NotRetriable | GiveUp::RetriesSpent | GiveUp::Deadline => {}
                }
                return false;
            }
        };
        counters.retry(self.name, failure);
        if failure == Failure::CommitUnknown {
            if self.key.is_some() {
                counters.ambiguous_checked_by_key(self.name);
            } else {
                counters.ambiguous_rerun(self.name);
            }
        }
        let backoff_ms = delay.as_millis() as u64;
        self.attempt_span.record("backoff_ms", backoff_ms);
        let sqlstate = error.sqlstate().map(|s| s.code()).unwrap_or("");
        // The message alone: Display would add "gave up after N attempts".
        let cause = error.message();
        if failure == Failure::Conflict || failure == Failure::ConnectionLost {
            tracing::warn!(parent: &self.attempt_span, function = self.name, class = failure.as_str(),
                sqlstate, backoff_ms, attempt, cause, "retrying transaction");
        } else {
            tracing::info!(parent: &self.attempt_span, function = self.name, class = failure.as_str(),
                sqlstate, backoff_ms, attempt, cause, "retrying transaction");
        }
        self.back_off(delay, failure).await;
        true
    }

    /// Sleeps out a backoff. After a connection failure, the end of an outage since
    /// the attempt began ends it too: the first connect that succeeds wakes every call
    /// waiting on the pool, instead of each sleeping out its own delay.
    async fn back_off(&mut self, delay: Duration, failure: Failure) {
        if failure.action() != Action::Reconnect {
            return tokio::time::sleep(delay).await;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.recoveries.next() => {}
        }
    }

    /// Whatever killed a connection (a restart, a failover, a demotion) may have
    /// killed its pooled siblings: they are checked once before their next use. A
    /// write that met a read-only server makes the primary's pool pass over read-only
    /// hosts from then on.
    fn note_trouble(&self, failure: Failure) {
        if !matches!(
            failure,
            Failure::ConnectionLost | Failure::ReadOnly | Failure::CommitUnknown
        ) {
            return;
        }
        self.attempt_pool().health.mark_suspect();
        if failure == Failure::ReadOnly && !self.on_replica {
            self.db.shared.pool.health.read_only_met();
        }
    }

    /// The pool the current attempt's connection came from.
    fn attempt_pool(&self) -> &'db Pool {
        match (self.on_replica, self.db.replica()) {
            (true, Some(replica)) => replica,
            _ => &self.db.shared.pool,
        }
    }

    /// How this call verifies an ambiguous COMMIT: not at all when a key or
    /// `idempotent` already settles it, nor for read-only work, nor by a table that
    /// cannot be used (then an ambiguous COMMIT is `CommitUnknown`). The table is looked
    /// up once per `Db` within the call's deadline; one that is missing and may not be
    /// created is said once, in the log, by the tables.
    async fn wants_verification(&self) -> CommitVerification {
        let shared = self.db.shared;
        let verification = shared.commit_verification;
        if self.key.is_some() || self.policy.idempotent || self.policy.read_only {
            return CommitVerification::Off;
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let (tables, pool) = (&shared.tables, &shared.pool);
        let ready = match verification {
            CommitVerification::FencedCounter => tables.ensure_counters(pool, remaining).await,
            CommitVerification::MarkerRow => tables.ensure_markers(pool, remaining).await,
            _ => return verification,
        };
        match ready {
            Ok(()) => verification,
            Err(error) => {
                tracing::debug!(function = self.name, error = %error,
                    "commit verification is off for this call: its table cannot be used");
                CommitVerification::Off
            }
        }
    }

    fn counters(&self) -> &'db Counters {
        &self.db.shared.counters
    }

    /// The call's key as the statements take it (its fingerprint's error, when the
    /// arguments could not be fingerprinted).
    fn key_ref(&self) -> Result<Key<'_>, TxError> {
        match &self.key {
            Some(key) => key.as_key(),
            None => Err(TxError::new(
                Failure::Config,
                "a keyed attempt was started for a call without an idempotency key",
            )),
        }
    }

    /// A keyed call found its result stored by an earlier call.
    fn returned_stored(&self) {
        self.counters().stored_result_returned(self.name);
        self.clock.attempt_ended(None);
        self.clock.call_ended(None);
        self.attempt_span.record("outcome", "stored_result");
        self.span.record("outcome", "stored_result");
        self.span.record("attempts", self.retry.attempt);
    }

    fn committed(&self) {
        let commits = self.counters().commit();
        let purge = outcome::purge_due(commits, self.verification, &self.db.shared.tables);
        if let Some(sql) = purge {
            // Markers matter only until their call returns, counters only while their
            // connection lives: keep the table small without a background task of its
            // own.
            let shared = self.db.shared.clone();
            tokio::spawn(async move {
                let bound = shared.pool.pool_timeout;
                if let Err(error) = crate::tables::purge(&shared.pool, &sql, bound).await {
                    tracing::warn!(error = %error, "purging old commit verification rows failed");
                }
            });
        }
        self.clock.attempt_ended(None);
        self.clock.call_ended(None);
        self.attempt_span.record("outcome", "committed");
        self.span.record("outcome", "committed");
        self.span.record("attempts", self.retry.attempt);
    }

    fn gave_up(&self, error: &TxError) {
        error.set_attempts(self.retry.attempt);
        self.counters()
            .gave_up(self.name, error, self.retry.attempt);
        self.clock.call_ended(Some(error.kind().as_str()));
        self.span.record("outcome", error.kind().as_str());
        self.span.record("attempts", self.retry.attempt);
    }
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("name", &self.name)
            .field("attempt", &self.retry.attempt)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

//! Retry settings: what `#[retriable_tx(...)]` options map to, usable without the macro.

use std::time::Duration;

/// Between the server's statement timeout and the client's timer: the server's cancel
/// (a clean 57014, the connection kept) should win whenever the server is answering.
const CLIENT_TIMER_MARGIN: Duration = Duration::from_millis(500);

/// Isolation level sent with `BEGIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// `READ COMMITTED` (PostgreSQL's default).
    ReadCommitted,
    /// `REPEATABLE READ`.
    RepeatableRead,
    /// `SERIALIZABLE`.
    Serializable,
}

impl Isolation {
    /// The SQL words that follow `ISOLATION LEVEL`.
    pub fn as_sql(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::RepeatableRead => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
        }
    }
}

/// How one call runs: retries, isolation, timeouts and backoff.
///
/// `Policy::default()` is what a `Db` uses when neither the builder nor the macro says
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Isolation level of `BEGIN`; `None` keeps the server's default.
    pub isolation: Option<Isolation>,
    /// `BEGIN READ ONLY`.
    pub read_only: bool,
    /// Per attempt: `SET LOCAL statement_timeout` and a client-side timer that abandons
    /// a connection that stops answering. `None`: no statement timeout; the client-side
    /// timer is then bounded by the deadline alone.
    pub timeout: Option<Duration>,
    /// Total budget for all attempts and backoff.
    pub deadline: Duration,
    /// First backoff step (exponential, full jitter).
    pub backoff_base: Duration,
    /// Largest backoff step.
    pub backoff_max: Duration,
    /// The body may be re-run even when a COMMIT outcome is unknown.
    pub idempotent: bool,
    /// After COMMIT, wait up to this long until a standby streaming from the primary
    /// has flushed the commit, and end with [`ErrorKind::NotReplicated`] when none
    /// did: for a write that must survive a failover where the cluster replicates
    /// asynchronously. `None`: return as soon as the primary committed. Ignored for
    /// read-only work. The wait counts against the deadline.
    ///
    /// [`ErrorKind::NotReplicated`]: crate::ErrorKind::NotReplicated
    pub replicated: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retries: 5,
            isolation: None,
            read_only: false,
            timeout: None,
            deadline: Duration::from_secs(30),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
            idempotent: false,
            replicated: None,
        }
    }
}

impl Policy {
    /// How long an attempt may take when `remaining` is left of the call's deadline:
    /// the timeout plus a margin for the server's own cancel, never past the deadline.
    pub(crate) fn attempt_timer(&self, remaining: Duration) -> Duration {
        match self.timeout {
            Some(timeout) => (timeout + CLIENT_TIMER_MARGIN).min(remaining),
            None => remaining,
        }
    }

    /// Sets `retries`.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
    /// Sets the isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Some(isolation);
        self
    }
    /// Makes the transaction `READ ONLY`.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Sets the total deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
    /// Sets the backoff base and cap.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }
    /// Marks the body safe to re-run after an unknown COMMIT outcome.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
    /// Waits after COMMIT, up to `bound`, until a standby has the commit (see
    /// [`Policy::replicated`](Policy#structfield.replicated)).
    pub fn replicated(mut self, bound: Duration) -> Self {
        self.replicated = Some(bound);
        self
    }
}

/// The options written in a `#[retriable_tx(...)]` attribute, as a constant the
/// generated code hands to the runtime. Unset options fall back to the `Db`'s policy.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// Path of the annotated function, for spans and logs.
    pub name: &'static str,
    /// `retries = N`.
    pub retries: Option<u32>,
    /// `isolation = …`.
    pub isolation: Option<Isolation>,
    /// `read_only`.
    pub read_only: bool,
    /// `timeout = "…"`.
    pub timeout: Option<Duration>,
    /// `deadline = "…"`.
    pub deadline: Option<Duration>,
    /// `backoff_base = "…"`.
    pub backoff_base: Option<Duration>,
    /// `backoff_max = "…"`.
    pub backoff_max: Option<Duration>,
    /// `idempotent`.
    pub idempotent: bool,
    /// `replicated = "…"`.
    pub replicated: Option<Duration>,
}

impl CallOptions {
    /// Options with nothing set, for `name`.
    pub const fn named(name: &'static str) -> Self {
        CallOptions {
            name,
            retries: None,
            isolation: None,
            read_only: false,
            timeout: None,
            deadline: None,
            backoff_base: None,
            backoff_max: None,
            idempotent: false,
            replicated: None,
        }
    }

    /// The effective policy: these options over the `Db`'s default.
    pub fn over(&self, base: &Policy) -> Policy {
        Policy {
            retries: self.retries.unwrap_or(base.retries),
            isolation: self.isolation.or(base.isolation),
            read_only: self.read_only || base.read_only,
            timeout: self.timeout.or(base.timeout),
            deadline: self.deadline.unwrap_or(base.deadline),
            backoff_base: self.backoff_base.unwrap_or(base.backoff_base),
            backoff_max: self.backoff_max.unwrap_or(base.backoff_max),
            idempotent: self.idempotent || base.idempotent,
            replicated: self.replicated.or(base.replicated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_gets_its_timeout_and_the_margin_but_never_outlives_the_deadline() {
        let second = Duration::from_secs(1);
        let timed = Policy::default().timeout(second);
        assert_eq!(
            timed.attempt_timer(10 * second),
            second + CLIENT_TIMER_MARGIN
        );
        assert_eq!(timed.attempt_timer(second), second);
        let untimed = Policy {
            timeout: None,
            ..Policy::default()
        };
        assert_eq!(untimed.attempt_timer(7 * second), 7 * second);
    }
}

//! The retry decision: after a failed attempt, run the call again (after which delay)
//! or give up (and why). Pure: the attempt loop ([`crate::call`]) feeds it the
//! failure, its own state, the policy, the clock and a random draw, and carries out
//! the answer (metrics, logs, the sleep, the retry budget).

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{CONNECTION_BACKOFF_FLOOR, full_jitter};
use crate::error::{Action, Failure};
use crate::policy::Policy;

/// Lock timeouts (55P03) are retried at most this often: a lock held that long is
/// rarely released by the next try.
pub(crate) const LOCK_RETRIES: u32 = 2;

/// What the attempt loop remembers between attempts, for the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RetryState {
    /// Attempts made so far (1 after the first).
    pub(crate) attempt: u32,
    /// Attempts that got a connection, so that the body reached the server: what
    /// `retries` counts. An attempt that could not connect (refused, silent, a
    /// server starting up or shutting down, no free connection) ran nothing, and is
    /// retried until the deadline; during a switchover every connect fails fast for a
    /// second or two, and counting those would spend the retries long before the
    /// deadline.
    pub(crate) runs: u32,
    /// After the failed attempt the server answered (a verification found its COMMIT
    /// not applied): the server is up, and a connection failure's retry need not wait
    /// for it.
    pub(crate) server_answered: bool,
}

/// What the failed attempt's call is, beyond its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallTraits {
    /// The call has an idempotency key: a retry finds the stored result if the COMMIT
    /// did land.
    pub(crate) keyed: bool,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Run the call again after `delay`. `reconnect`: the retry opens or checks a
    /// connection because the last one failed, so it draws on the retry budget.
    After { delay: Duration, reconnect: bool },
    /// Return the failure to the caller.
    GiveUp(GiveUp),
}

/// Why a failure ends the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// Retrying cannot help (a constraint, a statement timeout, an exhausted pool …).
    NotRetriable,
    /// The COMMIT outcome is unknown and nothing makes a re-run safe.
    Ambiguous,
    /// `retries` are spent (or, for lock timeouts, [`LOCK_RETRIES`]).
    RetriesSpent,
    /// The next attempt could not start before the call's deadline.
    Deadline,
}

/// Decides what follows a failed attempt. `state` already counts the failed attempt;
/// `draw` is a uniform random number in `[0, 1]` that places the delay within its
/// jitter range.
///
/// Silence (a connect or a round trip that never answered) is retried like any lost
/// connection: each attempt is bounded by its timer, and the call by its deadline, so a
/// partition shorter than the deadline is survived, and the retry budget keeps a long
/// one from turning into a retry storm.
pub(crate) fn decide(
    state: &RetryState,
    policy: &Policy,
    call: CallTraits,
    failure: Failure,
    now: Instant,
    deadline: Instant,
    draw: f64,
) -> Retry {
    let action = failure.action();
    let retriable = match action {
        Action::Retry | Action::Reconnect => true,
        // A keyed retry finds the stored result if the COMMIT did land; read-only work
        // changes nothing, so running it again is always safe.
        Action::Resolve => policy.idempotent || call.keyed || policy.read_only,
        Action::Return => false,
    };
    if !retriable {
        return Retry::GiveUp(match action {
            Action::Resolve => GiveUp::Ambiguous,
            _ => GiveUp::NotRetriable,
        });
    }
    if state.runs > policy.retries
        || (failure == Failure::LockUnavailable && state.runs > LOCK_RETRIES)
    {
        return Retry::GiveUp(GiveUp::RetriesSpent);
    }
    let reconnect = action == Action::Reconnect;
    let delay = match failure {
        // The schema changed under a cached statement, or a pooler lost it: the next
        // attempt prepares afresh (or sends it unnamed), nothing to wait for. Nor when
        // the connection's counter row was gone: a fresh connection has its own.
        Failure::StalePlan | Failure::StatementsLost | Failure::CounterMoved => Duration::ZERO,
        // The connection was lost, but a fresh one has since been answered: waiting
        // would only add the backoff to the outage's end.
        _ if reconnect && state.server_answered => Duration::ZERO,
        _ if reconnect => full_jitter(
            state.attempt,
            policy.backoff_base.max(CONNECTION_BACKOFF_FLOOR),
            policy.backoff_max,
            draw,
        ),
        _ => full_jitter(state.attempt, policy.backoff_base, policy.backoff_max, draw),
    };
    if now + delay >= deadline {
        return Retry::GiveUp(GiveUp::Deadline);
    }
    Retry::After { delay, reconnect }
}

#[cfg(test)]
mod tests {
    //! One test per rule of the decision.

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// After `attempt` attempts that all reached the server.
    fn state(attempt: u32) -> RetryState {
        RetryState {
            attempt,
            runs: attempt,
            server_answered: false,
        }
    }

    fn unkeyed() -> CallTraits {
        CallTraits { keyed: false }
    }

    /// The decision for `failure` after `attempt` attempts, far from the deadline,
    /// with the largest delay its jitter allows.
    fn after(attempt: u32, policy: &Policy, failure: Failure) -> Retry {
        let now = Instant::now();
        decide(
            &state(attempt),
            policy,
            unkeyed(),
            failure,
            now,
            now + 60 * SECOND,
            1.0,
        )
    }

    #[test]
    fn conflicts_are_retried_with_exponential_backoff_from_the_policy_base() {
        let policy = Policy::default().backoff(Duration::from_millis(20), 2 * SECOND);
        for (attempt, ceiling_ms) in [(1, 20), (2, 40), (3, 80)] {
            assert_eq!(
                after(attempt, &policy, Failure::Conflict),
                Retry::After {
                    delay: Duration::from_millis(ceiling_ms),
                    reconnect: false
                },
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn the_draw_places_the_delay_within_the_jitter_range() {
        let policy = Policy::default().backoff(Duration::from_millis(100), 2 * SECOND);
        let now = Instant::now();
        let half = decide(
            &state(2),
            &policy,
            unkeyed(),
            Failure::Conflict,
            now,
            now + 60 * SECOND,
            0.5,
        );
        assert_eq!(
            half,
            Retry::After {
                delay: Duration::from_millis(100),
                reconnect: false
            }
        );
    }

    #[test]
    fn connection_failures_reconnect_with_a_backoff_floor() {
        let policy = Policy::default().backoff(Duration::from_millis(1), 2 * SECOND);
        for failure in [
            Failure::ConnectionLost,
            Failure::Unreachable,
            Failure::ConnectTimeout,
            Failure::ReadOnly,
            Failure::ClientTimeout,
        ] {
            assert_eq!(
                after(1, &policy, failure),
                Retry::After {
                    delay: CONNECTION_BACKOFF_FLOOR,
                    reconnect: true
                },
                "{failure:?}"
            );
        }
    }

    #[test]
    fn a_stale_plan_or_a_lost_statement_is_retried_at_once() {
        for failure in [Failure::StalePlan, Failure::StatementsLost] {
            assert_eq!(
                after(3, &Policy::default(), failure),
                Retry::After {
                    delay: Duration::ZERO,
                    reconnect: false
                },
                "{failure:?}"
            );
        }
    }

    #[test]
    fn a_moved_counter_is_retried_at_once_on_a_fresh_connection() {
        assert_eq!(
            after(1, &Policy::default(), Failure::CounterMoved),
            Retry::After {
                delay: Duration::ZERO,
                reconnect: true
            }
        );
    }

    #[test]
    fn a_lost_connection_is_retried_at_once_once_the_server_has_answered() {
        let answered = RetryState {
            server_answered: true,
            ..state(3)
        };
        let far = Instant::now() + 100 * SECOND;
        let decide_with = |state: &RetryState, failure| {
            decide(
                state,
                &Policy::default(),
                unkeyed(),
                failure,
                Instant::now(),
                far,
                1.0,
            )
        };
        assert_eq!(
            decide_with(&answered, Failure::ConnectionLost),
            Retry::After {
                delay: Duration::ZERO,
                reconnect: true
            }
        );
        // Only a connection failure's wait is for the server; a conflict's is not.
        assert!(matches!(
            decide_with(&answered, Failure::Conflict),
            Retry::After { delay, .. } if delay > Duration::ZERO
        ));
        assert!(matches!(
            decide_with(&state(3), Failure::ConnectionLost),
            Retry::After { delay, .. } if delay > Duration::ZERO
        ));
    }

    #[test]
    fn retries_are_capped_by_the_policy() {
        let policy = Policy::default().retries(2);
        assert!(matches!(
            after(2, &policy, Failure::Conflict),
            Retry::After { .. }
        ));
        assert_eq!(
            after(3, &policy, Failure::Conflict),
            Retry::GiveUp(GiveUp::RetriesSpent)
        );
    }

    #[test]
    fn attempts_that_could_not_connect_do_not_spend_retries() {
        let policy = Policy::default().retries(2);
        let now = Instant::now();
        let connecting = RetryState {
            attempt: 40,
            runs: 0,
            server_answered: false,
        };
        for failure in [Failure::Unreachable, Failure::ConnectTimeout] {
            assert!(
                matches!(
                    decide(
                        &connecting,
                        &policy,
                        unkeyed(),
                        failure,
                        now,
                        now + 60 * SECOND,
                        0.0
                    ),
                    Retry::After {
                        reconnect: true,
                        ..
                    }
                ),
                "{failure:?}"
            );
        }
        let ran = RetryState {
            attempt: 40,
            runs: 3,
            server_answered: false,
        };
        assert_eq!(
            decide(
                &ran,
                &policy,
                unkeyed(),
                Failure::ConnectionLost,
                now,
                now + 60 * SECOND,
                0.0
            ),
            Retry::GiveUp(GiveUp::RetriesSpent)
        );
    }

    #[test]
    fn lock_timeouts_are_retried_at_most_lock_retries_times() {
        let policy = Policy::default().retries(10);
        assert!(matches!(
            after(LOCK_RETRIES, &policy, Failure::LockUnavailable),
            Retry::After { .. }
        ));
        assert_eq!(
            after(LOCK_RETRIES + 1, &policy, Failure::LockUnavailable),
            Retry::GiveUp(GiveUp::RetriesSpent)
        );
    }

    #[test]
    fn silence_is_retried_until_retries_or_the_deadline_are_spent() {
        let policy = Policy::default().retries(4);
        for attempt in 1..=4 {
            for failure in [Failure::ClientTimeout, Failure::ConnectTimeout] {
                assert!(
                    matches!(
                        after(attempt, &policy, failure),
                        Retry::After {
                            reconnect: true,
                            ..
                        }
                    ),
                    "{failure:?} after attempt {attempt}"
                );
            }
        }
        assert_eq!(
            after(5, &policy, Failure::ClientTimeout),
            Retry::GiveUp(GiveUp::RetriesSpent)
        );
    }

    #[test]
    fn a_delay_that_reaches_the_deadline_gives_up() {
        let policy = Policy::default().backoff(SECOND, 2 * SECOND);
        let now = Instant::now();
        let decision = decide(
            &state(1),
            &policy,
            unkeyed(),
            Failure::Conflict,
            now,
            now + SECOND,
            1.0,
        );
        assert_eq!(decision, Retry::GiveUp(GiveUp::Deadline));
        let sooner = decide(
            &state(1),
            &policy,
            unkeyed(),
            Failure::Conflict,
            now,
            now + SECOND,
            0.5,
        );
        assert!(matches!(sooner, Retry::After { .. }));
    }

    #[test]
    fn errors_retrying_cannot_fix_return_at_once() {
        for failure in [
            Failure::Database,
            Failure::Aborted,
            Failure::StatementTimeout,
            Failure::PoolExhausted,
            Failure::Config,
        ] {
            assert_eq!(
                after(1, &Policy::default(), failure),
                Retry::GiveUp(GiveUp::NotRetriable),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn an_unknown_commit_is_re_run_only_when_that_is_safe() {
        let now = Instant::now();
        let later = now + 60 * SECOND;
        let plain = Policy::default();
        assert_eq!(
            decide(
                &state(1),
                &plain,
                unkeyed(),
                Failure::CommitUnknown,
                now,
                later,
                0.0
            ),
            Retry::GiveUp(GiveUp::Ambiguous)
        );
        for policy in [
            Policy::default().idempotent(),
            Policy::default().read_only(),
        ] {
            assert!(matches!(
                decide(
                    &state(1),
                    &policy,
                    unkeyed(),
                    Failure::CommitUnknown,
                    now,
                    later,
                    0.0
                ),
                Retry::After {
                    reconnect: false,
                    ..
                }
            ));
        }
        let keyed = CallTraits { keyed: true };
        assert!(matches!(
            decide(
                &state(1),
                &plain,
                keyed,
                Failure::CommitUnknown,
                now,
                later,
                0.0
            ),
            Retry::After { .. }
        ));
    }
}

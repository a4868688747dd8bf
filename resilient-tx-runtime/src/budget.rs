//! A retry budget shared by every call through one `Db`: during a long outage, callers
//! stop multiplying their load with retries and fail fast instead.
//!
//! It is a token bucket in the style of gRPC's retry throttling and Finagle's
//! `RetryBudget`: every call deposits a fraction of a token, tokens also trickle in at
//! a fixed rate, and each reconnecting retry withdraws one.

use std::sync::Mutex;
use std::time::Instant;

/// The budget's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Most tokens the bucket holds (a burst of retries allowed after a quiet period).
    pub capacity: f64,
    /// Tokens each call deposits: 0.2 lets retries add at most 20% to steady traffic.
    pub per_call: f64,
    /// Tokens added per second regardless of traffic, so a quiet app can still retry.
    pub per_second: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            capacity: 100.0,
            per_call: 0.2,
            per_second: 10.0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RetryBudget {
    config: RetryBudgetConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled_at: Instant,
}

impl RetryBudget {
    pub(crate) fn new(config: RetryBudgetConfig) -> Self {
        RetryBudget {
            config,
            state: Mutex::new(State {
                tokens: config.capacity,
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Records a call.
    pub(crate) fn deposit(&self) {
        let mut state = self.lock();
        self.refill(&mut state, Instant::now());
        state.tokens = (state.tokens + self.config.per_call).min(self.config.capacity);
    }

    /// Takes a token for a retry; `false` when the budget is spent.
    pub(crate) fn try_withdraw(&self) -> bool {
        let mut state = self.lock();
        self.refill(&mut state, Instant::now());
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&self, state: &mut State, now: Instant) {
        let elapsed = now
            .saturating_duration_since(state.refilled_at)
            .as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.config.per_second).min(self.config.capacity);
        state.refilled_at = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the numbers inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_refuses_until_calls_or_time_refill_it() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            capacity: 3.0,
            per_call: 0.5,
            per_second: 0.0,
        });
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw(), "three tokens, three retries");
        budget.deposit();
        assert!(!budget.try_withdraw(), "half a token is not enough");
        budget.deposit();
        assert!(budget.try_withdraw());
    }

    #[test]
    fn time_refills_the_budget() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            capacity: 1.0,
            per_call: 0.0,
            per_second: 1000.0,
        });
        assert!(budget.try_withdraw());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(budget.try_withdraw());
    }
}

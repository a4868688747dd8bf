//! The `metrics` feature off: the same recording points as `emit.rs`, doing nothing.
//! Every type is zero-sized and every function empty, so the hot path reads no clock,
//! formats nothing and allocates nothing.

use std::time::Duration;

use crate::error::{ErrorKind, Failure};

/// Nothing: no clock is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch;

impl Stopwatch {
    #[inline(always)]
    pub(crate) fn start() -> Self {
        Stopwatch
    }
}

/// Nothing: no clock is read and nothing is recorded when the call ends.
#[derive(Debug)]
pub(crate) struct CallClock;

impl CallClock {
    #[inline(always)]
    pub(crate) fn new(_function: &'static str) -> Self {
        CallClock
    }

    #[inline(always)]
    pub(crate) fn attempt_started(&mut self) {}

    #[inline(always)]
    pub(crate) fn attempt_ended(&self, _error_type: Option<&'static str>) {}

    #[inline(always)]
    pub(crate) fn call_ended(&self, _error_type: Option<&'static str>) {}
}

#[inline(always)]
pub(crate) fn retry(_function: &'static str, _failure: Failure) {}

#[inline(always)]
pub(crate) fn give_up(_function: &'static str, _kind: ErrorKind) {}

#[inline(always)]
pub(crate) fn ambiguous(_function: &'static str, _outcome: &'static str) {}

#[inline(always)]
pub(crate) fn budget_refusal(_function: &'static str) {}

#[inline(always)]
pub(crate) fn stored_result(_function: &'static str) {}

#[inline(always)]
pub(crate) fn connection_opened(_pool: &'static str, _started: &Stopwatch) {}

#[inline(always)]
pub(crate) fn connect_failed(_pool: &'static str, _failure: Failure) {}

#[inline(always)]
pub(crate) fn stale_replaced(_pool: &'static str) {}

#[inline(always)]
pub(crate) fn discarded(_pool: &'static str) {}

#[inline(always)]
pub(crate) fn checkout_ended(
    _pool: &'static str,
    _started: &Stopwatch,
    _limit: Duration,
    _ok: bool,
) {
}

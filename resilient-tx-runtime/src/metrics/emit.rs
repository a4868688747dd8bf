//! The `metrics` feature on: events recorded through the `metrics` facade, to whatever
//! recorder the application installed (none: every call is a no-op of the facade's).
//!
//! Labels are `&'static str` throughout: a function's name is its path from the
//! macro, pools are `primary` or `replica`, causes are fixed words. Series labelled by
//! pool have their labels in statics; series labelled by function build a small label
//! list per sample (one allocation, no formatting).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ::metrics::{Label, Unit, counter, gauge, histogram, with_recorder};

use super::names::{self, Kind};
use crate::error::{ErrorKind, Failure};

/// When something started, for a duration recorded when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch(Instant::now())
    }

    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The clocks of one call: the call's own, recorded when the call is dropped (so that a
/// call whose caller went away is counted too, as `cancelled`), and the current
/// attempt's.
#[derive(Debug)]
pub(crate) struct CallClock {
    function: &'static str,
    call: Stopwatch,
    attempt: Stopwatch,
    /// `None` for success, else the `error.type`. Set once, by the end of the call;
    /// a `OnceLock` so that the call's `&self` methods can set it.
    outcome: OnceLock<Option<&'static str>>,
}

impl CallClock {
    pub(crate) fn new(function: &'static str) -> Self {
        let now = Stopwatch::start();
        CallClock {
            function,
            call: now,
            attempt: now,
            outcome: OnceLock::new(),
        }
    }

    pub(crate) fn attempt_started(&mut self) {
        self.attempt = Stopwatch::start();
    }

    /// The current attempt ended: `None` when it succeeded, else its `error.type`.
    pub(crate) fn attempt_ended(&self, error_type: Option<&'static str>) {
        let seconds = self.attempt.elapsed().as_secs_f64();
        histogram!(names::ATTEMPT_DURATION, per_call(self.function, error_type)).record(seconds);
    }

    /// The call has its result: `None` for success, else its `error.type`. The first
    /// word wins.
    pub(crate) fn call_ended(&self, error_type: Option<&'static str>) {
        let _ = self.outcome.set(error_type);
    }
}

impl Drop for CallClock {
    fn drop(&mut self) {
        let outcome = match self.outcome.get() {
            Some(outcome) => *outcome,
            None => Some(names::CANCELLED),
        };
        let seconds = self.call.elapsed().as_secs_f64();
        histogram!(names::OPERATION_DURATION, per_call(self.function, outcome)).record(seconds);
    }
}

/// The labels of a per-call series.
fn per_call(function: &'static str, error_type: Option<&'static str>) -> Vec<Label> {
    let mut labels = Vec::with_capacity(3);
    labels.push(Label::from_static_parts(names::SYSTEM, names::POSTGRESQL));
    labels.push(Label::from_static_parts(names::FUNCTION, function));
    if let Some(error_type) = error_type {
        labels.push(Label::from_static_parts(names::ERROR_TYPE, error_type));
    }
    labels
}

/// A per-call series with one more label.
fn per_call_with(function: &'static str, key: &'static str, value: &'static str) -> Vec<Label> {
    vec![
        Label::from_static_parts(names::SYSTEM, names::POSTGRESQL),
        Label::from_static_parts(names::FUNCTION, function),
        Label::from_static_parts(key, value),
    ]
}

pub(crate) fn retry(function: &'static str, failure: Failure) {
    counter!(
        names::CALL_RETRIES,
        per_call(function, Some(failure.as_str()))
    )
    .increment(1);
}

pub(crate) fn give_up(function: &'static str, kind: ErrorKind) {
    counter!(
        names::CALL_GIVE_UPS,
        per_call(function, Some(kind.as_str()))
    )
    .increment(1);
}

/// An ambiguous COMMIT was settled as `outcome`.
pub(crate) fn ambiguous(function: &'static str, outcome: &'static str) {
    counter!(
        names::COMMIT_AMBIGUOUS,
        per_call_with(function, names::OUTCOME, outcome)
    )
    .increment(1);
}

pub(crate) fn budget_refusal(function: &'static str) {
    counter!(names::BUDGET_REFUSALS, per_call(function, None)).increment(1);
}

pub(crate) fn stored_result(function: &'static str) {
    counter!(names::STORED_RESULTS, per_call(function, None)).increment(1);
}

/// The handle of a per-pool series whose labels are all fixed: one static key per
/// pool, so recording allocates nothing. (The facade makes a static key only from
/// literals, hence the label names spelled out here.)
macro_rules! per_pool {
    ($kind:ident, $name:expr, $pool:expr $(, $key:literal => $value:literal)*) => {
        match $pool {
            names::REPLICA => $kind!(
                $name,
                "db.system.name" => "postgresql",
                "db.client.connection.pool.name" => "replica"
                $(, $key => $value)*
            ),
            _ => $kind!(
                $name,
                "db.system.name" => "postgresql",
                "db.client.connection.pool.name" => "primary"
                $(, $key => $value)*
            ),
        }
    };
}

pub(crate) fn connection_opened(pool: &'static str, started: &Stopwatch) {
    per_pool!(counter, names::OPENED, pool).increment(1);
    per_pool!(histogram, names::CREATE_TIME, pool).record(started.elapsed().as_secs_f64());
}

pub(crate) fn connect_failed(pool: &'static str, failure: Failure) {
    let labels = vec![
        Label::from_static_parts(names::SYSTEM, names::POSTGRESQL),
        Label::from_static_parts(names::POOL_NAME, pool),
        Label::from_static_parts(names::ERROR_TYPE, failure.as_str()),
    ];
    counter!(names::CONNECT_FAILURES, labels).increment(1);
}

pub(crate) fn stale_replaced(pool: &'static str) {
    per_pool!(counter, names::STALE_REPLACED, pool).increment(1);
}

pub(crate) fn discarded(pool: &'static str) {
    per_pool!(counter, names::DISCARDED, pool).increment(1);
}

/// A checkout ended after waiting since `started`: its wait when it got a connection,
/// a timeout when it failed because `limit` ran out (not when a connect failed first).
pub(crate) fn checkout_ended(pool: &'static str, started: &Stopwatch, limit: Duration, ok: bool) {
    let waited = started.elapsed();
    if ok {
        per_pool!(histogram, names::WAIT_TIME, pool).record(waited.as_secs_f64());
    } else if waited >= limit {
        per_pool!(counter, names::TIMEOUTS, pool).increment(1);
    }
}

/// One pool at one moment, for the gauges.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PoolGauges {
    pub(crate) idle: u64,
    pub(crate) used: u64,
    pub(crate) max: u64,
    pub(crate) pending: u64,
}

pub(crate) fn pool_gauges(pool: &'static str, sample: PoolGauges) {
    let count = names::CONNECTION_COUNT;
    per_pool!(gauge, count, pool, "db.client.connection.state" => "idle").set(sample.idle as f64);
    per_pool!(gauge, count, pool, "db.client.connection.state" => "used").set(sample.used as f64);
    per_pool!(gauge, names::CONNECTION_MAX, pool).set(sample.max as f64);
    per_pool!(gauge, names::PENDING_REQUESTS, pool).set(sample.pending as f64);
}

/// Tells the installed recorder the unit and meaning of every series the runtime
/// emits, for its `HELP` lines and unit suffixes (Prometheus: `_seconds`). Call it once
/// after installing the recorder; series are recorded whether or not it was called.
pub fn describe_metrics() {
    with_recorder(|recorder| {
        for (name, kind, description) in names::ALL {
            let (name, description) = (name.into(), description.into());
            match kind {
                Kind::Counter => recorder.describe_counter(name, Some(Unit::Count), description),
                Kind::Gauge => recorder.describe_gauge(name, Some(Unit::Count), description),
                Kind::Histogram => {
                    recorder.describe_histogram(name, Some(Unit::Seconds), description)
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ::metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
        with_local_recorder,
    };

    use super::*;

    /// Notes every key registered with it.
    #[derive(Default)]
    struct Keys(Mutex<Vec<Key>>);

    impl Keys {
        fn labels_of(&self, name: &str) -> Vec<Vec<(String, String)>> {
            let keys = self.0.lock().expect("keys");
            keys.iter()
                .filter(|key| key.name() == name)
                .map(|key| {
                    key.labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect()
                })
                .collect()
        }

        fn note(&self, key: &Key) {
            self.0.lock().expect("keys").push(key.clone());
        }
    }

    impl Recorder for Keys {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.note(key);
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.note(key);
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.note(key);
            Histogram::noop()
        }
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The per-pool series spell their labels as literals: they must be the names.
    #[test]
    fn pool_series_carry_the_documented_labels() {
        let keys = Keys::default();
        with_local_recorder(&keys, || {
            pool_gauges(names::REPLICA, PoolGauges::default());
            connection_opened(names::PRIMARY, &Stopwatch::start());
        });
        let replica = |extra: &[(&str, &str)]| {
            let mut labels = pairs(&[
                (names::SYSTEM, names::POSTGRESQL),
                (names::POOL_NAME, names::REPLICA),
            ]);
            labels.extend(pairs(extra));
            labels
        };
        assert_eq!(
            keys.labels_of(names::CONNECTION_COUNT),
            vec![
                replica(&[(names::STATE, "idle")]),
                replica(&[(names::STATE, "used")])
            ]
        );
        assert_eq!(keys.labels_of(names::PENDING_REQUESTS), vec![replica(&[])]);
        let primary = pairs(&[
            (names::SYSTEM, names::POSTGRESQL),
            (names::POOL_NAME, names::PRIMARY),
        ]);
        assert_eq!(keys.labels_of(names::OPENED), vec![primary.clone()]);
        assert_eq!(keys.labels_of(names::CREATE_TIME), vec![primary]);
    }

    #[test]
    fn a_call_dropped_before_its_outcome_is_cancelled() {
        let keys = Keys::default();
        with_local_recorder(&keys, || {
            let done = CallClock::new("app::done");
            done.call_ended(None);
            drop(done);
            drop(CallClock::new("app::dropped"));
        });
        assert_eq!(
            keys.labels_of(names::OPERATION_DURATION),
            vec![
                pairs(&[
                    (names::SYSTEM, names::POSTGRESQL),
                    (names::FUNCTION, "app::done")
                ]),
                pairs(&[
                    (names::SYSTEM, names::POSTGRESQL),
                    (names::FUNCTION, "app::dropped"),
                    (names::ERROR_TYPE, names::CANCELLED)
                ]),
            ]
        );
    }
}

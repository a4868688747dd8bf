//! Log lines a case provokes on purpose, kept out of the demo's output while the case
//! expects them.
//!
//! Some outcomes a case requires are logged at ERROR by the code under test, rightly
//! so in production: TX-03 cuts a COMMIT of a create without an idempotency key while
//! the database stays unreachable, and the runtime logs "COMMIT outcome unknown and
//! the function is not idempotent" as it gives the client `commit_unknown`. In the demo
//! such a line reads as a failure of the run, although the case checks that very
//! outcome and reports it in the matrix. The case says which message it expects for
//! how long ([`expect`]); the demo's subscriber filters exactly those with
//! [`ExpectedLogs`] and still shows every other ERROR, the same message included when
//! no case expects it. Tests install no such filter: their logs show everything.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The messages expected now, by the id of the [`Expected`] guard that asked.
static EXPECTED: Mutex<Vec<(u64, &'static str)>> = Mutex::new(Vec::new());

/// Ids of [`Expected`] guards.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn expected() -> std::sync::MutexGuard<'static, Vec<(u64, &'static str)>> {
    // A panic while the list was held leaves it valid: every change is one push or
    // one retain.
    EXPECTED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Log events whose message starts with `prefix` are expected until the returned
/// guard is dropped.
#[must_use = "the expectation ends when the guard is dropped"]
pub(crate) fn expect(prefix: &'static str) -> Expected {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    expected().push((id, prefix));
    Expected { id }
}

/// Ends its expectation when dropped.
#[derive(Debug)]
pub(crate) struct Expected {
    id: u64,
}

impl Drop for Expected {
    fn drop(&mut self) {
        expected().retain(|(id, _)| *id != self.id);
    }
}

/// A per-layer filter that drops the log events a running case expects (see the
/// module docs) and lets everything else through; combine it with the level filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExpectedLogs;

impl<S> Filter<S> for ExpectedLogs {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let prefixes: Vec<&'static str> = expected().iter().map(|(_, p)| *p).collect();
        if prefixes.is_empty() {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        !prefixes.iter().any(|p| message.0.starts_with(p))
    }
}

/// Reads the `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects the messages that reach it.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Collect {
        fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().expect("not poisoned").push(message.0);
        }
    }

    #[test]
    fn only_expected_messages_are_dropped_and_only_while_expected() {
        let seen = Collect::default();
        let subscriber =
            tracing_subscriber::registry().with(seen.clone().with_filter(ExpectedLogs));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("COMMIT outcome unknown (before)");
            {
                let _expected = expect("COMMIT outcome unknown");
                tracing::error!(error = "x", "COMMIT outcome unknown (during)");
                tracing::error!("something else (during)");
            }
            tracing::error!("COMMIT outcome unknown (after)");
        });
        assert_eq!(
            *seen.0.lock().expect("not poisoned"),
            [
                "COMMIT outcome unknown (before)",
                "something else (during)",
                "COMMIT outcome unknown (after)"
            ]
        );
    }
}

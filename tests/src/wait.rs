//! Bounded waiting for the orchestrators: every wait has a deadline, and when
//! it passes the error names what was awaited, what was seen last, and the
//! end of the logs that explain why.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::postmaster::log_since;

/// How often a condition is probed again.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one look at an awaited condition found.
pub(crate) enum Probe<T> {
    /// The condition holds; the wait returns this value.
    Ready(T),
    /// Not yet; the text says what was seen instead.
    NotYet(String),
    /// It never will (e.g. the daemon exited): the wait fails at once.
    Failed(String),
}

/// Probes until `probe` is [`Probe::Ready`], at most `timeout`. Each probe is
/// itself cut off at the deadline. On failure the error says
/// "`what` … within `timeout`", the last observation, and the tails of
/// `logs`.
pub(crate) async fn until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    logs: &[&Path],
    mut probe: F,
) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Probe<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing (no probe finished)");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(failure(
                io::ErrorKind::TimedOut,
                &format!("{what} did not happen within {timeout:?}; last seen: {last}"),
                logs,
            ));
        }
        match tokio::time::timeout(remaining, probe()).await {
            Ok(Probe::Ready(value)) => return Ok(value),
            Ok(Probe::NotYet(seen)) => last = seen,
            Ok(Probe::Failed(why)) => {
                return Err(failure(
                    io::ErrorKind::Other,
                    &format!("gave up waiting for {what}: {why}"),
                    logs,
                ));
            }
            Err(_) => last = format!("a probe still running at the deadline (before it: {last})"),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(POLL_INTERVAL.min(remaining)).await;
    }
}

/// An error of `kind` with `message` followed by the tails of `logs`.
pub(crate) fn failure(kind: io::ErrorKind, message: &str, logs: &[&Path]) -> io::Error {
    io::Error::new(kind, format!("{message}{}", log_tails(logs)))
}

/// Adds the tails of `logs` to `error`, keeping its kind.
pub(crate) fn with_logs(error: io::Error, logs: &[&Path]) -> io::Error {
    failure(error.kind(), &error.to_string(), logs)
}

/// The last few KiB of each log, each under a header naming the file.
fn log_tails(logs: &[&Path]) -> String {
    let mut out = String::new();
    for log in logs {
        let tail = log_since(log, 0);
        let _ = write!(
            out,
            "\n--- end of {} ---\n{}",
            log.display(),
            tail.trim_end()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_names_what_was_awaited_and_the_last_observation() {
        let err = until("the moon", Duration::from_millis(120), &[], || async {
            Probe::<()>::NotYet("clouds".to_owned())
        })
        .await
        .expect_err("never ready");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let message = err.to_string();
        assert!(
            message.contains("the moon did not happen within"),
            "{message}"
        );
        assert!(message.contains("last seen: clouds"), "{message}");
    }

    #[tokio::test]
    async fn a_failed_probe_ends_the_wait_at_once() {
        let started = Instant::now();
        let err = until("a daemon", Duration::from_secs(30), &[], || async {
            Probe::<()>::Failed("it exited".to_owned())
        })
        .await
        .expect_err("failed");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("it exited"));
    }

    #[tokio::test]
    async fn the_value_of_a_ready_probe_is_returned() {
        let mut calls = 0;
        let value = until("a count", Duration::from_secs(10), &[], || {
            calls += 1;
            let done = calls >= 3;
            async move {
                if done {
                    Probe::Ready(7)
                } else {
                    Probe::NotYet("small".to_owned())
                }
            }
        })
        .await
        .expect("ready");
        assert_eq!(value, 7);
    }
}

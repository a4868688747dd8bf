//! [`Probes`]: the connections a verification probes with, until the call's deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::pool::{Pool, Recoveries, Session};

/// Fresh connections for probing, one after another, until `deadline`. After a failed
/// probe (or no connection) the next comes after a pause, doubling up to a second.
pub(crate) struct Probes<'p> {
    pool: &'p Pool,
    deadline: Instant,
    /// The call's function, for logs.
    name: &'static str,
    pause: Duration,
    failed: bool,
    /// Ends of outages since the last probe began: they end the pause after it.
    recovered: Recoveries,
}

impl<'p> Probes<'p> {
    pub(crate) fn new(pool: &'p Pool, deadline: Instant, name: &'static str) -> Self {
        Probes {
            pool,
            deadline,
            name,
            pause: Duration::from_millis(50),
            failed: false,
            recovered: Recoveries::since_now(pool, None),
        }
    }

    /// The call's function, for logs.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The next connection and the time left; `None` once the deadline has passed.
    /// A session condemns itself when its probe fails; the caller only says
    /// [`Probes::failed`] so that the next one comes after a pause.
    pub(crate) async fn next(&mut self) -> Option<(Session<'p>, Duration)> {
        loop {
            if self.failed {
                let left = self.deadline.saturating_duration_since(Instant::now());
                // The end of an outage ends the pause: the answer is there to be had.
                tokio::select! {
                    () = tokio::time::sleep(self.pause.min(left)) => {}
                    () = self.recovered.next() => {}
                }
                self.pause = (self.pause * 2).min(Duration::from_secs(1));
            }
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            self.recovered = Recoveries::since_now(self.pool, None);
            match self
                .pool
                .session(remaining.min(self.pool.pool_timeout))
                .await
            {
                Ok(session) => {
                    self.failed = false;
                    return Some((session, remaining));
                }
                Err(_) => self.failed = true,
            }
        }
    }

    /// The last probe got no usable answer: the next one waits a little first.
    pub(crate) fn failed(&mut self) {
        self.failed = true;
    }
}

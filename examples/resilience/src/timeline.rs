//! What happened when during a case: every request the suite sent (when it started,
//! when its answer came, what the answer was), the fault windows, and the recovery.
//! Times are offsets from the start of the case. The HTML report draws it.

use std::time::Duration;

/// The timeline of one case.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Every request, in the order the answers came.
    pub requests: Vec<RequestSample>,
    /// The faults injected (and the loads that stand for a fault), in order.
    pub faults: Vec<Fault>,
    /// The interval [`Observation::recovery`](crate::Observation::recovery) measures.
    pub recovery: Option<Span>,
}

/// One request of the suite's HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSample {
    /// When it was sent.
    pub start: Duration,
    /// When its answer (or the transport error) came back.
    pub end: Duration,
    /// The HTTP status; 0 when no answer came (see `code`).
    pub status: u16,
    /// The error code of an error answer (`database_unavailable`, …), `no answer` for
    /// a transport failure, empty for a success.
    pub code: String,
}

impl RequestSample {
    /// The series the request belongs to in a chart: `ok` for a 2xx, else status and
    /// code (`503 database_unavailable`, `no answer`).
    pub fn outcome(&self) -> String {
        match self.status {
            200..=299 => "ok".to_owned(),
            0 => "no answer".to_owned(),
            status if self.code.is_empty() => status.to_string(),
            status => format!("{status} {}", self.code),
        }
    }
}

/// A fault window: from the moment the fault was injected until it was taken away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What was done, e.g. `server stopped`.
    pub label: String,
    /// When it began.
    pub start: Duration,
    /// When it ended; `None` while it lasts (to the end of the case if it never ends).
    /// Equal to `start` for an instant fault (connections terminated, a cut).
    pub end: Option<Duration>,
}

/// An interval of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Where it starts.
    pub start: Duration,
    /// Where it ends.
    pub end: Duration,
}

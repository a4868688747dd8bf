//! A case's requests counted per time bucket, one series per outcome (`ok`, each
//! error code, `no answer`), in the order the chart stacks and the legend lists them.

use std::time::Duration;

use crate::timeline::RequestSample;

/// Width of one bucket.
pub(crate) const BUCKET: Duration = Duration::from_millis(100);

/// Outcomes with a color of their own, bottom of the stack first. Others follow in
/// alphabetical order with colors from [`OTHER_COLORS`].
const KNOWN: &[(&str, &str)] = &[
    ("ok", "#2da44e"),
    ("503 database_unavailable", "#cf222e"),
    ("504 timeout", "#fb8500"),
    ("503 pool_exhausted", "#8250df"),
    ("503 commit_unknown", "#9a6700"),
    ("no answer", "#24292f"),
];

/// Colors of the outcomes not in [`KNOWN`], in turn.
const OTHER_COLORS: &[&str] = &["#0969da", "#bf3989", "#1b7c83", "#6e7781", "#953800"];

/// Requests of one outcome per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Series {
    /// The outcome, as [`RequestSample::outcome`] names it.
    pub(crate) label: String,
    /// A CSS color.
    pub(crate) color: &'static str,
    /// Requests answered within each bucket.
    pub(crate) counts: Vec<u32>,
    /// All requests of this outcome.
    pub(crate) total: u32,
}

/// Every series of one case over `buckets` buckets of [`BUCKET`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Buckets {
    /// How many buckets the time axis has.
    pub(crate) buckets: usize,
    /// The series, bottom of the stack first.
    pub(crate) series: Vec<Series>,
}

impl Buckets {
    /// Counts `requests` by the bucket their answer came back in, over at least
    /// `span` (the case's length).
    pub(crate) fn count(requests: &[RequestSample], span: Duration) -> Buckets {
        let last = requests.iter().map(|r| r.end).max().unwrap_or_default();
        let buckets = bucket_of(span.max(last)) + 1;
        let mut labels: Vec<String> = requests.iter().map(RequestSample::outcome).collect();
        labels.sort_by_key(|label| order(label));
        labels.dedup();
        let mut other_colors = OTHER_COLORS.iter().cycle();
        let mut series: Vec<Series> = labels
            .into_iter()
            .map(|label| {
                let color = match KNOWN.iter().find(|(known, _)| *known == label) {
                    Some((_, color)) => color,
                    // `cycle` over a non-empty array never ends.
                    None => other_colors.next().unwrap_or(&"#6e7781"),
                };
                Series {
                    label,
                    color,
                    counts: vec![0; buckets],
                    total: 0,
                }
            })
            .collect();
        for request in requests {
            let outcome = request.outcome();
            if let Some(s) = series.iter_mut().find(|s| s.label == outcome) {
                s.counts[bucket_of(request.end)] += 1;
                s.total += 1;
            }
        }
        Buckets { buckets, series }
    }

    /// The most requests answered within one bucket, all outcomes together.
    pub(crate) fn peak(&self) -> u32 {
        (0..self.buckets)
            .map(|i| self.series.iter().map(|s| s.counts[i]).sum::<u32>())
            .max()
            .unwrap_or(0)
    }
}

/// The bucket `at` falls in.
fn bucket_of(at: Duration) -> usize {
    (at.as_millis() / BUCKET.as_millis()) as usize
}

/// Sort key of an outcome: the known ones in their order, then the rest by name.
fn order(label: &str) -> (usize, String) {
    let rank = KNOWN
        .iter()
        .position(|(known, _)| *known == label)
        .unwrap_or(KNOWN.len());
    (rank, label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(end_ms: u64, status: u16, code: &str) -> RequestSample {
        RequestSample {
            start: Duration::from_millis(end_ms.saturating_sub(30)),
            end: Duration::from_millis(end_ms),
            status,
            code: code.to_owned(),
        }
    }

    #[test]
    fn requests_are_counted_by_outcome_and_the_bucket_of_their_answer() {
        let requests = [
            sample(50, 200, ""),
            sample(99, 201, ""),
            sample(100, 503, "database_unavailable"),
            sample(250, 404, "not_found"),
            sample(260, 0, "no answer"),
            sample(270, 503, "database_unavailable"),
        ];
        let b = Buckets::count(&requests, Duration::from_millis(450));
        assert_eq!(b.buckets, 5);
        let labels: Vec<&str> = b.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "ok",
                "503 database_unavailable",
                "no answer",
                "404 not_found"
            ]
        );
        assert_eq!(b.series[0].counts, [2, 0, 0, 0, 0]);
        assert_eq!(b.series[1].counts, [0, 1, 1, 0, 0]);
        assert_eq!(b.series[1].total, 2);
        assert_eq!(b.series[3].color, OTHER_COLORS[0]);
        assert_eq!(b.peak(), 3);
    }

    #[test]
    fn the_axis_covers_answers_after_the_span() {
        let b = Buckets::count(&[sample(1234, 200, "")], Duration::from_millis(500));
        assert_eq!(b.buckets, 13);
        assert_eq!(Buckets::count(&[], Duration::ZERO).peak(), 0);
    }
}

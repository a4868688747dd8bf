//! The cut plan of a [`FaultProxy`](crate::FaultProxy): where to cut
//! ([`CutPoint`], [`CutRule`], [`RandomCuts`]), the decision for each
//! complete statement, and the counts of cuts made ([`CutCounts`]). One plan
//! is shared by all connections of a proxy; random draws happen in the order
//! the connections meet statements.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// How long an "after" cut waits for the server's reply to the statement it
/// forwarded before resetting anyway.
pub const REPLY_WAIT: Duration = Duration::from_secs(2);

/// Where in the PostgreSQL protocol a connection is cut. A statement is a
/// simple `Query`, or extended-protocol messages up to a `Sync`; a COMMIT is a
/// simple query whose text is `COMMIT` (`END`, `COMMIT WORK` … in any case,
/// with an optional `;`). Each point matches either statements other than
/// COMMIT or COMMITs only, never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutPoint {
    /// A statement other than COMMIT is dropped: the server never sees it,
    /// and both sides are reset.
    BeforeStatement,
    /// A statement other than COMMIT is forwarded and executed; the
    /// connection is reset before the reply reaches the client.
    AfterStatementBeforeReply,
    /// A COMMIT is dropped: the server never sees it (and rolls the
    /// transaction back when the reset reaches it); the client only knows
    /// that the connection died while COMMIT was in flight.
    BeforeCommit,
    /// A COMMIT is forwarded and executed (the proxy waits for the server's
    /// reply, up to [`REPLY_WAIT`]); the connection is reset before the reply
    /// reaches the client. The transaction committed, yet the client sees a
    /// connection error.
    AfterCommitBeforeReply,
}

impl CutPoint {
    fn matches(self, commit: bool) -> bool {
        match self {
            CutPoint::BeforeStatement | CutPoint::AfterStatementBeforeReply => !commit,
            CutPoint::BeforeCommit | CutPoint::AfterCommitBeforeReply => commit,
        }
    }

    pub(crate) fn is_after(self) -> bool {
        matches!(
            self,
            CutPoint::AfterStatementBeforeReply | CutPoint::AfterCommitBeforeReply
        )
    }
}

/// One cut, made once: at the first statement that reaches `point` (and,
/// with [`CutRule::matching`], whose messages contain a text).
///
/// ```
/// use resilient_tx_testkit::{CutPoint, CutRule};
/// // Reset the connection after the server executed an INSERT into `orders`
/// // (the text is searched in the statement's bytes: SQL of a simple query or
/// // a Parse, or a parameter's value).
/// let rule = CutRule::at(CutPoint::AfterStatementBeforeReply).matching("INSERT INTO orders");
/// # let _ = rule;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutRule {
    point: CutPoint,
    needle: Option<Vec<u8>>,
}

impl CutRule {
    /// Cuts at the next statement that reaches `point`.
    pub fn at(point: CutPoint) -> CutRule {
        CutRule {
            point,
            needle: None,
        }
    }

    /// Only a statement whose messages contain `text` (case-sensitive).
    pub fn matching(mut self, text: &str) -> CutRule {
        self.needle = Some(text.as_bytes().to_vec());
        self
    }

    /// Where this rule cuts.
    pub fn point(&self) -> CutPoint {
        self.point
    }

    fn matches(&self, commit: bool, statement: &[u8]) -> bool {
        self.point.matches(commit)
            && self.needle.as_deref().is_none_or(|needle| {
                needle.is_empty() || statement.windows(needle.len()).any(|w| w == needle)
            })
    }
}

/// Random cuts: every statement the proxy forwards is cut with a probability,
/// drawn from a generator seeded with `seed`.
///
/// * a statement other than COMMIT, with probability `rate`: half of the time
///   [`CutPoint::BeforeStatement`], half [`CutPoint::AfterStatementBeforeReply`];
/// * a COMMIT, with probability `commit_rate`: a quarter of the time
///   [`CutPoint::BeforeCommit`], three quarters
///   [`CutPoint::AfterCommitBeforeReply`] (the ambiguous case, the one that
///   matters most).
///
/// The draws happen in the order the proxy meets statements, over all its
/// connections: a run with one connection at a time is reproducible from the
/// seed; with several, the interleaving of their statements matters too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomCuts {
    /// Probability of cutting a statement other than COMMIT.
    pub rate: f64,
    /// Probability of cutting a COMMIT.
    pub commit_rate: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl RandomCuts {
    /// Cuts statements and COMMITs alike with probability `rate`.
    pub fn new(rate: f64, seed: u64) -> RandomCuts {
        RandomCuts {
            rate,
            commit_rate: rate,
            seed,
        }
    }

    /// Cuts COMMITs with probability `commit_rate` instead.
    pub fn commit_rate(mut self, commit_rate: f64) -> RandomCuts {
        self.commit_rate = commit_rate;
        self
    }
}

/// How many cuts a proxy made, by point (since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutCounts {
    /// [`CutPoint::BeforeStatement`] cuts.
    pub before_statement: u64,
    /// [`CutPoint::AfterStatementBeforeReply`] cuts.
    pub after_statement: u64,
    /// [`CutPoint::BeforeCommit`] cuts.
    pub before_commit: u64,
    /// [`CutPoint::AfterCommitBeforeReply`] cuts.
    pub after_commit: u64,
    /// "After" cuts (statement or COMMIT) made without having seen the
    /// server's reply within [`REPLY_WAIT`]: the statement was forwarded, but
    /// the server may not have executed it before the reset reached it.
    /// Included in `after_statement` / `after_commit`.
    pub after_without_reply: u64,
}

impl CutCounts {
    /// All cuts.
    pub fn total(&self) -> u64 {
        self.before_statement + self.after_statement + self.before_commit + self.after_commit
    }
}

enum Plan {
    Off,
    /// One-shot rules, each removed once it cut.
    Once(Vec<CutRule>),
    Random {
        cuts: RandomCuts,
        rng: Box<StdRng>,
    },
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::Off => f.write_str("Off"),
            Plan::Once(rules) => f.debug_tuple("Once").field(rules).finish(),
            Plan::Random { cuts, .. } => f.debug_tuple("Random").field(cuts).finish(),
        }
    }
}

/// The proxy's cut plan and counters, shared by all its connections.
#[derive(Debug)]
pub(crate) struct Cuts {
    /// Whether a plan is in force (read on every chunk, without the lock).
    armed: AtomicBool,
    plan: Mutex<Plan>,
    before_statement: AtomicU64,
    after_statement: AtomicU64,
    before_commit: AtomicU64,
    after_commit: AtomicU64,
    after_without_reply: AtomicU64,
}

impl Cuts {
    pub(crate) fn new() -> Cuts {
        Cuts {
            armed: AtomicBool::new(false),
            plan: Mutex::new(Plan::Off),
            before_statement: AtomicU64::new(0),
            after_statement: AtomicU64::new(0),
            before_commit: AtomicU64::new(0),
            after_commit: AtomicU64::new(0),
            after_without_reply: AtomicU64::new(0),
        }
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, plan: Plan) {
        let mut current = self.plan();
        self.armed
            .store(!matches!(plan, Plan::Off), Ordering::Release);
        *current = plan;
    }

    pub(crate) fn cut_once(&self, rules: Vec<CutRule>) {
        if rules.is_empty() {
            self.set(Plan::Off);
        } else {
            self.set(Plan::Once(rules));
        }
    }

    pub(crate) fn cut_randomly(&self, cuts: RandomCuts) {
        self.set(Plan::Random {
            cuts,
            rng: Box::new(StdRng::seed_from_u64(cuts.seed)),
        });
    }

    pub(crate) fn stop(&self) {
        self.set(Plan::Off);
    }

    /// The one-shot rules that have not cut yet.
    pub(crate) fn pending(&self) -> Vec<CutRule> {
        match &*self.plan() {
            Plan::Once(rules) => rules.clone(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// Whether to cut at a complete statement (its bytes: `statement`), and
    /// where.
    pub(crate) fn decide(&self, commit: bool, statement: &[u8]) -> Option<CutPoint> {
        let mut plan = self.plan();
        match &mut *plan {
            Plan::Off => None,
            Plan::Once(rules) => {
                let index = rules
                    .iter()
                    .position(|rule| rule.matches(commit, statement))?;
                let point = rules.remove(index).point;
                if rules.is_empty() {
                    *plan = Plan::Off;
                    self.armed.store(false, Ordering::Release);
                }
                Some(point)
            }
            Plan::Random { cuts, rng } => {
                let rate = if commit { cuts.commit_rate } else { cuts.rate };
                if !rng.random_bool(rate.clamp(0.0, 1.0)) {
                    return None;
                }
                Some(match (commit, rng.random_range(0..4u8)) {
                    (true, 0) => CutPoint::BeforeCommit,
                    (true, _) => CutPoint::AfterCommitBeforeReply,
                    (false, 0 | 1) => CutPoint::BeforeStatement,
                    (false, _) => CutPoint::AfterStatementBeforeReply,
                })
            }
        }
    }

    pub(crate) fn count(&self, point: CutPoint, replied: bool) {
        let counter = match point {
            CutPoint::BeforeStatement => &self.before_statement,
            CutPoint::AfterStatementBeforeReply => &self.after_statement,
            CutPoint::BeforeCommit => &self.before_commit,
            CutPoint::AfterCommitBeforeReply => &self.after_commit,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if point.is_after() && !replied {
            self.after_without_reply.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn counts(&self) -> CutCounts {
        CutCounts {
            before_statement: self.before_statement.load(Ordering::Relaxed),
            after_statement: self.after_statement.load(Ordering::Relaxed),
            before_commit: self.before_commit.load(Ordering::Relaxed),
            after_commit: self.after_commit.load(Ordering::Relaxed),
            after_without_reply: self.after_without_reply.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_cuts_follow_the_seed() {
        let draw = |seed| {
            let cuts = Cuts::new();
            cuts.cut_randomly(RandomCuts::new(0.3, seed).commit_rate(0.5));
            (0..200)
                .map(|i| cuts.decide(i % 3 == 0, b""))
                .collect::<Vec<_>>()
        };
        let first = draw(7);
        assert_eq!(first, draw(7));
        assert_ne!(first, draw(8));
        let commits_cut = first
            .iter()
            .step_by(3)
            .filter(|point| point.is_some())
            .count();
        assert!((15..=52).contains(&commits_cut), "{commits_cut} of 67");
        for (i, point) in first.iter().enumerate() {
            if let Some(point) = point {
                assert!(point.matches(i % 3 == 0), "{i}: {point:?}");
            }
        }
    }
}

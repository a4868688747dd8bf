//! Protocol-aware cuts of the [`FaultProxy`](crate::FaultProxy): resetting a
//! connection at an exact point of the PostgreSQL protocol, e.g. after a
//! `COMMIT` reached the server but before its reply reached the client.
//!
//! # How a cut works
//!
//! Each proxied connection frames both directions ([`crate::protocol`]) and
//! numbers the client's *statements*: a simple `Query`, or the extended
//! protocol's messages up to and including a `Sync` (e.g. `Parse`,
//! `Describe`, `Sync`, or `Bind`, `Execute`, `Sync`). The server answers
//! every statement, and the `StartupMessage`, with exactly one
//! `ReadyForQuery`, so the n-th `ReadyForQuery` ends the reply to the n-th of
//! them.
//!
//! While cutting is on, the client side holds back the bytes of a statement
//! until the statement is complete, then asks the plan whether to cut:
//!
//! * before: the statement's bytes are dropped, the bytes before it are
//!   forwarded, and both sockets are reset;
//! * after: the statement is forwarded and nothing after it; the server side
//!   forwards replies up to the end of the previous statement's reply and
//!   holds back everything after. Once the server's `ReadyForQuery` for the
//!   statement arrived (proof that the server executed it), or after
//!   [`REPLY_WAIT`], both sockets are reset: the client never sees the reply.
//!
//! While cutting is off, bytes are forwarded as they come; only message
//! boundaries are tracked (a few header reads per chunk), so pass mode stays
//! cheap and cutting can be switched on for connections that are already open.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;

use crate::protocol::{Frame, Framer, Handshake, Kind, Side};

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

    fn is_after(self) -> bool {
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

    fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// Whether to cut at a complete statement (its bytes: `statement`), and
    /// where.
    fn decide(&self, commit: bool, statement: &[u8]) -> Option<CutPoint> {
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

    fn count(&self, point: CutPoint, replied: bool) {
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

/// What the two directions of one connection share.
#[derive(Debug)]
pub(crate) struct Link {
    handshake: Handshake,
    /// The server side forwards replies up to this many `ReadyForQuery`s and
    /// holds back everything after (`u64::MAX`: no limit).
    forward_ready_limit: AtomicU64,
    /// How many `ReadyForQuery`s the server has sent.
    ready_seen: watch::Sender<u64>,
    /// The server side started holding replies back, and everything it
    /// forwarded before is written to the client.
    drained: watch::Sender<bool>,
}

impl Link {
    pub(crate) fn new() -> Arc<Link> {
        Arc::new(Link {
            handshake: Handshake::default(),
            forward_ready_limit: AtomicU64::new(u64::MAX),
            ready_seen: watch::Sender::new(0),
            drained: watch::Sender::new(false),
        })
    }

    /// Called by the server side's write stage once the bytes before the
    /// held-back replies are written.
    pub(crate) fn mark_drained(&self) {
        self.drained.send_replace(true);
    }
}

/// A cut decided by the client side, carried out by its write stage once the
/// bytes before it are written.
#[derive(Debug)]
pub(crate) struct CutOrder {
    point: CutPoint,
    /// For "after" cuts: the number of the statement whose reply to wait for.
    wait_for_ready: Option<u64>,
}

impl CutOrder {
    /// Waits, for an "after" cut, until the server answered the statement
    /// (or [`REPLY_WAIT`] passed), counts the cut and returns the error that
    /// makes the proxy reset both sockets.
    pub(crate) async fn execute(self, link: &Link, cuts: &Cuts) -> std::io::Error {
        let replied = match self.wait_for_ready {
            None => true,
            Some(n) => {
                let mut ready = link.ready_seen.subscribe();
                let mut drained = link.drained.subscribe();
                // The reply proves the server executed the statement; the
                // replies to earlier statements must reach the client before
                // the reset.
                let waited = tokio::time::timeout(REPLY_WAIT, async {
                    ready.wait_for(|&seen| seen >= n).await.is_ok()
                        && drained.wait_for(|&drained| drained).await.is_ok()
                });
                matches!(waited.await, Ok(true))
            }
        };
        cuts.count(self.point, replied);
        tracing::debug!(point = ?self.point, replied, "fault proxy: cutting a connection");
        std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!("cut by the fault proxy: {:?}", self.point),
        )
    }
}

/// What the client side does with a chunk.
pub(crate) enum ClientStep {
    /// Forward these bytes (possibly none: they are held until the statement
    /// they begin is complete).
    Forward(Vec<u8>),
    /// Forward these bytes, then cut; nothing more is read.
    Cut(Vec<u8>, CutOrder),
}

/// The current statement, as seen by the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Between messages that end a statement.
    Idle,
    /// A statement (or other message) started at this offset of the buffer
    /// being processed; its bytes are not forwarded yet.
    Open(usize),
    /// A statement whose first bytes were forwarded already (cutting was off):
    /// it cannot be cut.
    Forwarded,
}

/// The client→server side of a connection: frames the client's messages,
/// numbers statements and decides cuts.
#[derive(Debug)]
pub(crate) struct ClientTap {
    framer: Framer,
    link: Arc<Link>,
    cuts: Arc<Cuts>,
    frames: Vec<Frame>,
    /// Bytes of an incomplete statement, held back while cutting is on.
    held: Vec<u8>,
    group: Group,
    /// Statements (and the start-up message) seen, each answered by one
    /// `ReadyForQuery`.
    statements: u64,
}

impl ClientTap {
    pub(crate) fn new(link: Arc<Link>, cuts: Arc<Cuts>) -> ClientTap {
        ClientTap {
            framer: Framer::new(Side::Client),
            link,
            cuts,
            frames: Vec::new(),
            held: Vec::new(),
            group: Group::Idle,
            statements: 0,
        }
    }

    pub(crate) fn link(&self) -> Arc<Link> {
        Arc::clone(&self.link)
    }

    pub(crate) fn cuts(&self) -> Arc<Cuts> {
        Arc::clone(&self.cuts)
    }

    /// Processes the next chunk the client sent.
    pub(crate) fn process(&mut self, chunk: Vec<u8>) -> ClientStep {
        let base = self.held.len();
        let mut buf = if base == 0 {
            chunk
        } else {
            let mut buf = std::mem::take(&mut self.held);
            buf.extend_from_slice(&chunk);
            buf
        };
        self.frames.clear();
        self.framer
            .feed(&buf[base..], base, &self.link.handshake, &mut self.frames);
        let armed = self.cuts.armed();
        for index in 0..self.frames.len() {
            match self.frames[index] {
                Frame::Start(at) => {
                    if self.group == Group::Idle {
                        self.group = Group::Open(at);
                    }
                }
                Frame::End(_, Kind::Part) => {}
                Frame::End(_, Kind::Startup) => {
                    self.statements += 1;
                    self.group = Group::Idle;
                }
                Frame::End(_, Kind::Other | Kind::Ready) => self.group = Group::Idle,
                Frame::End(end, Kind::Statement { commit }) => {
                    self.statements += 1;
                    let group = std::mem::replace(&mut self.group, Group::Idle);
                    let Group::Open(start) = group else { continue };
                    if !armed {
                        continue;
                    }
                    let Some(point) = self.cuts.decide(commit, &buf[start..end]) else {
                        continue;
                    };
                    let wait_for_ready = if point.is_after() {
                        // Replies to earlier statements may go through; this
                        // one's is held back.
                        self.link
                            .forward_ready_limit
                            .store(self.statements - 1, Ordering::Release);
                        buf.truncate(end);
                        Some(self.statements)
                    } else {
                        buf.truncate(start);
                        None
                    };
                    return ClientStep::Cut(
                        buf,
                        CutOrder {
                            point,
                            wait_for_ready,
                        },
                    );
                }
            }
        }
        if let Group::Open(start) = self.group {
            if armed {
                self.held = buf.split_off(start);
                self.group = Group::Open(0);
            } else {
                self.group = Group::Forwarded;
            }
        }
        ClientStep::Forward(buf)
    }

    /// The client closed its side: whatever is held goes out.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        self.group = Group::Idle;
        std::mem::take(&mut self.held)
    }
}

/// The server→client side of a connection: counts `ReadyForQuery`s and holds
/// back replies an "after" cut must keep from the client.
#[derive(Debug)]
pub(crate) struct ServerTap {
    framer: Framer,
    link: Arc<Link>,
    frames: Vec<Frame>,
    ready: u64,
    /// Everything from here on is held back (the connection is about to be
    /// reset).
    holding: bool,
}

impl ServerTap {
    pub(crate) fn new(link: Arc<Link>) -> ServerTap {
        ServerTap {
            framer: Framer::new(Side::Server),
            link,
            frames: Vec::new(),
            ready: 0,
            holding: false,
        }
    }

    pub(crate) fn link(&self) -> Arc<Link> {
        Arc::clone(&self.link)
    }

    /// Processes the next chunk the server sent; returns what to forward,
    /// and whether holding back started with this chunk (the caller then
    /// calls [`Link::mark_drained`] once the bytes returned are written).
    pub(crate) fn process(&mut self, mut chunk: Vec<u8>) -> (Vec<u8>, bool) {
        self.frames.clear();
        self.framer
            .feed(&chunk, 0, &self.link.handshake, &mut self.frames);
        let was_holding = self.holding;
        let mut hold_from = None;
        for frame in &self.frames {
            match *frame {
                Frame::Start(at) => {
                    if !self.holding
                        && self.ready >= self.link.forward_ready_limit.load(Ordering::Acquire)
                    {
                        self.holding = true;
                        hold_from = Some(at);
                    }
                }
                Frame::End(_, Kind::Ready) => {
                    self.ready += 1;
                    self.link.ready_seen.send_replace(self.ready);
                }
                Frame::End(..) => {}
            }
        }
        if was_holding {
            chunk.clear();
        } else if let Some(at) = hold_from {
            chunk.truncate(at);
        }
        (chunk, hold_from.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::{query, startup, tagged};

    /// A tap past the start-up phase, with `cuts`.
    fn tap(cuts: &Arc<Cuts>) -> (ClientTap, ServerTap) {
        let link = Link::new();
        let mut client = ClientTap::new(Arc::clone(&link), Arc::clone(cuts));
        let mut server = ServerTap::new(link);
        assert!(matches!(client.process(startup()), ClientStep::Forward(b) if b.len() == 23));
        let (forwarded, _) = server.process(tagged(b'Z', b"I"));
        assert_eq!(forwarded.len(), 6);
        (client, server)
    }

    #[test]
    fn a_cut_before_drops_the_statement_and_forwards_what_precedes_it() {
        let cuts = Arc::new(Cuts::new());
        let (mut client, _) = tap(&cuts);
        cuts.cut_once(vec![
            CutRule::at(CutPoint::BeforeStatement).matching("INSERT"),
        ]);
        let begin = query("BEGIN");
        let mut chunk = begin.clone();
        chunk.extend(tagged(b'P', b"\0INSERT INTO t VALUES (1)\0\0\0"));
        chunk.extend(tagged(b'S', b""));
        match client.process(chunk) {
            ClientStep::Cut(forward, order) => {
                assert_eq!(forward, begin);
                assert_eq!(order.point, CutPoint::BeforeStatement);
                assert_eq!(order.wait_for_ready, None);
            }
            ClientStep::Forward(_) => panic!("must cut"),
        }
        assert!(cuts.pending().is_empty());
    }

    #[test]
    fn an_incomplete_statement_is_held_while_cutting_is_on() {
        let cuts = Arc::new(Cuts::new());
        let (mut client, _) = tap(&cuts);
        cuts.cut_once(vec![CutRule::at(CutPoint::BeforeCommit)]);
        let commit = query("COMMIT");
        let (first, second) = commit.split_at(3);
        assert!(matches!(client.process(first.to_vec()), ClientStep::Forward(b) if b.is_empty()));
        assert!(matches!(client.process(second.to_vec()), ClientStep::Cut(b, _) if b.is_empty()));

        // While cutting is off, bytes go through as they come.
        let cuts = Arc::new(Cuts::new());
        let (mut client, _) = tap(&cuts);
        assert!(matches!(client.process(first.to_vec()), ClientStep::Forward(b) if b == first));
        // Switched on mid-statement: that statement cannot be cut any more.
        cuts.cut_once(vec![CutRule::at(CutPoint::BeforeCommit)]);
        assert!(matches!(client.process(second.to_vec()), ClientStep::Forward(b) if b == second));
        assert_eq!(cuts.pending().len(), 1);
    }

    #[test]
    fn a_cut_after_commit_holds_back_its_reply_only() {
        let cuts = Arc::new(Cuts::new());
        let (mut client, mut server) = tap(&cuts);
        cuts.cut_once(vec![CutRule::at(CutPoint::AfterCommitBeforeReply)]);
        // A marker INSERT pipelined with COMMIT, then more (never forwarded).
        let mut chunk = query("INSERT INTO markers VALUES ('x')");
        chunk.extend(query("COMMIT"));
        let sent = chunk.clone();
        chunk.extend(query("SELECT 1"));
        match client.process(chunk) {
            ClientStep::Cut(forward, order) => {
                assert_eq!(forward, sent);
                assert_eq!(order.point, CutPoint::AfterCommitBeforeReply);
                assert_eq!(order.wait_for_ready, Some(3), "start-up, INSERT, COMMIT");
            }
            ClientStep::Forward(_) => panic!("must cut"),
        }
        // The INSERT's reply goes through, the COMMIT's does not.
        let mut insert_reply = tagged(b'C', b"INSERT 0 1\0");
        insert_reply.extend(tagged(b'Z', b"T"));
        let mut reply = insert_reply.clone();
        reply.extend(tagged(b'C', b"COMMIT\0"));
        // The first chunk ends two bytes into the COMMIT's reply.
        let (first, rest) = reply.split_at(insert_reply.len() + 2);
        assert_eq!(server.process(first.to_vec()), (insert_reply, true));
        assert_eq!(*server.link.ready_seen.borrow(), 2);
        let mut rest = rest.to_vec();
        rest.extend(tagged(b'Z', b"I"));
        assert_eq!(server.process(rest), (Vec::new(), false));
        assert_eq!(*server.link.ready_seen.borrow(), 3);
    }

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

//! The two taps of one proxied connection: the client tap frames the
//! client's messages, numbers statements and asks the plan ([`Cuts`]) whether
//! to cut; the server tap counts the server's `ReadyForQuery`s and holds back
//! the replies an "after" cut must keep from the client. They share a
//! [`Link`]; a [`CutOrder`] carries a decided cut out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::plan::{CutPoint, Cuts, REPLY_WAIT};
use crate::protocol::{Frame, Framer, Handshake, Kind, Side};

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
    use crate::cuts::plan::CutRule;
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
}

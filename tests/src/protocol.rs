//! PostgreSQL wire-protocol (v3) framing for the fault proxy: finds message
//! boundaries in a byte stream that arrives in arbitrary chunks, so that the
//! proxy can act at exact points of the protocol.
//!
//! Only what the proxy needs is decoded:
//!
//! * the start-up phase, whose messages have no tag (a 4-byte length and a
//!   4-byte code): `SSLRequest` and `GSSENCRequest` (answered by the server
//!   with one untagged byte), `CancelRequest`, and the `StartupMessage` after
//!   which both directions switch to tagged messages;
//! * tagged messages (1-byte tag, 4-byte big-endian length that counts
//!   itself): client messages are classified as parts of a statement
//!   (`Parse`, `Bind`, `Describe`, `Execute`, `Close`), the end of a statement
//!   (`Query`, `Sync`, `FunctionCall`: each gets exactly one `ReadyForQuery`),
//!   or other; server messages as `ReadyForQuery` or other;
//! * the text of a simple `Query`, as far as needed to recognise `COMMIT`.
//!
//! Anything else (TLS after an accepted `SSLRequest`, a length that makes no
//! sense) turns framing off for the connection: the bytes are then forwarded
//! untouched and no cut point is ever found in them.

use std::sync::atomic::{AtomicBool, Ordering};

/// `SSLRequest`'s code.
const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest`'s code.
const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest`'s code.
const CANCEL_REQUEST: u32 = 80_877_102;
/// Start-up packets are small; a larger length means this is not the protocol.
const MAX_UNTAGGED_LEN: usize = 10_000;
/// How much of a simple query's text is kept: enough for any spelling of
/// `COMMIT`; a longer text is not a bare `COMMIT`.
const QUERY_TEXT_CAPTURE: usize = 64;

/// Which end of the connection a [`Framer`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Bytes sent by the client (frontend messages).
    Client,
    /// Bytes sent by the server (backend messages).
    Server,
}

/// What a complete message is, as far as cutting is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Client: the `StartupMessage`. The server answers it (after
    /// authentication) with one `ReadyForQuery`.
    Startup,
    /// Client: a message that belongs to a statement still being sent
    /// (`Parse`, `Bind`, `Describe`, `Execute`, `Close`).
    Part,
    /// Client: the message that ends a statement and gets one
    /// `ReadyForQuery`: `Query` (`commit` if its text is a bare COMMIT),
    /// `Sync` or `FunctionCall`.
    Statement {
        /// The statement is a simple query `COMMIT` (or `END`).
        commit: bool,
    },
    /// Server: `ReadyForQuery`.
    Ready,
    /// Anything else (`Terminate`, `Flush`, `CopyData`, password messages,
    /// the untagged requests and answers, any server message but
    /// `ReadyForQuery`).
    Other,
}

/// A message boundary found in a chunk; offsets are in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A message starts at this offset.
    Start(usize),
    /// A message ends just before this offset.
    End(usize, Kind),
}

/// State both directions of one connection share, because the start-up
/// phase of each depends on the other: after the client's `SSLRequest` the
/// server answers with one untagged byte, and after an `S` both directions
/// carry TLS.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    /// The client sent an `SSLRequest` or `GSSENCRequest` whose one-byte
    /// answer the server has not sent yet.
    answer_pending: AtomicBool,
    /// The stream is no longer the plain protocol (TLS or GSS encryption was
    /// accepted, or something was not understood).
    opaque: AtomicBool,
}

impl Handshake {
    fn set_opaque(&self) {
        self.opaque.store(true, Ordering::Release);
    }

    fn is_opaque(&self) -> bool {
        self.opaque.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Untagged start-up messages (client only).
    Untagged,
    /// The one-byte answer to an `SSLRequest` (server only).
    Answer,
    /// Tagged messages.
    Tagged,
    /// Not framed any more.
    Opaque,
}

/// Splits one direction's byte stream into messages, chunk by chunk.
#[derive(Debug)]
pub(crate) struct Framer {
    side: Side,
    phase: Phase,
    /// The header of the current message, as far as it has arrived (5 bytes
    /// when tagged: tag and length; 8 when untagged: length and code).
    header: [u8; 8],
    header_len: usize,
    /// Whether the header is complete and `remaining` body bytes follow.
    in_body: bool,
    remaining: usize,
    /// The current message's tag (0 when untagged).
    tag: u8,
    /// The current untagged message's code.
    code: u32,
    /// The beginning of the current `Query`'s text.
    text: Vec<u8>,
}

impl Framer {
    pub(crate) fn new(side: Side) -> Framer {
        Framer {
            side,
            phase: match side {
                Side::Client => Phase::Untagged,
                Side::Server => Phase::Tagged,
            },
            header: [0; 8],
            header_len: 0,
            in_body: false,
            remaining: 0,
            tag: 0,
            code: 0,
            text: Vec::with_capacity(QUERY_TEXT_CAPTURE),
        }
    }

    /// Whether the stream is still being framed.
    #[cfg(test)]
    pub(crate) fn is_framing(&self) -> bool {
        self.phase != Phase::Opaque
    }

    fn header_size(&self) -> usize {
        match self.phase {
            Phase::Untagged => 8,
            _ => 5,
        }
    }

    fn at_boundary(&self) -> bool {
        self.header_len == 0 && !self.in_body
    }

    /// Frames `bytes`, the next bytes of the stream, appending the boundaries
    /// found to `frames` with offsets shifted by `base`.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        base: usize,
        handshake: &Handshake,
        frames: &mut Vec<Frame>,
    ) {
        if self.phase != Phase::Opaque && handshake.is_opaque() {
            self.phase = Phase::Opaque;
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.at_boundary() {
                match self.phase {
                    Phase::Opaque => return,
                    Phase::Tagged
                        if self.side == Side::Server
                            && handshake.answer_pending.swap(false, Ordering::AcqRel) =>
                    {
                        self.phase = Phase::Answer;
                    }
                    _ => {}
                }
                if self.phase == Phase::Answer {
                    // 'N': go on in plain text; 'S' (TLS) or 'G' (GSS):
                    // encrypted from here on.
                    frames.push(Frame::Start(base + i));
                    let answer = bytes[i];
                    i += 1;
                    frames.push(Frame::End(base + i, Kind::Other));
                    if answer == b'N' {
                        self.phase = Phase::Tagged;
                    } else {
                        self.phase = Phase::Opaque;
                        handshake.set_opaque();
                    }
                    continue;
                }
                frames.push(Frame::Start(base + i));
            }
            if !self.in_body {
                let size = self.header_size();
                let take = (size - self.header_len).min(bytes.len() - i);
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[i..i + take]);
                self.header_len += take;
                i += take;
                if self.header_len < size {
                    return;
                }
                if !self.parse_header(handshake) {
                    return;
                }
            }
            let take = self.remaining.min(bytes.len() - i);
            if self.tag == b'Q' && self.text.len() < QUERY_TEXT_CAPTURE {
                let keep = take.min(QUERY_TEXT_CAPTURE - self.text.len());
                self.text.extend_from_slice(&bytes[i..i + keep]);
            }
            i += take;
            self.remaining -= take;
            if self.remaining == 0 {
                let kind = self.finish(handshake);
                frames.push(Frame::End(base + i, kind));
            }
        }
    }

    /// Reads a complete header; false (and opaque from now on) when it makes
    /// no sense.
    fn parse_header(&mut self, handshake: &Handshake) -> bool {
        let (tag, length) = match self.phase {
            Phase::Untagged => {
                let length = be_u32(&self.header, 0) as usize;
                self.code = be_u32(&self.header, 4);
                if !(8..=MAX_UNTAGGED_LEN).contains(&length) {
                    self.give_up(handshake);
                    return false;
                }
                (0, length - 8)
            }
            _ => {
                let length = be_u32(&self.header, 1) as usize;
                if length < 4 {
                    self.give_up(handshake);
                    return false;
                }
                (self.header[0], length - 4)
            }
        };
        self.tag = tag;
        self.remaining = length;
        self.in_body = true;
        self.text.clear();
        true
    }

    fn give_up(&mut self, handshake: &Handshake) {
        tracing::debug!(side = ?self.side, "fault proxy: not the PostgreSQL protocol; framing off");
        self.phase = Phase::Opaque;
        handshake.set_opaque();
    }

    /// Ends the current message and says what it was.
    fn finish(&mut self, handshake: &Handshake) -> Kind {
        self.in_body = false;
        self.header_len = 0;
        match (self.side, self.phase) {
            (Side::Client, Phase::Untagged) => match self.code {
                SSL_REQUEST | GSSENC_REQUEST => {
                    handshake.answer_pending.store(true, Ordering::Release);
                    Kind::Other
                }
                code if code >> 16 == 3 && code != CANCEL_REQUEST => {
                    self.phase = Phase::Tagged;
                    Kind::Startup
                }
                _ => {
                    // A CancelRequest (the connection ends right after) or an
                    // unknown request.
                    self.phase = Phase::Opaque;
                    Kind::Other
                }
            },
            (Side::Client, _) => match self.tag {
                b'P' | b'B' | b'D' | b'E' | b'C' => Kind::Part,
                b'Q' => Kind::Statement {
                    commit: is_commit(&self.text),
                },
                b'S' | b'F' => Kind::Statement { commit: false },
                _ => Kind::Other,
            },
            (Side::Server, _) => match self.tag {
                b'Z' => Kind::Ready,
                _ => Kind::Other,
            },
        }
    }
}

/// Whether a simple query's text (NUL-terminated, possibly cut short) is a
/// bare `COMMIT`: `COMMIT`, `COMMIT WORK`, `COMMIT TRANSACTION` or `END`,
/// `END WORK`, `END TRANSACTION`, in any case, with surrounding white space
/// and an optional `;`.
pub(crate) fn is_commit(text: &[u8]) -> bool {
    let Some(end) = text.iter().position(|&b| b == 0) else {
        // The text was longer than what was kept.
        return false;
    };
    let Ok(text) = std::str::from_utf8(&text[..end]) else {
        return false;
    };
    let text = text.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    let mut words = text.split_ascii_whitespace().map(str::to_ascii_lowercase);
    let first = words.next();
    let second = words.next();
    if words.next().is_some() {
        return false;
    }
    matches!(first.as_deref(), Some("commit" | "end"))
        && matches!(second.as_deref(), None | Some("work" | "transaction"))
}

/// The big-endian `u32` at `at` in a message header (the header buffer always holds
/// the bytes asked for: its length is fixed by the framing phase).
fn be_u32(header: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

/// Wire messages built by hand, for the framing and cutting unit tests.
#[cfg(test)]
pub(crate) mod wire {
    /// A tagged message: tag, length, body.
    pub(crate) fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut message = vec![tag];
        message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    /// A simple query.
    pub(crate) fn query(text: &str) -> Vec<u8> {
        let mut body = text.as_bytes().to_vec();
        body.push(0);
        tagged(b'Q', &body)
    }

    /// An untagged start-up phase message: length, code, body.
    pub(crate) fn untagged(code: u32, body: &[u8]) -> Vec<u8> {
        let mut message = (body.len() as u32 + 8).to_be_bytes().to_vec();
        message.extend_from_slice(&code.to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    /// A protocol 3.0 startup message for user postgres.
    pub(crate) fn startup() -> Vec<u8> {
        untagged(196_608, b"user\0postgres\0\0")
    }
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

    /// Frames `stream` fed in chunks of `size` bytes; returns the kinds of the
    /// complete messages and their end offsets in the whole stream.
    fn frame_in_chunks(
        side: Side,
        stream: &[u8],
        size: usize,
        handshake: &Handshake,
    ) -> Vec<(usize, Kind)> {
        let mut framer = Framer::new(side);
        let mut frames = Vec::new();
        for (n, chunk) in stream.chunks(size).enumerate() {
            framer.feed(chunk, n * size, handshake, &mut frames);
        }
        frames
            .into_iter()
            .filter_map(|frame| match frame {
                Frame::End(at, kind) => Some((at, kind)),
                Frame::Start(_) => None,
            })
            .collect()
    }

    #[test]
    fn recognises_commit_spellings() {
        for yes in [
            "COMMIT",
            "commit",
            " Commit ; ",
            "COMMIT;",
            "commit work",
            "END",
            "end transaction;",
        ] {
            assert!(is_commit(format!("{yes}\0").as_bytes()), "{yes:?}");
        }
        for no in [
            "COMMIT PREPARED 'x'",
            "BEGIN",
            "SELECT 'COMMIT'",
            "COMMIT; SELECT 1",
            "",
            "committed",
        ] {
            assert!(!is_commit(format!("{no}\0").as_bytes()), "{no:?}");
        }
        assert!(!is_commit(b"COMMIT"), "a text cut short is not a COMMIT");
    }

    #[test]
    fn frames_a_client_stream_in_any_chunking() {
        let mut stream = startup();
        let parse = tagged(b'P', b"\0INSERT INTO t VALUES (1)\0\0\0");
        let pipeline = [
            query("BEGIN"),
            parse,
            tagged(b'D', b"S\0"),
            tagged(b'S', b""),
            tagged(b'B', b"\0\0\0\0\0\0\0\0"),
            tagged(b'E', b"\0\0\0\0\0"),
            tagged(b'S', b""),
            query("COMMIT"),
            tagged(b'X', b""),
        ];
        for message in &pipeline {
            stream.extend_from_slice(message);
        }
        let expected_kinds = [
            Kind::Startup,
            Kind::Statement { commit: false },
            Kind::Part,
            Kind::Part,
            Kind::Statement { commit: false },
            Kind::Part,
            Kind::Part,
            Kind::Statement { commit: false },
            Kind::Statement { commit: true },
            Kind::Other,
        ];
        let whole = frame_in_chunks(Side::Client, &stream, stream.len(), &Handshake::default());
        assert_eq!(
            whole.iter().map(|(_, kind)| *kind).collect::<Vec<_>>(),
            expected_kinds
        );
        assert_eq!(whole.last().unwrap().0, stream.len());
        for size in 1..stream.len() {
            let chunked = frame_in_chunks(Side::Client, &stream, size, &Handshake::default());
            assert_eq!(chunked, whole, "chunks of {size} bytes");
        }
    }

    #[test]
    fn follows_an_ssl_request_refused_by_the_server() {
        let handshake = Handshake::default();
        let mut client = Framer::new(Side::Client);
        let mut server = Framer::new(Side::Server);
        let mut frames = Vec::new();

        client.feed(&untagged(SSL_REQUEST, b""), 0, &handshake, &mut frames);
        assert_eq!(frames.last(), Some(&Frame::End(8, Kind::Other)));
        // The answer and then ordinary messages.
        let mut answer = vec![b'N'];
        answer.extend_from_slice(&tagged(b'R', &[0, 0, 0, 0]));
        answer.extend_from_slice(&tagged(b'Z', b"I"));
        frames.clear();
        server.feed(&answer, 0, &handshake, &mut frames);
        assert_eq!(
            frames,
            [
                Frame::Start(0),
                Frame::End(1, Kind::Other),
                Frame::Start(1),
                Frame::End(10, Kind::Other),
                Frame::Start(10),
                Frame::End(16, Kind::Ready),
            ]
        );
        frames.clear();
        let mut rest = startup();
        rest.extend_from_slice(&query("COMMIT"));
        client.feed(&rest, 0, &handshake, &mut frames);
        let kinds: Vec<Kind> = frames
            .iter()
            .filter_map(|frame| match frame {
                Frame::End(_, kind) => Some(*kind),
                Frame::Start(_) => None,
            })
            .collect();
        assert_eq!(kinds, [Kind::Startup, Kind::Statement { commit: true }]);
        assert!(client.is_framing() && server.is_framing());
    }

    #[test]
    fn stops_framing_after_tls_is_accepted() {
        let handshake = Handshake::default();
        let mut client = Framer::new(Side::Client);
        let mut server = Framer::new(Side::Server);
        let mut frames = Vec::new();
        client.feed(&untagged(SSL_REQUEST, b""), 0, &handshake, &mut frames);
        server.feed(b"S\x16\x03\x03", 0, &handshake, &mut frames);
        frames.clear();
        client.feed(b"\x16\x03\x01\x02\x00\x01", 0, &handshake, &mut frames);
        server.feed(&tagged(b'Z', b"I"), 0, &handshake, &mut frames);
        assert!(frames.is_empty(), "{frames:?}");
        assert!(!client.is_framing() && !server.is_framing());
    }

    #[test]
    fn gives_up_on_what_is_not_the_protocol() {
        let handshake = Handshake::default();
        let mut client = Framer::new(Side::Client);
        let mut frames = Vec::new();
        // A TLS ClientHello sent directly (sslnegotiation=direct).
        client.feed(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
            0,
            &handshake,
            &mut frames,
        );
        assert!(!client.is_framing());
        assert!(handshake.is_opaque());
    }
}

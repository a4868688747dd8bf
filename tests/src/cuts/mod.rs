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
//!
//! The plan (what to cut, shared by every connection of a proxy) lives in
//! `plan`; the two taps that frame each direction of one connection and carry
//! a cut out live in `taps`, which asks the plan and never the other way.

mod plan;
mod taps;

pub(crate) use plan::Cuts;
pub use plan::{CutCounts, CutPoint, CutRule, REPLY_WAIT, RandomCuts};
pub(crate) use taps::{ClientStep, ClientTap, CutOrder, Link, ServerTap};

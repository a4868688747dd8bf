//! Chaos proofs: `#[retriable_tx]` calls through a proxy that cuts connections at
//! random points of the PostgreSQL protocol, COMMITs included (after the server
//! executed them, before the client heard back), and with backends terminated under
//! them. Each test checks the database against what the calls returned: every call
//! that returned `Ok` applied exactly once, nothing else applied, nothing was lost.
//!
//! The cuts are drawn from a seeded generator. Each test prints its seed (shown when
//! it fails); `CHAOS_SEED=<n>` reruns with another one. With several concurrent
//! calls the interleaving also decides which statement gets which draw, so a seed
//! reproduces the kind and density of faults rather than the exact same run.

mod ambiguous_commit;
mod bank;
mod common;
mod counters;

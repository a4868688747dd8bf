//! Commit verification by a fenced per-connection counter
//! ([`CommitVerification::FencedCounter`](super::CommitVerification::FencedCounter)),
//! the default.
//!
//! Each pooled connection `C` has a row `(id = C, seq, updated_at)` in the counter
//! table, and remembers `e`, the `seq` its last commit left there (0 at first, no row
//! yet). In the same flight as COMMIT, a transaction `T` that wrote something sends a
//! compare-and-set: move `seq` from `e` to `n = e + 1`, and if no row moved, divide by
//! zero, which aborts `T`, so that its COMMIT becomes a ROLLBACK. When the COMMIT
//! succeeds, `C` remembers `n`. The row is rewritten, never added to: the table holds
//! one row per connection, whatever the number of transactions.
//!
//! The compare-and-set comes in two forms. The everyday one is a plain `UPDATE` of
//! `seq` (a HOT update, about 80 bytes of WAL). Now and then a commit **claims** the
//! row instead, with an upsert that also sets `updated_at`: `C`'s first commit
//! (creating the row) and one after the claim has aged (see `retention`), so that the
//! purge of rows unclaimed for an hour never takes a live connection's row. Should a
//! row go anyway (deleted by hand, a server clock that jumped, or an older copy of the
//! server after a failover, behind a pooler that kept the session), the everyday
//! compare-and-set moves nothing and `T` aborts: it runs again on a fresh connection,
//! which claims a row of its own. The two forms leave the same evidence, so the proof
//! below holds for both; "T's insert" is the claim's, where `C` had no row.
//!
//! If the reply to COMMIT is lost, `C` is discarded and a probe `P` on a fresh
//! connection runs one transaction: insert `(C, FENCED)` unless a row for `C`
//! exists; `SELECT seq … FOR UPDATE`; move `seq` from `e` to `FENCED`; COMMIT. The
//! `SELECT`'s answer is the verdict: `n` → committed; `e` → not committed, and now
//! fenced; `FENCED` → not committed (an earlier probe fenced it and its own reply was
//! lost); anything else → the server contradicts what `C` knew: unknown.
//!
//! Why every interleaving of `T`'s compare-and-set (CAS) and COMMIT, `P`'s lock and
//! fence, and a late delivery of `T`'s messages ends in the truth:
//!
//! 1. **`T` committed before `P` locks the row**: the row holds `n` (or `T`'s
//!    inserted row does), `P`'s insert finds it and does nothing, the `SELECT` reads
//!    `n`: committed. Right.
//! 2. **`T`'s CAS ran, its COMMIT has not ended yet** (slow, in flight, or `T` idle
//!    with its COMMIT lost): `T` holds the row's lock (or, for its first commit, the
//!    unique-index entry of its inserted row). `P`'s insert or `SELECT … FOR UPDATE`
//!    waits for `T` (bounded by `lock_timeout`; probes are repeated until the call's
//!    deadline). If `T` commits, `P` reads `n` (read committed: after the wait it sees
//!    the newest version): committed. If `T` aborts (its session ends: a timeout, a
//!    terminated backend, a crash), `P` reads `e` (or finds no row and inserts the
//!    fence): not committed, and fenced. If the deadline comes first: unknown, never a
//!    guess. Right in each case.
//! 3. **`T`'s CAS has not reached the server** (held by a partition, or lost): `P`
//!    reads `e` (or inserts the fence where `C` had no row) and moves the row to
//!    `FENCED` before it commits: not committed. Then the messages arrive late:
//!    - `T`'s CAS finds `seq = FENCED ≠ e` and moves nothing: it divides by zero,
//!      `T` aborts, its COMMIT is a ROLLBACK;
//!    - if they arrive while `P` still holds the row's lock, `T`'s CAS waits for `P`,
//!      then re-checks the row and finds `FENCED` (read committed), or fails to
//!      serialize (repeatable read, serializable): `T` aborts either way;
//!    - where `C` had no row, `P`'s inserted fence makes `T`'s insert a conflict, whose
//!      update requires `seq = e`: the same.
//!
//!    Not committed was right, and stays right.
//! 4. **`T` wrote nothing**: its CAS moves nothing and aborts nothing (it has no
//!    transaction id); `P` reads `e`: not committed, so the call runs again, which is
//!    safe since nothing was applied. A transaction whose only effect is a NOTIFY gets
//!    its id at COMMIT only, so a statement that mentions one makes the CAS
//!    unconditional.
//! 5. **Crashes and failovers**: what counts is the row on the server that answers now.
//!    A commit that survived (recovered, or replicated to the promoted standby) left
//!    `n` there: committed. One that did not left `e`: not committed (the server that
//!    answers has no trace of `T`), and the fence makes sure a server that still held
//!    `T` open can never commit it against this row.
//! 6. **`C`'s row is gone when `T`'s everyday compare-and-set arrives** (purged):
//!    nothing moves, `T` aborts, and its COMMIT is a ROLLBACK. Should that reply be
//!    lost, `P` finds no row, inserts the fence: not committed. Right; and as in 3, a
//!    late delivery after the fence meets `FENCED`.
//! 7. **`P`'s own reply is lost**: `P` either committed the fence (the next probe
//!    reads `FENCED`: not committed, consistent with what `P` saw) or did not (the
//!    next probe decides afresh by 1–3). `C` is never used again (it was discarded),
//!    so no later transaction of `C` expects anything of the row.

use std::time::Duration;

use super::{Probes, Unsettled, Verdict};
use crate::connection::first_row;
use crate::tables::{CounterTable, FENCED};

/// One probe waits at most this long for the original transaction's row lock.
const PROBE_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a probe's answer says about the original transaction, which expected `seq` to
/// be `expected` and would have moved it to `expected + 1`.
fn judge(seq: i64, expected: i64) -> Verdict {
    if seq == expected + 1 {
        Verdict::Committed
    } else if seq == expected || seq == FENCED {
        Verdict::NotCommitted
    } else {
        Verdict::Unknown(Unsettled::Contradiction)
    }
}

/// Settles an ambiguous COMMIT of connection `id`, which expected `expected`,
/// retrying probes until the deadline.
pub(crate) async fn verify(
    mut probes: Probes<'_>,
    table: &CounterTable,
    id: i64,
    expected: i64,
) -> Verdict {
    while let Some((mut session, remaining)) = probes.next().await {
        let sql = table.probe(id, expected, PROBE_LOCK_TIMEOUT.min(remaining));
        match session.simple_query(&sql, remaining).await {
            Ok(messages) => {
                match first_row(&messages).and_then(|row| row.get(0)?.parse::<i64>().ok()) {
                    Some(seq) => return judge(seq, expected),
                    // The row was just inserted or found: it cannot be missing.
                    None => probes.failed(),
                }
            }
            Err(error) => {
                tracing::info!(function = probes.name(), error = %error,
                    "commit verification probe failed; trying again");
                probes.failed();
            }
        }
    }
    Verdict::Unknown(Unsettled::NoAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_value_is_committed() {
        assert_eq!(judge(8, 7), Verdict::Committed);
        assert_eq!(judge(1, 0), Verdict::Committed);
    }

    #[test]
    fn the_expected_value_or_a_fence_is_not_committed() {
        assert_eq!(judge(7, 7), Verdict::NotCommitted);
        assert_eq!(judge(FENCED, 7), Verdict::NotCommitted);
        assert_eq!(judge(FENCED, 0), Verdict::NotCommitted);
    }

    #[test]
    fn any_other_value_contradicts_what_the_connection_knew() {
        for seq in [9, 3, 0] {
            assert_eq!(
                judge(seq, 7),
                Verdict::Unknown(Unsettled::Contradiction),
                "{seq}"
            );
        }
    }
}

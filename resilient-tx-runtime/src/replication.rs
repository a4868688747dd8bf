//! Waiting, after COMMIT, until a standby has the commit: what `replicated = "…"`
//! does where the cluster replicates asynchronously.
//!
//! With asynchronous streaming a commit returns once the primary's own WAL has it;
//! a standby receives it a moment later, so a failover in that moment loses a write
//! its caller was told had committed. `SET LOCAL synchronous_commit = remote_write`
//! cannot close the gap per call: it waits only for the standbys named in
//! `synchronous_standby_names`, which is empty in an asynchronous cluster and cannot
//! be set by a session. So the wait reads what the primary knows of its standbys.
//!
//! On the connection that committed, right after COMMIT, one round trip reads the
//! position the commit cannot lie beyond and what every standby streaming from this
//! primary reports:
//!
//! - the primary's WAL flush position (`pg_current_wal_flush_lsn()`): COMMIT returns
//!   only once its record is flushed (`synchronous_commit` anything but `off`), so
//!   the flush position read after it is at or past the commit's end, and it is a
//!   position the standbys do reach, as the primary sends only flushed WAL. With
//!   `synchronous_commit = off` for the session the commit may not be flushed yet and
//!   the insert position is read instead (always at or past the commit's end);
//! - for each physical standby in `pg_stat_replication`, its `flush_lsn`: WAL it has
//!   on disk, which a promotion replays. A standby reports its flush position as soon
//!   as it moved (its `replay_lsn` only every `wal_receiver_status_interval` when
//!   nothing else changes), and a standby that has flushed the commit keeps it through
//!   a failover (replay may lag, paused or waiting for a conflicting query, without
//!   putting the commit at risk).
//!
//! When no standby is there yet, the same query is repeated on the same connection,
//! after pauses from 1 ms doubling up to [`MAX_PAUSE`], until one is or the bound
//! passes. The same connection, because only this server's standbys count: after a
//! failover another server's positions say nothing about this commit (a pooled
//! connection may reach another host of the URL). The call keeps its connection while
//! it waits.
//!
//! The positions are compared as numbers here ([`PgLsn`]), so the polled query is a
//! constant text sent with the simple query protocol: one round trip each, nothing
//! prepared.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::PgLsn;
use tracing::Instrument as _;
use tracing::Span;

use crate::classify::{Phase, to_tx_error};
use crate::connection::PgConnection;
use crate::error::{Failure, TxError};

/// The longest pause between two looks at the standbys.
pub(crate) const MAX_PAUSE: Duration = Duration::from_millis(25);

/// The commit's position: the flush position (or, with `synchronous_commit = off`, the
/// insert position), and whether the role may see the standbys' positions.
const COMMIT_POSITION: &str = "SELECT CASE current_setting('synchronous_commit') \
     WHEN 'off' THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END, \
     pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')";

/// Every physical standby streaming from this server and the WAL it has flushed. A
/// walsender connected to a database is a logical one, whose subscriber never
/// becomes this server's replacement.
const STANDBYS: &str = "SELECT r.application_name, r.flush_lsn FROM pg_stat_replication r \
     WHERE NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = r.pid AND a.datid IS NOT NULL)";

/// A standby as the primary reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standby {
    /// Its `application_name` (Patroni and pg_auto_failover use the node's name).
    pub(crate) name: String,
    /// The WAL it has flushed; `None` when the primary does not say.
    pub(crate) flushed: Option<PgLsn>,
}

/// What one look at the standbys found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Look {
    /// This standby has the commit.
    Confirmed(String),
    /// None has it yet (those there are, and where they are).
    NotYet(Vec<Standby>),
}

/// Whether one of `standbys` has flushed WAL up to `commit`.
pub(crate) fn look(commit: PgLsn, standbys: &[Standby]) -> Look {
    match standbys
        .iter()
        .find(|s| s.flushed.is_some_and(|flushed| flushed >= commit))
    {
        Some(standby) => Look::Confirmed(standby.name.clone()),
        None => Look::NotYet(standbys.to_vec()),
    }
}

/// Why no standby confirmed a commit, for the caller's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unconfirmed {
    /// The bound passed; the standbys as last seen.
    InTime {
        bound: Duration,
        commit: PgLsn,
        standbys: Vec<Standby>,
    },
    /// The role may not see the standbys' positions.
    NotPermitted,
    /// The connection failed before a standby confirmed (the cause).
    Lost(String),
}

impl fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the transaction committed on the primary, but ")?;
        match self {
            Unconfirmed::InTime {
                bound,
                commit,
                standbys,
            } => {
                write!(
                    f,
                    "no standby confirmed it within {}: a failover now could lose it (its WAL \
                     ends at or before {commit}; ",
                    crate::classify::human(*bound)
                )?;
                if standbys.is_empty() {
                    f.write_str("no standby is streaming from this primary)")
                } else {
                    let seen: Vec<String> = standbys
                        .iter()
                        .map(|s| match s.flushed {
                            Some(lsn) => format!("{} has flushed up to {lsn}", s.name),
                            None => format!("{} reports no flush position", s.name),
                        })
                        .collect();
                    write!(f, "{})", seen.join(", "))
                }
            }
            Unconfirmed::NotPermitted => f.write_str(
                "whether a standby has it cannot be told: this role may not read the \
                 standbys' positions in pg_stat_replication (grant it pg_monitor or \
                 pg_read_all_stats)",
            ),
            Unconfirmed::Lost(cause) => write!(
                f,
                "the connection failed before a standby confirmed it, so a failover may have \
                 lost it: {cause}"
            ),
        }
    }
}

/// What a caller can do about any `NotReplicated`: the work is applied, so running it
/// again without a key applies it twice.
const WHAT_TO_DO: &str = "; it is applied, so repeat the call only with its idempotency \
     key (the stored result comes back once a standby has it), and see pg_stat_replication \
     on the primary for its standbys";

impl Unconfirmed {
    fn into_error(self) -> TxError {
        TxError::new(Failure::NotReplicated, format!("{self}{WHAT_TO_DO}"))
    }
}

/// Waits, on `conn` (the session that committed, or one on the server that has the
/// commit), until a standby of its server has flushed the commit: at most `bound`,
/// and not past the call's `deadline`. `Err` of kind `NotReplicated` when none did;
/// either outcome is logged under `span`.
pub(crate) async fn confirm(
    conn: Option<&mut PgConnection>,
    bound: Duration,
    deadline: Instant,
    span: &Span,
    function: &'static str,
) -> Result<(), TxError> {
    let started = Instant::now();
    let until = (started + bound).min(deadline);
    let confirmed = match conn {
        Some(conn) => {
            wait_for_standby(conn, until, bound)
                .instrument(span.clone())
                .await
        }
        None => Err(lost("the connection was not usable after COMMIT")),
    };
    let waited_ms = started.elapsed().as_millis() as u64;
    match &confirmed {
        Ok(standby) => tracing::debug!(parent: span, function, standby = standby.as_str(),
            waited_ms, "a standby has the commit"),
        Err(error) => tracing::warn!(parent: span, function, waited_ms, error = %error,
            "no standby confirmed the commit"),
    }
    confirmed.map(drop)
}

/// The error of a commit no standby could be asked about: no connection to its server
/// was usable (`cause`).
pub(crate) fn lost(cause: &str) -> TxError {
    Unconfirmed::Lost(cause.to_owned()).into_error()
}

/// The pause before look number `n` (1 for the second look): 1 ms, doubling, at most
/// [`MAX_PAUSE`].
pub(crate) fn pause(n: u32) -> Duration {
    Duration::from_millis(1u64 << n.saturating_sub(1).min(5)).min(MAX_PAUSE)
}

/// Waits, on `conn` (the connection whose transaction just committed), until a
/// standby of its server has flushed the commit, or `until`: the standby's name, or
/// the error (kind `NotReplicated`) that says why none did. Looks go on until `until`,
/// the last one made as it passes, each allowed a round trip (at least [`MAX_PAUSE`])
/// past it. `bound` is the wait's length, for the message.
pub(crate) async fn wait_for_standby(
    conn: &mut PgConnection,
    until: Instant,
    bound: Duration,
) -> Result<String, TxError> {
    if conn.is_unusable() {
        return Err(Unconfirmed::Lost("the connection was closed".to_owned()).into_error());
    }
    // Every look may take a round trip, however little time is left.
    let answer_by = || until.max(Instant::now() + MAX_PAUSE);
    let mut probe = Probe {
        conn,
        in_flight: false,
    };
    let first = format!("{COMMIT_POSITION}; {STANDBYS}");
    let messages = match probe.query(&first, answer_by()).await {
        Ok(messages) => messages,
        Err(Asked::Unanswered) => {
            return Err(Unconfirmed::Lost(format!(
                "the primary did not say within {} where the commit's WAL ends",
                crate::classify::human(bound)
            ))
            .into_error());
        }
        Err(Asked::Failed(cause)) => return Err(Unconfirmed::Lost(cause).into_error()),
    };
    let (commit, permitted, standbys) = parse_first(&messages)?;
    if !permitted {
        return Err(Unconfirmed::NotPermitted.into_error());
    }
    let mut seen = standbys;
    for n in 1.. {
        if let Look::Confirmed(name) = look(commit, &seen) {
            return Ok(name);
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        // The last look is made as the bound passes.
        tokio::time::sleep_until((now + pause(n)).min(until)).await;
        seen = match probe.query(STANDBYS, answer_by()).await {
            Ok(messages) => standbys_in(&messages)?,
            // The bound passed while the primary was being asked: what it said last.
            Err(Asked::Unanswered) => break,
            Err(Asked::Failed(cause)) => return Err(Unconfirmed::Lost(cause).into_error()),
        };
    }
    Err(Unconfirmed::InTime {
        bound,
        commit,
        standbys: seen,
    }
    .into_error())
}

/// The commit's position, whether the standbys' positions may be read, and the
/// standbys, from the first query's messages.
fn parse_first(messages: &[SimpleQueryMessage]) -> Result<(PgLsn, bool, Vec<Standby>), TxError> {
    let mut rows = messages.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let position = rows
        .next()
        .ok_or_else(|| unexpected("no row for the commit's position"))?;
    let commit = position
        .get(0)
        .and_then(|text| text.parse::<PgLsn>().ok())
        .ok_or_else(|| unexpected("no WAL position"))?;
    let permitted = position.get(1) == Some("t");
    let standbys = rows.map(standby).collect::<Result<_, _>>()?;
    Ok((commit, permitted, standbys))
}

/// The standbys, from the polled query's messages.
fn standbys_in(messages: &[SimpleQueryMessage]) -> Result<Vec<Standby>, TxError> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(standby(row)),
            _ => None,
        })
        .collect()
}

fn standby(row: &tokio_postgres::SimpleQueryRow) -> Result<Standby, TxError> {
    let flushed = match row.get(1) {
        None => None,
        Some(text) => Some(
            text.parse::<PgLsn>()
                .map_err(|_| unexpected("a flush position that is not one"))?,
        ),
    };
    Ok(Standby {
        name: row.get(0).unwrap_or("a standby without a name").to_owned(),
        flushed,
    })
}

fn unexpected(what: &str) -> TxError {
    Unconfirmed::Lost(format!("unexpected answer from the server: {what}")).into_error()
}

/// The committed connection while the wait uses it: a query that fails, times out or
/// is dropped unfinished condemns it (it may still have a request in flight).
struct Probe<'c> {
    conn: &'c mut PgConnection,
    in_flight: bool,
}

/// Why a question to the primary got no answer.
enum Asked {
    /// The bound passed first.
    Unanswered,
    /// The connection or the statement failed (the cause).
    Failed(String),
}

impl Probe<'_> {
    async fn query(&mut self, sql: &str, until: Instant) -> Result<Vec<SimpleQueryMessage>, Asked> {
        self.in_flight = true;
        let result = tokio::time::timeout_at(until, self.conn.client.simple_query(sql)).await;
        self.in_flight = false;
        let asked = match result {
            Ok(Ok(messages)) => return Ok(messages),
            Ok(Err(error)) => {
                Asked::Failed(to_tx_error(error, Phase::Statement).message().to_owned())
            }
            Err(_) => Asked::Unanswered,
        };
        self.conn.condemn();
        Err(asked)
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if self.in_flight {
            self.conn.condemn();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(text: &str) -> PgLsn {
        text.parse().expect("an LSN")
    }

    fn standby(name: &str, flushed: Option<&str>) -> Standby {
        Standby {
            name: name.to_owned(),
            flushed: flushed.map(lsn),
        }
    }

    #[test]
    fn a_standby_that_flushed_up_to_the_commit_confirms_it() {
        let commit = lsn("0/3000148");
        let behind = standby("node1", Some("0/3000000"));
        let at = standby("node2", Some("0/3000148"));
        let beyond = standby("node3", Some("1/0"));
        assert_eq!(
            look(commit, &[behind.clone(), at]),
            Look::Confirmed("node2".to_owned())
        );
        assert_eq!(look(commit, &[beyond]), Look::Confirmed("node3".to_owned()));
        assert_eq!(
            look(commit, std::slice::from_ref(&behind)),
            Look::NotYet(vec![behind])
        );
    }

    #[test]
    fn a_standby_without_a_position_or_none_at_all_confirms_nothing() {
        let commit = lsn("0/1");
        let silent = standby("pg_basebackup", None);
        assert_eq!(
            look(commit, std::slice::from_ref(&silent)),
            Look::NotYet(vec![silent])
        );
        assert_eq!(look(commit, &[]), Look::NotYet(Vec::new()));
    }

    #[test]
    fn pauses_double_from_a_millisecond_to_the_cap() {
        let pauses: Vec<u64> = (1..=8).map(|n| pause(n).as_millis() as u64).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 25, 25, 25]);
    }

    #[test]
    fn the_message_says_the_write_committed_and_what_was_seen() {
        let timed_out = Unconfirmed::InTime {
            bound: Duration::from_secs(2),
            commit: lsn("0/3000148"),
            standbys: vec![standby("node1", Some("0/3000000")), standby("x", None)],
        };
        let text = timed_out.to_string();
        assert!(
            text.starts_with("the transaction committed on the primary, but no standby"),
            "{text}"
        );
        assert!(text.contains("within 2s"), "{text}");
        assert!(text.contains("node1 has flushed up to 0/3000000"), "{text}");
        assert!(text.contains("x reports no flush position"), "{text}");
        let alone = Unconfirmed::InTime {
            bound: Duration::from_millis(500),
            commit: lsn("0/1"),
            standbys: Vec::new(),
        };
        assert!(alone.to_string().contains("no standby is streaming"));
        assert!(
            Unconfirmed::NotPermitted
                .to_string()
                .contains("grant it pg_monitor")
        );
        let error = Unconfirmed::Lost("connection closed".to_owned()).into_error();
        assert_eq!(error.kind(), crate::error::ErrorKind::NotReplicated);
        assert!(error.message().contains("connection closed"), "{error}");
        assert!(
            error
                .message()
                .contains("repeat the call only with its idempotency key"),
            "{error}"
        );
    }
}

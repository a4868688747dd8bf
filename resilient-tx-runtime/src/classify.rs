//! Failure classification: WHAT happened and WHEN decides whether an attempt is retried,
//! its connection discarded, or the call returns.
//!
//! The table this implements is in `ERRORS.md` of the design notes; each row has a
//! real-server test in the testkit's suites.

use std::io;
use std::time::Duration;

use tokio_postgres::error::{DbError, SqlState};

use crate::error::{Failure, TxError};

/// Where in an attempt an error happened: the same error means different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening a new connection.
    Connect,
    /// BEGIN or a statement of the body.
    Statement,
    /// COMMIT had been sent and its reply had not arrived.
    Commit,
}

/// Classifies a server-reported error.
pub(crate) fn classify_db_error(db: &DbError, phase: Phase) -> Failure {
    classify_server(db.code(), db.severity(), db.routine(), phase)
}

/// Classifies a server-reported error by its SQLSTATE, severity and the server
/// function that raised it (never its message: servers speak other languages); pure,
/// so every row of the table has a unit test.
pub(crate) fn classify_server(
    code: &SqlState,
    severity: &str,
    routine: Option<&str>,
    phase: Phase,
) -> Failure {
    let lost = || {
        if phase == Phase::Commit {
            Failure::CommitUnknown
        } else {
            Failure::ConnectionLost
        }
    };
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        return Failure::Conflict;
    }
    if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::OBJECT_IN_USE {
        return Failure::LockUnavailable;
    }
    if *code == SqlState::TRANSACTION_RESOLUTION_UNKNOWN
        || *code == SqlState::T_R_STATEMENT_COMPLETION_UNKNOWN
    {
        return Failure::CommitUnknown;
    }
    if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::TOO_MANY_CONNECTIONS {
        return if phase == Phase::Connect {
            Failure::Unreachable
        } else {
            lost()
        };
    }
    if *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::IDLE_SESSION_TIMEOUT
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
    {
        return lost();
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return Failure::ReadOnly;
    }
    if *code == SqlState::QUERY_CANCELED {
        return Failure::StatementTimeout;
    }
    if *code == SqlState::IN_FAILED_SQL_TRANSACTION {
        return Failure::Aborted;
    }
    if *code == SqlState::FEATURE_NOT_SUPPORTED && routine == Some("RevalidateCachedQuery") {
        // "cached plan must not change result type": the schema changed under a
        // prepared statement.
        return Failure::StalePlan;
    }
    let fatal = matches!(severity, "FATAL" | "PANIC");
    if *code == SqlState::PROTOCOL_VIOLATION && !fatal {
        // A FATAL 08P01 is a pooler losing the server connection ("server conn
        // crashed?", "pgbouncer cannot connect to server"), handled with the other
        // 08xxx below; anything else is a client bug the same request repeats.
        return Failure::Database;
    }
    if code.code().starts_with("08") {
        return if phase == Phase::Connect {
            Failure::Unreachable
        } else {
            lost()
        };
    }
    if fatal {
        return if phase == Phase::Connect {
            // A FATAL at connect that is not one of the codes above is an authentication
            // or catalog problem (28xxx, 3D000): retrying cannot fix it.
            Failure::Database
        } else {
            lost()
        };
    }
    Failure::Database
}

/// Classifies any error tokio-postgres returns.
pub(crate) fn classify(err: &tokio_postgres::Error, phase: Phase) -> Failure {
    if let Some(db) = err.as_db_error() {
        return classify_db_error(db, phase);
    }
    if is_config_error(err) {
        // "password missing" and the like: the settings, not the network, are at
        // fault, and every retry would meet the same.
        return Failure::Config;
    }
    let connection_level = err.is_closed()
        || source_io_error(err).is_some()
        || err.to_string().contains("timeout")
        || phase == Phase::Connect;
    classify_client(connection_level, phase)
}

/// Classifies an error the server did not report: `connection_level` when the
/// connection closed, an I/O error happened or the connect did not finish.
pub(crate) fn classify_client(connection_level: bool, phase: Phase) -> Failure {
    if !connection_level {
        // Parameter conversion, unexpected row counts, column types: the client's own
        // checks, which the same inputs would fail again.
        return Failure::Database;
    }
    match phase {
        Phase::Connect => Failure::Unreachable,
        Phase::Statement => Failure::ConnectionLost,
        Phase::Commit => Failure::CommitUnknown,
    }
}

/// tokio-postgres' own configuration errors ("password missing", no host given …),
/// told by their fixed wording: the error's kind is not public.
fn is_config_error(err: &tokio_postgres::Error) -> bool {
    let text = err.to_string();
    text.starts_with("invalid configuration") || text.starts_with("invalid connection string")
}

fn source_io_error(err: &tokio_postgres::Error) -> Option<&io::Error> {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// Builds the caller-facing error for a tokio-postgres error in a phase.
pub(crate) fn to_tx_error(err: tokio_postgres::Error, phase: Phase) -> TxError {
    let failure = classify(&err, phase);
    let sqlstate = err.code().cloned();
    let message = describe(&err, failure, phase);
    TxError::with_details(failure, message, sqlstate, Some(Box::new(err)))
}

/// The caller-facing error for a failed connect to `host` (`host:port`), naming it.
pub(crate) fn connect_error(err: tokio_postgres::Error, host: &str) -> TxError {
    let failure = classify(&err, Phase::Connect);
    let sqlstate = err.code().cloned();
    let cause = cause_of(&err);
    let message = match failure {
        Failure::Database => format!("the database at {host} refused the connection: {cause}"),
        Failure::Config if cause.contains("password missing") => format!(
            "the database at {host} asks for a password and the database URL gives none \
             (add it to the URL, e.g. postgres://user:password@host/db)"
        ),
        Failure::Config => format!("cannot connect to the database at {host}: {cause}"),
        _ => format!("could not connect to the database at {host}: {cause}"),
    };
    TxError::with_details(failure, message, sqlstate, Some(Box::new(err)))
}

/// The error for a client-side timer that fired.
pub(crate) fn client_timeout(phase: Phase, after: Duration) -> TxError {
    match phase {
        Phase::Commit => TxError::new(
            Failure::CommitUnknown,
            format!(
                "the database stopped answering while COMMIT was in flight (no reply within {}); \
                 the transaction may or may not have been applied",
                human(after)
            ),
        ),
        Phase::Connect => TxError::new(
            Failure::ConnectTimeout,
            format!("could not connect to the database within {}", human(after)),
        ),
        Phase::Statement => TxError::new(
            Failure::ClientTimeout,
            format!(
                "the database did not answer within the {} attempt timeout; the connection was abandoned",
                human(after)
            ),
        ),
    }
}

/// A sentence for the error: tokio-postgres' own `Display` says only "db error" or
/// "connection closed", so name the cause and what it means.
fn describe(err: &tokio_postgres::Error, failure: Failure, phase: Phase) -> String {
    let cause = cause_of(err);
    match failure {
        Failure::Conflict => format!("the transaction conflicted with a concurrent one: {cause}"),
        Failure::LockUnavailable => format!("a lock was not available: {cause}"),
        Failure::ConnectionLost => format!("the database connection was lost: {cause}"),
        Failure::Unreachable => format!("could not connect to the database: {cause}"),
        Failure::ReadOnly => format!(
            "the connection reached a read-only server (a standby or a demoted primary): {cause}"
        ),
        Failure::StatementTimeout => {
            format!("a statement ran past its timeout and was cancelled: {cause}")
        }
        Failure::CommitUnknown => format!(
            "the connection was lost while COMMIT was in flight, so the transaction may or may \
             not have been applied: {cause}"
        ),
        Failure::Aborted => format!(
            "the transaction had already failed (an earlier statement error was ignored): {cause}"
        ),
        Failure::StalePlan => format!("a cached statement no longer matches the schema: {cause}"),
        Failure::StatementsLost => {
            format!("a prepared statement was not found on the server connection: {cause}")
        }
        Failure::Database if phase == Phase::Connect => {
            format!("the database refused the connection: {cause}")
        }
        Failure::Database => format!("the database rejected the statement: {cause}"),
        Failure::PoolExhausted
        | Failure::ClientTimeout
        | Failure::ConnectTimeout
        | Failure::Config
        | Failure::KeyReused
        | Failure::NotReplicated
        | Failure::CounterMoved => cause,
    }
}

/// The most specific description of an error: the server's message and SQLSTATE, or
/// the underlying I/O error, never the connection string.
pub(crate) fn cause_of(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    if let Some(io) = source_io_error(err) {
        return format!("{err}: {io}");
    }
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

/// Formats a duration the way the attribute options are written (`250ms`, `2s`).
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    //! One test per row of the classification table.

    use super::*;
    use crate::error::{Action, ErrorKind};

    fn server(code: &str, phase: Phase) -> Failure {
        classify_server(&SqlState::from_code(code), "ERROR", None, phase)
    }

    fn fatal(code: &str, phase: Phase) -> Failure {
        classify_server(&SqlState::from_code(code), "FATAL", None, phase)
    }

    #[test]
    fn serialization_failure_and_deadlock_are_conflicts_at_any_statement_and_at_commit() {
        for code in ["40001", "40P01"] {
            for phase in [Phase::Statement, Phase::Commit] {
                let failure = server(code, phase);
                assert_eq!(failure, Failure::Conflict, "{code} in {phase:?}");
                assert_eq!(failure.action(), Action::Retry);
                assert_eq!(failure.kind(), ErrorKind::Conflict);
                assert!(!failure.discards_connection());
            }
        }
    }

    #[test]
    fn lock_not_available_is_retried() {
        for code in ["55P03", "55006"] {
            let failure = server(code, Phase::Statement);
            assert_eq!(failure, Failure::LockUnavailable);
            assert_eq!(failure.action(), Action::Retry);
        }
    }

    #[test]
    fn pool_timeout_returns_pool_exhausted() {
        assert_eq!(Failure::PoolExhausted.action(), Action::Return);
        assert_eq!(Failure::PoolExhausted.kind(), ErrorKind::PoolExhausted);
    }

    #[test]
    fn connect_failures_reconnect_and_end_unavailable() {
        for code in ["57P03", "53300"] {
            let failure = fatal(code, Phase::Connect);
            assert_eq!(failure, Failure::Unreachable, "{code}");
            assert_eq!(failure.action(), Action::Reconnect);
            assert_eq!(failure.kind(), ErrorKind::Unavailable);
        }
        assert_eq!(classify_client(true, Phase::Connect), Failure::Unreachable);
        let silent = client_timeout(Phase::Connect, Duration::from_secs(3));
        assert_eq!(silent.failure(), Failure::ConnectTimeout);
        assert_eq!(silent.failure().action(), Action::Reconnect);
        assert_eq!(silent.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn losses_before_commit_discard_the_connection_and_reconnect() {
        for code in [
            "57P01", "57P02", "57P05", "25P03", "08006", "08003", "08000",
        ] {
            let failure = fatal(code, Phase::Statement);
            assert_eq!(failure, Failure::ConnectionLost, "{code}");
            assert_eq!(failure.action(), Action::Reconnect);
            assert!(failure.discards_connection());
        }
        // Any other FATAL mid-transaction ends the session too.
        assert_eq!(fatal("XX000", Phase::Statement), Failure::ConnectionLost);
        // "connection closed", an I/O error, the client-side timer.
        assert_eq!(
            classify_client(true, Phase::Statement),
            Failure::ConnectionLost
        );
        assert_eq!(Failure::ClientTimeout.action(), Action::Reconnect);
        assert!(Failure::ClientTimeout.discards_connection());
        assert_eq!(Failure::ClientTimeout.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn read_only_transaction_reconnects_to_a_writable_host() {
        let failure = server("25006", Phase::Statement);
        assert_eq!(failure, Failure::ReadOnly);
        assert_eq!(failure.action(), Action::Reconnect);
        assert!(failure.discards_connection());
    }

    #[test]
    fn losses_while_commit_is_in_flight_are_ambiguous() {
        for code in ["57P01", "57P02", "08006"] {
            assert_eq!(fatal(code, Phase::Commit), Failure::CommitUnknown, "{code}");
        }
        assert_eq!(classify_client(true, Phase::Commit), Failure::CommitUnknown);
        for code in ["08007", "40003"] {
            assert_eq!(
                server(code, Phase::Statement),
                Failure::CommitUnknown,
                "{code}"
            );
        }
        assert_eq!(Failure::CommitUnknown.action(), Action::Resolve);
        assert_eq!(Failure::CommitUnknown.kind(), ErrorKind::CommitUnknown);
    }

    #[test]
    fn query_canceled_is_a_timeout_returned_at_once() {
        let failure = server("57014", Phase::Statement);
        assert_eq!(failure, Failure::StatementTimeout);
        assert_eq!(failure.action(), Action::Return);
        assert_eq!(failure.kind(), ErrorKind::Timeout);
        assert!(!failure.discards_connection());
    }

    #[test]
    fn in_failed_sql_transaction_returns() {
        let failure = server("25P02", Phase::Statement);
        assert_eq!(failure, Failure::Aborted);
        assert_eq!(failure.action(), Action::Return);
    }

    #[test]
    fn constraint_data_syntax_auth_and_protocol_errors_return_database() {
        for code in [
            "23505", "23503", "22012", "42601", "42P01", "28P01", "0A000", "08P01",
        ] {
            let failure = server(code, Phase::Statement);
            assert_eq!(failure, Failure::Database, "{code}");
            assert_eq!(failure.action(), Action::Return);
            assert_eq!(failure.kind(), ErrorKind::Database);
        }
        // A wrong password or a missing database at connect: retrying cannot fix it.
        assert_eq!(fatal("28P01", Phase::Connect), Failure::Database);
        assert_eq!(fatal("3D000", Phase::Connect), Failure::Database);
        // Client-side checks (row counts, parameter conversion).
        assert_eq!(classify_client(false, Phase::Statement), Failure::Database);
    }

    #[test]
    fn a_stale_cached_plan_is_recognised_by_its_routine_in_any_language() {
        let failure = classify_server(
            &SqlState::FEATURE_NOT_SUPPORTED,
            "FEHLER",
            Some("RevalidateCachedQuery"),
            Phase::Statement,
        );
        assert_eq!(failure, Failure::StalePlan);
        assert_eq!(failure.action(), Action::Retry);
        // Another "feature not supported" is the statement's own.
        let other = classify_server(
            &SqlState::FEATURE_NOT_SUPPORTED,
            "ERROR",
            Some("transformSelectStmt"),
            Phase::Statement,
        );
        assert_eq!(other, Failure::Database);
    }

    #[test]
    fn a_pooler_losing_its_server_connection_is_a_lost_connection_by_phase() {
        // PgBouncer: FATAL 08P01 "server conn crashed?", "pgbouncer cannot connect to
        // server", query_wait_timeout.
        assert_eq!(fatal("08P01", Phase::Statement), Failure::ConnectionLost);
        assert_eq!(fatal("08P01", Phase::Commit), Failure::CommitUnknown);
        assert_eq!(fatal("08P01", Phase::Connect), Failure::Unreachable);
        // A non-FATAL protocol violation is the client's own.
        assert_eq!(server("08P01", Phase::Statement), Failure::Database);
    }

    #[test]
    fn durations_read_like_the_attribute_options() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
    }
}

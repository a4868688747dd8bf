//! Whether one of the runtime's tables can be used, found out once per `Db` and
//! remembered ([`Readiness`]), and the DDL that creates or upgrades it when it is
//! missing and the role may ([`settle`]).
//!
//! The common deployment has a migration role own the schema while the application's
//! role may only read and write rows. So the table is first looked up in the catalogs
//! ([`presence`](super::presence)); DDL runs only when the table (or a column newer
//! versions added) is missing and the role may create it, and then under a
//! `lock_timeout`, so that it cannot wait behind another session's lock past the
//! call's deadline. A table that is missing and may not be created is remembered as
//! such (every call gets the same error at once instead of each retrying the DDL) and
//! looked up again every [`RECHECK`], so that a migration run later is noticed without
//! a restart.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::presence::Found;
use crate::classify::human;
use crate::error::{Failure, TxError};
use crate::pool::Pool;

/// How long a table found missing (or in an older shape that cannot be upgraded) is
/// taken to stay so before it is looked up again: one catalog query per table and `Db`
/// at most this often, so a migration run while the application is up is noticed
/// within this time.
pub(crate) const RECHECK: Duration = Duration::from_secs(10);

/// The longest a CREATE or ALTER of the runtime's tables waits for a lock: a busy key
/// table must not queue every keyed call behind an ALTER for long.
const DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the readiness check needs to know about one table.
#[derive(Debug, Clone)]
pub(crate) struct TableSpec {
    /// `schema.table` or `table`.
    pub(crate) name: String,
    /// What the table is, for messages: "idempotency table", "commit marker table".
    pub(crate) what: &'static str,
    /// What the application loses while the table cannot be used, for the warning.
    pub(crate) consequence: &'static str,
    /// The catalog query of [`presence`](super::presence).
    pub(crate) check: String,
    /// `CREATE SCHEMA/TABLE/INDEX IF NOT EXISTS …`, each statement ending in `;`.
    pub(crate) create: String,
    /// A column newer versions added, when the table has one.
    pub(crate) column: Option<AddedColumn>,
}

/// A column a table created by an older version lacks.
#[derive(Debug, Clone)]
pub(crate) struct AddedColumn {
    /// `ALTER TABLE … ADD COLUMN IF NOT EXISTS …;`
    pub(crate) add: String,
    /// What works differently without it, for the warning.
    pub(crate) without: &'static str,
}

/// The table as calls can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Every column of this version is there.
    Current,
    /// Created by an older version: the added column is missing and could not be added.
    Older,
}

/// One table's readiness within a `Db`.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    /// Set once the table is known in its current shape: from then on a call costs
    /// nothing but this check.
    current: OnceLock<()>,
    memory: Mutex<Memory>,
    /// One look-up at a time; calls that wait for it take its answer.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Memory {
    last: Option<Known>,
    /// The warning last logged, so that each is said once per `Db`, not per call.
    warned: Option<String>,
}

/// The outcome of one look-up.
#[derive(Debug, Clone)]
struct Known {
    at: Instant,
    outcome: Result<Shape, TxError>,
    /// The outcome stays true until something outside changes it (a missing table
    /// the role may not create, a column it may not add), so it is remembered for
    /// [`RECHECK`]; otherwise (the database was unreachable, a lock was held) only the
    /// calls that waited for this look-up share it.
    lasting: bool,
}

impl Known {
    /// The outcome, if it still answers a call that asked at `asked`, now `now`.
    fn answers(&self, asked: Instant, now: Instant) -> Option<Result<Shape, TxError>> {
        let fresh = self.at >= asked;
        let remembered = self.lasting && now.saturating_duration_since(self.at) < RECHECK;
        (fresh || remembered).then(|| self.outcome.clone())
    }
}

impl Readiness {
    /// Whether calls may use the table `spec` names, and in which shape, within
    /// `bound`. Looks it up (and creates or upgrades it where the role may) the first
    /// time, then answers from memory.
    pub(crate) async fn ensure(
        &self,
        spec: &TableSpec,
        pool: &Pool,
        bound: Duration,
    ) -> Result<Shape, TxError> {
        if self.current.get().is_some() {
            return Ok(Shape::Current);
        }
        let asked = Instant::now();
        if let Some(outcome) = self.remembered(asked, asked) {
            return outcome;
        }
        let deadline = asked + bound;
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.turn.lock()).await else {
            return Err(still_looking(spec, bound));
        };
        if self.current.get().is_some() {
            return Ok(Shape::Current);
        }
        if let Some(outcome) = self.remembered(asked, Instant::now()) {
            return outcome;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let settled = settle(spec, pool, remaining).await;
        self.note(spec, &settled);
        settled.outcome
    }

    /// For `Db::migrate()`: looks the table up now whatever is remembered, creates or
    /// upgrades it, and fails unless it ends up in its current shape.
    pub(crate) async fn migrate(
        &self,
        spec: &TableSpec,
        pool: &Pool,
        bound: Duration,
    ) -> Result<(), TxError> {
        let deadline = Instant::now() + bound;
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.turn.lock()).await else {
            return Err(still_looking(spec, bound));
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let settled = settle(spec, pool, remaining).await;
        self.note(spec, &settled);
        match settled.outcome? {
            Shape::Current => Ok(()),
            Shape::Older => Err(TxError::new(
                Failure::Config,
                settled
                    .warning
                    .unwrap_or_else(|| older_message(spec, "the role", "")),
            )),
        }
    }

    /// What an earlier look-up left that answers a call asking at `asked`.
    fn remembered(&self, asked: Instant, now: Instant) -> Option<Result<Shape, TxError>> {
        let memory = self
            .memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        memory.last.as_ref()?.answers(asked, now)
    }

    /// Remembers a look-up's outcome, and says so in the log when it changes what
    /// calls can do: each lasting problem once per `Db`, and its end.
    fn note(&self, spec: &TableSpec, settled: &Settled) {
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let name = spec.name.as_str();
        let warning = match (&settled.outcome, &settled.warning) {
            (_, Some(warning)) => Some(warning.clone()),
            (Err(error), None) if settled.lasting => Some(format!(
                "{error}; {}; looked up again every {}",
                spec.consequence,
                human(RECHECK)
            )),
            _ => None,
        };
        match (&settled.outcome, warning) {
            (Ok(Shape::Current), _) => {
                // Set only here, under the turn.
                let _ = self.current.set(());
                if memory.warned.take().is_some() {
                    tracing::info!(table = name, "the {} {name} is usable now", spec.what);
                }
            }
            (_, Some(warning)) => {
                if memory.warned.as_deref() != Some(warning.as_str()) {
                    tracing::warn!(table = name, "{warning}");
                    memory.warned = Some(warning);
                }
            }
            (Err(error), None) => {
                tracing::debug!(table = name, error = %error,
                    "the {} {name} could not be looked up", spec.what);
            }
            (Ok(Shape::Older), None) => {}
        }
        memory.last = Some(Known {
            at: Instant::now(),
            outcome: settled.outcome.clone(),
            lasting: settled.lasting,
        });
    }
}

/// A look-up that could not start within the call's bound.
fn still_looking(spec: &TableSpec, bound: Duration) -> TxError {
    TxError::new(
        Failure::ClientTimeout,
        format!(
            "the {} {} could not be looked up within {}: another call's look-up is still \
             waiting for the database",
            spec.what,
            spec.name,
            human(bound)
        ),
    )
}

/// The warning for a table in its older shape: who may not add the column, and why.
fn older_message(spec: &TableSpec, who: &str, why: &str) -> String {
    let (name, what) = (&spec.name, spec.what);
    let (add, without) = spec
        .column
        .as_ref()
        .map_or(("", ""), |c| (c.add.as_str(), c.without));
    format!(
        "the {what} {name} was created by an older version and {who} could not add what it \
         lacks{why}: {without}. Have the table's owner run Db::migrate(), or run: {add}"
    )
}

/// What one look-up found.
#[derive(Debug)]
struct Settled {
    outcome: Result<Shape, TxError>,
    /// See [`Known::lasting`].
    lasting: bool,
    /// Why the table is in its older shape, for the log (and for `migrate`).
    warning: Option<String>,
}

impl Settled {
    fn passing(outcome: Result<Shape, TxError>) -> Settled {
        Settled {
            outcome,
            lasting: false,
            warning: None,
        }
    }

    fn lasting(outcome: Result<Shape, TxError>, warning: Option<String>) -> Settled {
        Settled {
            outcome,
            lasting: true,
            warning,
        }
    }
}

/// Looks the table up and creates or upgrades it where that is needed and allowed.
async fn settle(spec: &TableSpec, pool: &Pool, bound: Duration) -> Settled {
    let deadline = Instant::now() + bound;
    // Another process creating the same table at the same moment makes one of the
    // two CREATEs fail on the catalog; the next round finds the table.
    for _ in 0..3 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let found = match look_up(spec, pool, remaining).await {
            Ok(found) => found,
            Err(error) => return Settled::passing(Err(error)),
        };
        if let Some(why) = found.unusable(spec.what, &spec.name) {
            return Settled::lasting(Err(forbidden(why)), None);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if found.table_exists {
            let Some(column) = spec.column.as_ref().filter(|_| !found.has_column) else {
                return Settled::passing(Ok(Shape::Current));
            };
            let who = format!("role \"{}\"", found.role);
            if !found.owns_table {
                let warning = older_message(spec, &who, " (it does not own the table)");
                return Settled::lasting(Ok(Shape::Older), Some(warning));
            }
            // Remembered either way: an ALTER that waited for its lock in vain must not
            // be tried again by every call (each would queue the table's users behind it).
            return match run_ddl(pool, &column.add, remaining).await {
                Ok(()) => Settled::passing(Ok(Shape::Current)),
                Err(error) => {
                    let why = format!(" ({})", error.message());
                    let warning = older_message(spec, &who, &why);
                    Settled::lasting(Ok(Shape::Older), Some(warning))
                }
            };
        }
        match run_ddl(pool, &spec.create, remaining).await {
            Ok(()) => return Settled::passing(Ok(Shape::Current)),
            Err(error) if is_forbidden(&error) => {
                let error = forbidden(found.missing(spec.what, &spec.name));
                return Settled::lasting(Err(error), None);
            }
            Err(error) if is_concurrent_creation(&error) => continue,
            Err(error) => {
                let message = format!(
                    "the {} {} does not exist and creating it failed: {}",
                    spec.what,
                    spec.name,
                    error.message()
                );
                let error = TxError::with_details(
                    error.failure(),
                    message,
                    error.sqlstate().cloned(),
                    None,
                );
                return Settled::passing(Err(error));
            }
        }
    }
    Settled::passing(Err(TxError::new(
        Failure::Database,
        format!(
            "the {} {} could not be created: concurrent creations kept colliding",
            spec.what, spec.name
        ),
    )))
}

/// The catalog query, on a connection of its own.
async fn look_up(spec: &TableSpec, pool: &Pool, bound: Duration) -> Result<Found, TxError> {
    let mut session = pool.session(bound).await?;
    let messages = session.simple_query(&spec.check, bound).await?;
    Found::parse(&messages).ok_or_else(|| {
        TxError::new(
            Failure::Database,
            format!("the look-up of the {} returned no row", spec.what),
        )
    })
}

/// Runs DDL in a transaction whose lock waits end before `bound` does, so that a lock
/// held by another session is a clean `55P03` rather than a call stuck past its
/// deadline.
async fn run_ddl(pool: &Pool, ddl: &str, bound: Duration) -> Result<(), TxError> {
    let lock_timeout = (bound * 3 / 4).min(DDL_LOCK_TIMEOUT).as_millis().max(1);
    let sql = format!("BEGIN; SET LOCAL lock_timeout = {lock_timeout}; {ddl} COMMIT;");
    let mut session = pool.session(bound).await?;
    session.batch_execute(&sql, bound).await
}

/// A missing table or privilege: the deployment must change, retrying cannot help.
fn forbidden(message: String) -> TxError {
    TxError::with_details(
        Failure::Config,
        message,
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        None,
    )
}

/// 42501: the role lacks a privilege (the catalogs said it had it, or the server
/// refused anyway, e.g. a row-level or event-trigger rule).
fn is_forbidden(error: &TxError) -> bool {
    error.sqlstate().is_some_and(|s| s.code() == "42501")
}

/// Another session created the same object at the same moment: unique violation on a
/// catalog (23505), or the object already exists (42P07 relation, 42P06 schema).
fn is_concurrent_creation(error: &TxError) -> bool {
    error
        .sqlstate()
        .is_some_and(|s| matches!(s.code(), "23505" | "42P07" | "42P06"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(at: Instant, lasting: bool) -> Known {
        Known {
            at,
            outcome: Err(TxError::config("missing")),
            lasting,
        }
    }

    #[test]
    fn a_lasting_outcome_answers_until_the_recheck_is_due() {
        let at = Instant::now();
        let later = at + Duration::from_secs(1);
        assert!(known(at, true).answers(later, later).is_some());
        let due = at + RECHECK;
        assert!(known(at, true).answers(due, due).is_none());
    }

    #[test]
    fn a_passing_outcome_answers_only_the_calls_that_waited_for_it() {
        let asked = Instant::now();
        let at = asked + Duration::from_millis(5);
        assert!(
            known(at, false).answers(asked, at).is_some(),
            "a call that waited"
        );
        let next = at + Duration::from_millis(1);
        assert!(
            known(at, false).answers(next, next).is_none(),
            "a later call looks again"
        );
    }

    #[test]
    fn the_older_shape_message_says_what_is_lost_and_what_fixes_it() {
        let spec = TableSpec {
            name: "rt.keys".to_owned(),
            what: "idempotency table",
            consequence: "",
            check: String::new(),
            create: String::new(),
            column: Some(AddedColumn {
                add: "ALTER TABLE rt.keys ADD COLUMN IF NOT EXISTS fingerprint text;".to_owned(),
                without: "keys work, but a key reused with other arguments is not detected",
            }),
        };
        let message = older_message(&spec, "role \"app\"", " (it does not own the table)");
        assert!(
            message
                .contains("role \"app\" could not add what it lacks (it does not own the table)"),
            "{message}"
        );
        assert!(message.contains("is not detected. Have the table's owner run Db::migrate()"));
        assert!(message.ends_with("ADD COLUMN IF NOT EXISTS fingerprint text;"));
    }
}

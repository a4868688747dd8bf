//! What COMMIT's flight carries so that commit verification can settle a lost reply,
//! and when a transaction needs it whatever it wrote.

/// What COMMIT's flight carries so that commit verification can settle a lost reply.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CommitMark<'a> {
    /// `sql` inserts `marker` (`$1`, text).
    Marker { sql: &'a str, marker: &'a str },
    /// `sql` moves this connection's commit counter by one (`$1` its id, `$2` the value
    /// it last committed, `$3` the next) and returns how many rows it moved.
    Counter { sql: &'a str },
}

impl CommitMark<'_> {
    pub(super) fn sql(&self) -> &str {
        match self {
            CommitMark::Marker { sql, .. } | CommitMark::Counter { sql } => sql,
        }
    }
}

/// Whether SQL text may queue a notification: `NOTIFY` or `pg_notify`, in any case.
pub(super) fn mentions_notify(sql: &str) -> bool {
    sql.as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"notify"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_is_seen_in_any_case_and_form() {
        assert!(mentions_notify("NOTIFY jobs, 'x'"));
        assert!(mentions_notify("select pg_notify('jobs', $1)"));
        assert!(mentions_notify("Notify jobs"));
        assert!(!mentions_notify("INSERT INTO notes VALUES (1)"));
        assert!(!mentions_notify(""));
    }
}

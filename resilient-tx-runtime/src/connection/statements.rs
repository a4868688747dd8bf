//! Prepared statements: each connection's cache, and the [`StatementPolicy`] its
//! `Db` shares across every connection, which decides whether named statements are
//! used at all and when every cache must be dropped.
//!
//! Named prepared statements live on one server connection. Behind a pooler in
//! transaction mode (PgBouncer before 1.21) the next transaction may run on another
//! server connection, where the statement does not exist (26000) or another process's
//! statement of the same name does (42P05, or worse, a silent mix-up: tokio-postgres
//! names statements `s0, s1, …` in every process). With named statements off, every
//! statement is sent unnamed, parsed and bound in one flight instead.
//!
//! A schema change (`ALTER TABLE … ADD COLUMN` under `SELECT *`, `ALTER COLUMN …
//! TYPE`) makes every connection's cached statement for that table fail once with
//! "cached plan must not change result type". One such failure bumps the shared
//! generation, and each connection drops its cache when it next sees the new one, so a
//! retry succeeds on whichever connection it gets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_postgres::Statement;

/// How many prepared statements one connection keeps. Applications run a bounded set
/// of statements; the cap only guards against SQL built with inlined values.
const CAPACITY: usize = 512;

/// What every connection of one `Db` shares about prepared statements.
#[derive(Debug)]
pub(crate) struct StatementPolicy {
    /// Named prepared statements may be created.
    named: AtomicBool,
    /// Bumped when cached statements can no longer be trusted.
    generation: AtomicU64,
}

impl StatementPolicy {
    /// A policy that uses named statements when `named` (the statement cache is on).
    pub(crate) fn new(named: bool) -> Arc<StatementPolicy> {
        Arc::new(StatementPolicy {
            named: AtomicBool::new(named),
            generation: AtomicU64::new(0),
        })
    }

    /// Whether statements are prepared (named) and cached.
    pub(crate) fn named(&self) -> bool {
        self.named.load(Ordering::Relaxed)
    }

    /// Stops creating named statements; `true` for the call that switched them off
    /// (the one that should say so).
    pub(crate) fn stop_naming(&self) -> bool {
        let was = self.named.swap(false, Ordering::Relaxed);
        self.invalidate();
        was
    }

    /// Every connection drops its cached statements before its next statement.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

/// One connection's prepared statements, by SQL text.
#[derive(Debug)]
pub(crate) struct StatementCache {
    statements: HashMap<String, Statement>,
    /// The policy's generation these statements belong to.
    generation: u64,
    policy: Arc<StatementPolicy>,
}

impl StatementCache {
    pub(crate) fn new(policy: Arc<StatementPolicy>) -> StatementCache {
        StatementCache {
            statements: HashMap::new(),
            generation: policy.generation(),
            policy,
        }
    }

    /// The policy this cache follows.
    pub(crate) fn policy(&self) -> &StatementPolicy {
        &self.policy
    }

    /// The cached statement for `sql`, if any still valid. Drops every statement of
    /// an older generation first.
    pub(crate) fn get(&mut self, sql: &str) -> Option<Statement> {
        let generation = self.policy.generation();
        if generation != self.generation {
            // Dropping a Statement closes it on the server, queued ahead of the next
            // request: the cache empties without a round trip of its own.
            self.statements.clear();
            self.generation = generation;
        }
        self.statements.get(sql).cloned()
    }

    /// Remembers a statement prepared for `sql`.
    pub(crate) fn insert(&mut self, sql: &str, statement: Statement) {
        if self.statements.len() >= CAPACITY {
            // An arbitrary victim is fine for a cache whose working set normally fits.
            if let Some(victim) = self.statements.keys().next().cloned() {
                self.statements.remove(&victim);
            }
        }
        self.statements.insert(sql.to_owned(), statement);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_names_is_said_once_and_drops_every_cache() {
        let policy = StatementPolicy::new(true);
        let before = policy.generation();
        assert!(policy.named());
        assert!(policy.stop_naming(), "the first call switches");
        assert!(!policy.stop_naming(), "later calls find it switched");
        assert!(!policy.named());
        assert!(policy.generation() > before);
    }

    #[test]
    fn a_new_generation_reaches_every_cache() {
        let policy = StatementPolicy::new(true);
        let a = StatementCache::new(policy.clone());
        let b = StatementCache::new(policy.clone());
        policy.invalidate();
        for cache in [a, b] {
            assert_ne!(cache.generation, policy.generation());
        }
    }
}

//! What every clone of a `Db` shares ([`Shared`]), and a borrowed handle on it
//! ([`DbRef`]) through which the attempt loop reaches the pools, the tables and the
//! counters without knowing the `Db` type above it.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::RetryBudget;
use crate::error::{Failure, TxError};
use crate::metrics::Counters;
use crate::outcome::CommitVerification;
use crate::policy::{Isolation, Policy};
use crate::pool::{Pool, Pooled};
use crate::tables::Tables;

/// The pools, settings, tables and counters of one `Db` and all its clones.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) replica: Option<Pool>,
    pub(crate) policy: Policy,
    pub(crate) counters: Arc<Counters>,
    pub(crate) budget: RetryBudget,
    pub(crate) health_timeout: Duration,
    pub(crate) tables: Tables,
    pub(crate) commit_verification: CommitVerification,
}

/// A borrowed `Db`, as a call sees it: what is shared, and whether this handle sends
/// read-only calls to the primary too.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct DbRef<'db> {
    pub(crate) shared: &'db Arc<Shared>,
    pub(crate) primary_only: bool,
}

impl<'db> DbRef<'db> {
    /// The pool that serves read-only calls through this handle, when it is not the
    /// primary's.
    pub(crate) fn replica(&self) -> Option<&'db Pool> {
        self.shared.replica.as_ref().filter(|_| !self.primary_only)
    }

    /// A connection for an attempt of a call with `policy`, within `bound`: from the
    /// replica for read-only work when one is configured and reachable (then `true`),
    /// otherwise from the primary.
    pub(crate) async fn acquire(
        &self,
        policy: &Policy,
        bound: Duration,
    ) -> Result<(Pooled<'db>, bool), TxError> {
        // A standby cannot run SERIALIZABLE: such reads go to the primary.
        let replica_can = policy.read_only && policy.isolation != Some(Isolation::Serializable);
        if let (true, Some(replica)) = (replica_can, self.replica()) {
            match replica.acquire(bound).await {
                Ok(conn) => return Ok((conn, true)),
                Err(error) if error.failure() == Failure::Unreachable => {
                    tracing::info!(error = %error,
                        "read replica unreachable: reading from the primary");
                }
                Err(error) => return Err(error),
            }
        }
        Ok((self.shared.pool.acquire(bound).await?, false))
    }
}

impl std::fmt::Debug for DbRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbRef")
            .field("primary_only", &self.primary_only)
            .finish_non_exhaustive()
    }
}

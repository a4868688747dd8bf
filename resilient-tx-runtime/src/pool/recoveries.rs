//! [`Recoveries`]: the ends of outages a call has not yet seen, so that its backoff
//! after a connection failure ends with the outage.

use tokio::sync::watch::Receiver;

use super::Pool;

/// The ends of outages of a `Db`'s pools (primary, and replica if any) since it was
/// taken.
///
/// Taken at the start of an attempt, not when the attempt's backoff begins: an
/// outage can end while the attempt is still failing (a connect begun during the
/// outage fails after another one succeeded), and that end must still cut the
/// backoff short, or the call sleeps out its whole delay against a server that is up.
#[derive(Debug)]
pub(crate) struct Recoveries {
    primary: Receiver<u64>,
    replica: Option<Receiver<u64>>,
}

impl Recoveries {
    /// Ends of outages from now on.
    pub(crate) fn since_now(primary: &Pool, replica: Option<&Pool>) -> Recoveries {
        Recoveries {
            primary: primary.health.watch_recovered(),
            replica: replica.map(|pool| pool.health.watch_recovered()),
        }
    }

    /// Resolves once an outage of either pool has ended since [`Recoveries::since_now`]
    /// (at once if one already has); never, if none does.
    pub(crate) async fn next(&mut self) {
        let replica = async {
            match &mut self.replica {
                Some(replica) => {
                    if replica.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            changed = self.primary.changed() => {
                if changed.is_err() {
                    // The pool is gone with its sender: nothing more will end.
                    std::future::pending::<()>().await;
                }
            }
            () = replica => {}
        }
    }
}

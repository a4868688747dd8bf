//! The throwaway PostgreSQL server the gateway starts when no `DATABASE_URL` is set
//! (feature `local-db`), so `cargo run -p gateway --features local-db` works on a
//! machine with PostgreSQL installed and nothing configured. Its data lives in a
//! temporary directory and is deleted on shutdown.

use std::io;

use resilient_tx_testkit::PgCluster;

/// A local server owned by the process. Dropping it stops the server (immediately)
/// and deletes its directory; [`LocalDatabase::stop`] stops it cleanly first.
#[derive(Debug)]
pub(crate) struct LocalDatabase {
    cluster: PgCluster,
}

impl LocalDatabase {
    /// Initialises and starts a new server on a free port.
    pub(crate) async fn start() -> io::Result<LocalDatabase> {
        tracing::info!(
            "DATABASE_URL is not set: starting a throwaway local PostgreSQL server \
             (its data is deleted when the gateway stops)"
        );
        let cluster = PgCluster::start().await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "could not start a local PostgreSQL server (set DATABASE_URL to use an \
                     existing one): {e}"
                ),
            )
        })?;
        tracing::info!(
            url = %cluster.url(),
            dir = %cluster.dir().display(),
            "throwaway PostgreSQL server is up"
        );
        Ok(LocalDatabase { cluster })
    }

    /// Where the server listens. The URL has no password: the server trusts local
    /// connections.
    pub(crate) fn url(&self) -> String {
        self.cluster.url()
    }

    /// Stops the server with a fast shutdown, then deletes its directory.
    pub(crate) async fn stop(self) {
        match self.cluster.stop_fast().await {
            Ok(()) => tracing::info!("throwaway PostgreSQL server stopped and removed"),
            Err(error) => {
                tracing::warn!(%error, "the throwaway PostgreSQL server did not stop cleanly; killing it")
            }
        }
    }
}

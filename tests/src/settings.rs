//! Changing the configuration of a running [`PgCluster`] and knowing when the
//! change is in force.
//!
//! `SELECT pg_reload_conf()` only sends SIGHUP: it returns before the server
//! has re-read anything, so a test that reloads and immediately checks for the
//! new behaviour races the server. These helpers wait until the postmaster has
//! reloaded; from then on every session applies the new values before running
//! its next command (backends re-read the configuration before executing a
//! command once they got the postmaster's signal).

use std::io;
use std::time::{Duration, Instant};

use crate::cluster::{PgCluster, pg_error};

/// How long a reload may take to show.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

const POLL_INTERVAL: Duration = Duration::from_millis(10);

impl PgCluster {
    /// Reloads the server configuration and returns once it is in force: a
    /// new session sees it at once, an existing one from its next command on.
    ///
    /// Settings that need a restart (`pg_settings.context = 'postmaster'`)
    /// are not applied by a reload; use
    /// [`restart_fast`](Self::restart_fast) for those.
    pub async fn reload_config(&self) -> io::Result<()> {
        let admin = self.admin().await?;
        let before: String = admin
            .query_one("SELECT pg_conf_load_time()::text", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(pg_error)?;
        // A new backend inherits the postmaster's load time, so it tells
        // whether the postmaster has processed the reload (and therefore
        // signalled every backend).
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        loop {
            let reloaded: bool = self
                .admin()
                .await?
                .query_one(
                    "SELECT pg_conf_load_time() > $1::text::timestamptz",
                    &[&before],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if reloaded {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server on port {} did not reload its configuration within {RELOAD_TIMEOUT:?}",
                        self.port()
                    ),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `ALTER SYSTEM SET name = 'value'`, then [`reload_config`](Self::reload_config).
    pub async fn alter_system(&self, name: &str, value: &str) -> io::Result<()> {
        let sql = format!(
            "ALTER SYSTEM SET {} = '{}'",
            quote_identifier(name),
            value.replace('\'', "''")
        );
        self.admin()
            .await?
            .batch_execute(&sql)
            .await
            .map_err(pg_error)?;
        self.reload_config().await
    }

    /// `ALTER SYSTEM RESET name`, then [`reload_config`](Self::reload_config).
    pub async fn alter_system_reset(&self, name: &str) -> io::Result<()> {
        let sql = format!("ALTER SYSTEM RESET {}", quote_identifier(name));
        self.admin()
            .await?
            .batch_execute(&sql)
            .await
            .map_err(pg_error)?;
        self.reload_config().await
    }
}

/// Quotes a setting name as an SQL identifier. Names with a dot (custom
/// settings such as `myapp.flag`) are quoted part by part.
fn quote_identifier(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::quote_identifier;

    #[test]
    fn quotes_setting_names() {
        assert_eq!(quote_identifier("work_mem"), "\"work_mem\"");
        assert_eq!(quote_identifier("app.fl\"ag"), "\"app\".\"fl\"\"ag\"");
    }
}

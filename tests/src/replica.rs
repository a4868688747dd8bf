//! Streaming replication between [`PgCluster`]s: creating hot standbys,
//! promoting them, and turning an old primary into a standby (switchover).

use std::io;
use std::time::{Duration, Instant};

use crate::binaries;
use crate::cluster::{PgCluster, SUPERUSER, append, pg_error, write_owned};

/// How long [`PgCluster::promote`] and [`PgCluster::wait_replay_catch_up`] wait.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

const POLL_INTERVAL: Duration = Duration::from_millis(20);

impl PgCluster {
    /// Creates a hot standby of this (running) cluster: a base backup taken
    /// with `pg_basebackup -R -X stream`, started on its own port, socket
    /// directory and log file, streaming from this cluster. Returns once the
    /// standby accepts (read-only) connections.
    ///
    /// The replica of a TLS-only cluster is TLS-only too (the base backup
    /// copies certificates and `pg_hba.conf`; [`tls`](Self::tls) names the
    /// same client files), and streams from its primary over TLS.
    pub async fn create_replica(&self) -> io::Result<PgCluster> {
        let started = Instant::now();
        let mut replica = PgCluster::new_layout(self.extra_conf().to_vec(), self.tls().cloned())?;

        let mut basebackup = binaries::tokio_pg_command("pg_basebackup")?;
        basebackup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port().to_string(),
                "-U",
                SUPERUSER,
            ])
            // -R copies the connection's options into primary_conninfo.
            .args(["-d", sslmode(self)])
            .arg("-D")
            .arg(replica.data_dir())
            // -R writes standby.signal and primary_conninfo; a fast checkpoint
            // avoids waiting for a spread one to finish.
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]);
        binaries::run(basebackup).await?;

        // The backup carries the primary's test kit configuration (port,
        // socket directory); starting on a fresh port rewrites it.
        replica.start_on_free_port().await?;
        tracing::info!(
            primary = self.port(),
            replica = replica.port(),
            elapsed = ?started.elapsed(),
            "created streaming replica"
        );
        Ok(replica)
    }

    /// Whether the server is a standby (`pg_is_in_recovery()`).
    pub async fn is_in_recovery(&self) -> io::Result<bool> {
        let admin = self.admin().await?;
        let row = admin
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    /// Promotes this standby to a primary (`pg_ctl promote`) and returns once
    /// it accepts writes.
    pub async fn promote(&self) -> io::Result<()> {
        let mut promote = binaries::tokio_pg_command("pg_ctl")?;
        promote
            .args(["promote", "-w", "-t", "60", "-D"])
            .arg(self.data_dir());
        binaries::run(promote).await?;

        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        while self.is_in_recovery().await? {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server on port {} is still in recovery after promotion",
                        self.port()
                    ),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Waits until this standby has replayed all WAL that `primary` had
    /// written when this call started (`pg_last_wal_replay_lsn()` reaches the
    /// primary's `pg_current_wal_lsn()`), so reads on the standby see every
    /// transaction the primary had committed.
    pub async fn wait_replay_catch_up(&self, primary: &PgCluster) -> io::Result<()> {
        let target: String = primary
            .admin()
            .await?
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(pg_error)?
            .get(0);

        let admin = self.admin().await?;
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        loop {
            let caught_up: bool = admin
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&target],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if caught_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the standby on port {} did not replay up to {target} of port {} within {REPLICATION_TIMEOUT:?}",
                        self.port(),
                        primary.port()
                    ),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Turns this server into a standby streaming from `new_primary`: stops
    /// it (fast), writes `standby.signal` and a `primary_conninfo` pointing at
    /// `new_primary`, and starts it again; returns once it accepts read-only
    /// connections.
    ///
    /// Only the clean switchover case is supported (no `pg_rewind`): this
    /// server must not have written WAL that `new_primary` lacks, e.g. it was
    /// stopped with [`stop_fast`](Self::stop_fast) while `new_primary` was
    /// still streaming from it, and only then was `new_primary` promoted.
    pub async fn demote_to_standby_of(&self, new_primary: &PgCluster) -> io::Result<()> {
        self.stop_fast().await?;
        write_owned(&self.data_dir().join("standby.signal"), "")?;
        // postgresql.auto.conf is read last, and a base backup's -R put a
        // primary_conninfo there already; a later line overrides it.
        append(
            &self.data_dir().join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user={SUPERUSER} {}'\n",
                new_primary.port(),
                sslmode(new_primary)
            ),
        )?;
        self.start_again().await
    }
}

/// The `sslmode` of a standby's connection to `primary`: TLS-only primaries
/// refuse anything else; the others have TLS off, and libpq's default
/// (`prefer`) falls back to plain text.
fn sslmode(primary: &PgCluster) -> &'static str {
    if primary.tls().is_some() {
        "sslmode=require"
    } else {
        "sslmode=prefer"
    }
}

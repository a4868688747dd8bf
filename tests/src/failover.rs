//! Measuring failovers: a killed node is an event with an instant, and a
//! server accepts writes at the instant a real write committed there.
//!
//! "Not in recovery" does not mean writable: a just-promoted pg_auto_failover
//! node in `stop_replication` or `wait_primary` is out of recovery but may
//! still refuse writes or hold every commit waiting for a synchronous standby
//! that is gone. So the probe writes a row and waits for its COMMIT, with a
//! deadline of its own: a commit that hangs counts as "not yet".

use std::io;
use std::time::{Duration, Instant};

use crate::wait::{self, Probe};

/// Table the write probe inserts into (in the `postgres` database). The
/// orchestrated clusters create it when they start, so that it exists on
/// every node.
pub const WRITE_PROBE_TABLE: &str = "resilient_tx_testkit_write_probe";

/// `application_name` of the probe's connections.
pub const PROBE_APPLICATION_NAME: &str = "resilient-tx-testkit-probe";

/// How long one probe may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one probe's write may take, COMMIT included. Longer means the
/// commit waits for a standby (or the server hangs): not writable yet.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a write goes, for the `wait_writable` methods of the orchestrated
/// clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to node `i`'s PostgreSQL port.
    Node(usize),
    /// Through the proxy in front of the cluster (HAProxy's write port of a
    /// [`PatroniCluster`](crate::PatroniCluster)).
    Proxy,
    /// Through the multi-host URL with `target_session_attrs=read-write`,
    /// as a client that knows every node would connect.
    MultiHost,
}

/// A node killed on purpose: which one, and when, the moment to measure a
/// failover from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Killed {
    /// Index of the killed node.
    pub node: usize,
    /// When all its processes were gone (a few milliseconds after the
    /// SIGKILLs).
    pub at: Instant,
}

/// Creates [`WRITE_PROBE_TABLE`] through `url` (the primary's), if missing.
pub(crate) async fn create_probe_table(url: &str) -> io::Result<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {WRITE_PROBE_TABLE} \
         (at timestamptz NOT NULL DEFAULT clock_timestamp(), \
          port int NOT NULL DEFAULT inet_server_port())"
    );
    side_query(url, &sql).await.map(drop).map_err(|why| {
        io::Error::other(format!(
            "could not create the write probe table through {url}: {why}"
        ))
    })
}

/// One attempt to write through `url`: connects, inserts a row into
/// [`WRITE_PROBE_TABLE`] and waits for its COMMIT, all within a few seconds.
/// `Err` says why the server did not take the write.
pub async fn try_write(url: &str) -> Result<(), String> {
    side_query(
        url,
        &format!("INSERT INTO {WRITE_PROBE_TABLE} DEFAULT VALUES"),
    )
    .await
    .map(drop)
}

/// Connects to `url` on a connection of its own and runs `sql` (one or more
/// statements, in one implicit transaction), all within a few seconds.
/// Returns the first column of every row, as text.
pub(crate) async fn side_query(url: &str, sql: &str) -> Result<Vec<String>, String> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("bad connection URL {url}: {e}"))?;
    config
        .application_name(PROBE_APPLICATION_NAME)
        .connect_timeout(CONNECT_TIMEOUT);
    let attempt = async {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("could not connect: {e}"))?;
        let connection = tokio::spawn(connection);
        let result = client
            .simple_query(sql)
            .await
            .map_err(|e| format!("{sql:?} failed: {}", db_message(&e)));
        drop(client);
        connection.abort();
        let rows = result?.into_iter().filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some(row.get(0).unwrap_or_default().to_owned())
            }
            _ => None,
        });
        Ok(rows.collect())
    };
    tokio::time::timeout(CONNECT_TIMEOUT + WRITE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {:?} (a COMMIT waiting for a synchronous standby?)",
                CONNECT_TIMEOUT + WRITE_TIMEOUT
            ))
        })
}

/// Waits until a write through `url` commits and returns the instant its
/// COMMIT returned. Fails after `timeout`, with the last refusal.
pub async fn wait_writable(url: &str, timeout: Duration) -> io::Result<Instant> {
    wait_writable_logged(url, &format!("a write through {url}"), timeout, &[]).await
}

/// [`wait_writable`] with the description of the target and the logs to show
/// on failure.
pub(crate) async fn wait_writable_logged(
    url: &str,
    what: &str,
    timeout: Duration,
    logs: &[&std::path::Path],
) -> io::Result<Instant> {
    wait::until(what, timeout, logs, || async {
        match try_write(url).await {
            Ok(()) => Probe::Ready(Instant::now()),
            Err(why) => Probe::NotYet(why),
        }
    })
    .await
}

/// The server's own message for database errors (the `Display` of
/// `tokio_postgres::Error` is only "db error").
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

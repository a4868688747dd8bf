//! What every self-test shares: time bounds and plain tokio-postgres clients.

use std::io;
use std::time::Duration;

use tokio::time::timeout;
use tokio_postgres::{Client, NoTls};

/// Upper bound for any single test step that should be quick.
pub const STEP: Duration = Duration::from_secs(60);

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Connects to `url`, spawning the connection task.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

pub async fn count_rows(client: &Client, table: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0))
}

/// Runs `f` with an overall deadline, so a hanging kit fails instead of
/// blocking the run.
pub async fn bounded<F: std::future::Future<Output = TestResult>>(f: F) -> TestResult {
    timeout(Duration::from_secs(180), f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test exceeded 180 s"))?
}

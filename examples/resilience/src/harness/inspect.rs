//! The database behind the gateway's back: numbers, the gateway's connections, the
//! registry's rows and the test accounts, read with the server's superuser (of a
//! [`PgCluster`], or of any server by its URL).

use std::collections::HashMap;

use resilient_tx::tokio_postgres::{self, Client, NoTls};
use resilient_tx_testkit::PgCluster;

use super::recorder::Recorder;
use super::{CaseError, stop};

/// How long a connection behind the gateway's back may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection of its own to the server at `url` (no pool, no retries).
pub(crate) async fn connect(url: &str) -> Result<Client, CaseError> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| stop(format!("no connection to {url} within 10 s")))??;
    tokio::spawn(connection);
    Ok(client)
}

/// A number from the database, read behind the gateway's back.
pub(crate) async fn scalar(cluster: &PgCluster, sql: &str) -> Result<i64, CaseError> {
    let admin = cluster.admin().await?;
    let row = admin.query_one(sql, &[]).await?;
    Ok(row.try_get(0)?)
}

/// How many client connections the gateway named `application_name` has on the
/// server, and how many of them are inside a transaction.
pub(crate) async fn backends(
    cluster: &PgCluster,
    application_name: &str,
) -> Result<(i64, i64), CaseError> {
    let admin = cluster.admin().await?;
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') \
             FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND application_name = $1",
            &[&application_name],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// On a TLS-only server, checks that every connection the gateway named
/// `application_name` has on `cluster` (the `role`, for the record) is encrypted; on a
/// plain-text server, nothing.
pub(crate) async fn check_encrypted(
    rec: &Recorder,
    cluster: &PgCluster,
    application_name: &str,
    role: &str,
) -> Result<(), CaseError> {
    if cluster.tls().is_none() {
        return Ok(());
    }
    let admin = cluster.admin().await?;
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) \
             WHERE a.backend_type = 'client backend' AND a.application_name = $1",
            &[&application_name],
        )
        .await?;
    let (connections, encrypted): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    rec.check(
        connections > 0 && encrypted == connections,
        format!(
            "over TLS (sslmode=verify-full): the gateway's connections to the {role}: \
             {encrypted} of {connections} encrypted"
        ),
    );
    Ok(())
}

/// Every server row of the registry on `cluster`, by name: its id.
pub(crate) async fn registry(cluster: &PgCluster) -> Result<HashMap<String, i64>, CaseError> {
    registry_of(&cluster.admin().await?).await
}

/// Every server row of the registry on the server at `url`, by name: its id.
pub(crate) async fn registry_at(url: &str) -> Result<HashMap<String, i64>, CaseError> {
    registry_of(&connect(url).await?).await
}

/// Terminates the connections named `application_name` on the server at `url`; how
/// many there were.
pub(crate) async fn terminate_at(url: &str, application_name: &str) -> Result<u64, CaseError> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application_name],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)?.unsigned_abs())
}

/// Whether the server at `url` is a standby.
pub(crate) async fn in_recovery_at(url: &str) -> Result<bool, CaseError> {
    let client = connect(url).await?;
    Ok(client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .try_get(0)?)
}

async fn registry_of(client: &Client) -> Result<HashMap<String, i64>, CaseError> {
    let rows = client.query("SELECT name, id FROM servers", &[]).await?;
    let mut by_name = HashMap::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let id: i64 = row.try_get(1)?;
        if by_name.insert(name.clone(), id).is_some() {
            return Err(stop(format!("two rows are named {name}")));
        }
    }
    Ok(by_name)
}

/// The test accounts on `cluster`, by id.
pub(crate) async fn balances(cluster: &PgCluster) -> Result<Vec<(i64, i64)>, CaseError> {
    let admin = cluster.admin().await?;
    let rows = admin
        .query(
            "SELECT id, balance FROM gateway_test_accounts ORDER BY id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

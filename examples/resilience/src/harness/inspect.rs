//! The database behind the gateway's back: numbers, the gateway's connections, the
//! registry's rows and the test accounts, read with the server's superuser.

use std::collections::HashMap;

use resilient_tx_testkit::PgCluster;

use super::recorder::Recorder;
use super::{CaseError, stop};

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

/// Every server row of the registry on `cluster`, by name: (id, rows with that name).
pub(crate) async fn registry(cluster: &PgCluster) -> Result<HashMap<String, i64>, CaseError> {
    let admin = cluster.admin().await?;
    let rows = admin.query("SELECT name, id FROM servers", &[]).await?;
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

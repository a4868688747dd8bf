//! The servers a case starts and the URLs the gateway reaches them by: plain text by
//! default, or, with [`set_tls`] (the demo's `--tls`), TLS-only servers (pg_hba.conf
//! refuses plain text over TCP) and URLs that ask for `sslmode=verify-full` against
//! the test kit's CA, for every host and the replica. The fault proxy passes TLS
//! through untouched: partitions, latency and refused connections work as in plain
//! text. Its protocol-aware cuts do not: they must read the messages TLS hides.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use resilient_tx_testkit::{FaultProxy, PgCluster, PgClusterBuilder};

static TLS: AtomicBool = AtomicBool::new(false);

/// Makes the cases start TLS-only servers and connect with `sslmode=verify-full`
/// (off by default). Cases that cut connections at exact protocol points (TX-03)
/// keep plain text, and say so.
pub fn set_tls(on: bool) {
    TLS.store(on, Ordering::Relaxed);
}

/// Whether the cases run against TLS-only servers.
pub fn tls_on() -> bool {
    TLS.load(Ordering::Relaxed)
}

/// A new server with the default configuration, TLS-only under [`set_tls`].
pub(crate) async fn start_cluster() -> io::Result<PgCluster> {
    start_from(PgCluster::builder()).await
}

/// A new server from `builder`, TLS-only under [`set_tls`].
pub(crate) async fn start_from(builder: PgClusterBuilder) -> io::Result<PgCluster> {
    if tls_on() { builder.tls() } else { builder }.start().await
}

/// The URL of `cluster` (the superuser, the `postgres` database).
pub(crate) fn url(cluster: &PgCluster) -> String {
    with_tls(cluster.url(), cluster)
}

/// The URL of `cluster` reached through `proxy`.
pub(crate) fn url_via(cluster: &PgCluster, proxy: &FaultProxy) -> String {
    with_tls(cluster.url_via(proxy), cluster)
}

/// A libpq URL listing several servers (`ports`: of `cluster` and its replicas, or
/// proxies in front of them), of which connections take the first that accepts
/// writes. Replicas share their primary's certificates, so `cluster`'s CA verifies
/// every host.
pub(crate) fn multi_host_url(cluster: &PgCluster, ports: &[u16]) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    with_tls(
        format!(
            "postgres://postgres@{}/postgres?target_session_attrs=read-write",
            hosts.join(",")
        ),
        cluster,
    )
}

/// `url` with `sslmode=verify-full` and the CA when `cluster` is TLS-only. The host
/// is `127.0.0.1`, which the server certificate names.
fn with_tls(url: String, cluster: &PgCluster) -> String {
    let Some(tls) = cluster.tls() else {
        return url;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}sslmode=verify-full&sslrootcert={}",
        tls.ca_cert().display()
    )
}

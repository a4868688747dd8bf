//! Talking to the local REST APIs of etcd and Patroni.

use std::io;
use std::time::Duration;

/// An HTTP client with short timeouts, that never goes through a proxy even
/// when the environment names one (every API is on 127.0.0.1).
pub(crate) fn client() -> io::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| io::Error::other(format!("could not build an HTTP client: {e}")))
}

/// `GET url`: the status code and the body.
pub(crate) async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url} failed: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| format!("GET {url}: could not read the body: {e}"))?;
    Ok((status, body))
}

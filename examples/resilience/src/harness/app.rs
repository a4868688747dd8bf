//! The gateway under test: the suite's settings, started in-process with the suite's
//! routes, and what a case asks of it (readiness, status, metrics).

use std::time::Duration;

use gateway::{Config, PoolSettings, Server};
use resilient_tx::Metrics;
use serde_json::Value;

use super::http::Http;
use super::recorder::Recorder;
use super::{CaseError, TOKEN, poll, stop};
use crate::routes;
use crate::text::secs;

/// Gateway settings for the suite: loopback on any port, the matrix's pool (5 kept, 15
/// at most), short timeouts so outages answer quickly, and an `application_name` of
/// its own so a case can find (and kill) its connections.
pub(crate) fn config(url: &str, application_name: &str) -> Config {
    let mut config = Config::new(url, TOKEN);
    config.listen = "127.0.0.1:0".parse().expect("a loopback address");
    config.pool = PoolSettings {
        min_idle: 5,
        max_size: 15,
        pool_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
    };
    config.statement_timeout = Some(Duration::from_secs(2));
    config.deadline = Duration::from_secs(5);
    config.retries = 10;
    config.application_name = application_name.to_owned();
    config
}

/// The gateway under test, in-process, and a client for it.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) server: Server,
    pub(crate) http: Http,
    pub(crate) application_name: String,
    pub(crate) min_idle: u32,
}

/// The `name`s of a server list answer.
pub(crate) fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|servers| {
            servers
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl App {
    /// Polls `GET /api/servers` until it answers 200 (up to 30 s); how long it took.
    pub(crate) async fn wait_api(&self) -> Option<Duration> {
        let http = self.http.clone();
        poll(Duration::from_secs(30), Duration::from_millis(50), || {
            let http = http.clone();
            async move { http.get("/api/servers").await.status == 200 }
        })
        .await
    }

    /// Starts the gateway with `config`, the suite's [`routes`] added under `/api`;
    /// its client records every request on `rec`'s timeline.
    pub(crate) async fn start(rec: &Recorder, config: Config) -> Result<App, CaseError> {
        let application_name = config.application_name.clone();
        let min_idle = config.pool.min_idle;
        let server = gateway::serve_with(config, routes::routes())
            .await
            .map_err(|e| stop(format!("the gateway did not start: {e}")))?;
        let http = Http::new(server.url(), rec.clone());
        Ok(App {
            server,
            http,
            application_name,
            min_idle,
        })
    }

    pub(crate) fn metrics(&self) -> Metrics {
        self.server.db().metrics()
    }

    /// `/health/status`, as JSON.
    pub(crate) async fn status(&self) -> Value {
        self.http.get("/health/status").await.body
    }

    /// Probes `/health/ready` until it answers 200.
    pub(crate) async fn wait_ready(&self, limit: Duration) -> Result<Duration, CaseError> {
        let http = self.http.clone();
        poll(limit, Duration::from_millis(100), || {
            let http = http.clone();
            async move { http.get("/health/ready").await.status == 200 }
        })
        .await
        .ok_or_else(|| stop(format!("the gateway was not ready within {}", secs(limit))))
    }

    pub(crate) async fn shutdown(self) {
        if let Err(error) = self.server.shutdown().await {
            tracing::warn!(%error, "the gateway did not shut down cleanly");
        }
    }
}

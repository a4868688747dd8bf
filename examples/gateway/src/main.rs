//! The gateway binary: settings from the environment, logs, serve until SIGINT or
//! SIGTERM, then shut down gracefully (which also removes a throwaway database).

use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let config = match gateway::Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    let server = match gateway::serve(config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "the gateway could not start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(database) = server.local_database_url() {
        // Printed, not logged: the development token is a secret of this process
        // only, and the person who started it needs it to call the API.
        println!(
            "\nDevelopment mode (throwaway database {database}).\n\
             Try:\n  curl -H 'Authorization: Bearer {token}' {url}/api/servers\n",
            token = server.token(),
            url = server.url(),
        );
    }

    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    match tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown()).await {
        Ok(Ok(())) => {
            tracing::info!("gateway stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "the HTTP server failed");
            ExitCode::FAILURE
        }
        // Dropping the server future drops the throwaway database too, which stops it.
        Err(_) => {
            tracing::warn!("requests still running after the grace period; stopping anyway");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what orchestrators send).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            if let Err(error) = result {
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        () = terminate => {}
    }
}

//! [`Etcd`]: a one-member etcd for a [`PatroniCluster`](crate::PatroniCluster)
//! to keep its leader lock in, on free 127.0.0.1 ports (never the default
//! 2379/2380).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon;
use crate::daemon_slot::DaemonSlot;
use crate::ports;
use crate::rest;
use crate::wait::{self, Probe};

/// How long etcd may take to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many port pairs are tried when another process takes one first.
const PORT_ATTEMPTS: usize = 5;

/// A running single-member etcd; killed on drop.
#[derive(Debug)]
pub struct Etcd {
    client_port: u16,
    peer_port: u16,
    log_path: PathBuf,
    daemon: DaemonSlot,
}

impl Etcd {
    /// Starts etcd with its data in `dir` (created if missing) and waits until
    /// it reports itself healthy.
    pub(crate) async fn start_in(dir: &Path) -> io::Result<Etcd> {
        let program = daemon::find_program("etcd", "etcd-server")?;
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("etcd.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let picked = ports::pick_free_ports(2)?;
            let (client_port, peer_port) = (picked[0], picked[1]);
            let etcd = Etcd {
                client_port,
                peer_port,
                log_path: log_path.clone(),
                daemon: DaemonSlot::new("etcd", &log_path, None),
            };
            let offset = crate::postmaster::log_len(&log_path);
            etcd.daemon.spawn(etcd.command(&program, dir)?)?;
            match etcd.wait_healthy().await {
                Ok(()) => {
                    tracing::debug!(client_port, "etcd is healthy");
                    return Ok(etcd);
                }
                Err(e) => {
                    let log = crate::postmaster::log_since(&log_path, offset);
                    if !log.contains("address already in use") {
                        return Err(e);
                    }
                    last_error = Some(e);
                    // Dropping `etcd` kills it; its data directory is reused.
                    drop(etcd);
                    let _ = std::fs::remove_dir_all(dir.join("data"));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("etcd found no free ports")))
    }

    fn command(&self, program: &Path, dir: &Path) -> io::Result<std::process::Command> {
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = daemon::command(program, false)?;
        cmd.arg("--name")
            .arg("testkit")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("testkit={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("testkit-{}", self.peer_port),
            ])
            // Elections of a single member on one machine need no slack.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        // etcd reads its whole configuration from ETCD_* variables too.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("ETCD_")) {
                cmd.env_remove(name);
            }
        }
        Ok(cmd)
    }

    async fn wait_healthy(&self) -> io::Result<()> {
        let client = rest::client()?;
        let url = format!("{}/health", self.client_url());
        wait::until(
            &format!("etcd to be healthy at {url}"),
            START_TIMEOUT,
            &[&self.log_path],
            || async {
                if let Some(how) = self.daemon.exit_status() {
                    return Probe::Failed(format!("etcd stopped: {how}"));
                }
                match rest::get(&client, &url).await {
                    Ok((_, body)) if body.contains("\"health\":\"true\"") => Probe::Ready(()),
                    Ok((status, body)) => Probe::NotYet(format!("{status}: {body}")),
                    Err(e) => Probe::NotYet(e),
                }
            },
        )
        .await
    }

    /// The URL clients reach etcd at, e.g. `http://127.0.0.1:23456`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port, as `host:port` (the form Patroni's `etcd3.hosts`
    /// takes).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// etcd's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether etcd still runs.
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }
}

//! [`HaProxy`]: the TCP proxy in front of a [`PatroniCluster`]: a write port
//! routed to the node whose Patroni REST API answers `/primary` with 200,
//! and a read port balanced over the nodes answering `/replica`.
//!
//! The checks ask with `OPTIONS`, which Patroni answers with the status
//! alone: HAProxy closes a check's connection once it has the status, and a
//! body still being written makes Patroni log a traceback every check.
//!
//! HAProxy counts every server as UP until its checks have failed `fall`
//! times, so right after a start both ports reach every node. Its own view
//! (the stats socket's `show stat`) is therefore what tells when the routes
//! are right: [`HaProxy::wait_routes`].
//!
//! [`PatroniCluster`]: crate::PatroniCluster

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon;
use crate::daemon_slot::DaemonSlot;
use crate::ports;
use crate::wait::{self, Probe};

/// Name of the proxy section behind the write port.
pub const WRITE_BACKEND: &str = "write";

/// Name of the proxy section behind the read port.
pub const READ_BACKEND: &str = "read";

/// How long HAProxy may take to open its stats socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many port pairs are tried when another process takes one first.
const PORT_ATTEMPTS: usize = 5;

/// A server HAProxy routes to: a PostgreSQL port, and the port of the Patroni
/// REST API that says what that PostgreSQL is.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// Server name, also in `show stat` (the Patroni member name).
    pub(crate) name: String,
    /// PostgreSQL's port.
    pub(crate) pg_port: u16,
    /// Patroni's REST API port, the target of the health checks.
    pub(crate) check_port: u16,
}

/// One server of one backend as HAProxy sees it (a row of `show stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// Backend: [`WRITE_BACKEND`] or [`READ_BACKEND`].
    pub backend: String,
    /// Server name (the Patroni member name).
    pub server: String,
    /// `UP`, `DOWN`, or a transition such as `UP 1/2` (going down).
    pub status: String,
    /// Result of the last health check, e.g. `L7OK`, `L7STS`, `L4CON`;
    /// empty or `INI` before the first check.
    pub check_status: String,
}

/// A running HAProxy; killed on drop.
#[derive(Debug)]
pub struct HaProxy {
    write_port: u16,
    read_port: u16,
    stats_socket: PathBuf,
    log_path: PathBuf,
    daemon: DaemonSlot,
}

impl HaProxy {
    /// Starts HAProxy with its configuration, socket and log in `dir`, in
    /// front of `servers`. Returns once its stats socket answers; the routes
    /// are only right after [`wait_routes`](Self::wait_routes).
    pub(crate) async fn start_in(dir: &Path, servers: &[Server]) -> io::Result<HaProxy> {
        let program = daemon::find_program("haproxy", "haproxy")?;
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("haproxy.log");
        let config_path = dir.join("haproxy.cfg");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let picked = ports::pick_free_ports(2)?;
            let proxy = HaProxy {
                write_port: picked[0],
                read_port: picked[1],
                stats_socket: dir.join("haproxy.sock"),
                log_path: log_path.clone(),
                daemon: DaemonSlot::new("HAProxy", &log_path, None),
            };
            std::fs::write(&config_path, proxy.config(servers))?;
            let _ = std::fs::remove_file(&proxy.stats_socket);
            let offset = crate::postmaster::log_len(&log_path);
            let mut cmd = daemon::command(&program, false)?;
            // -db: stay in the foreground, as our child.
            cmd.arg("-db").arg("-f").arg(&config_path);
            proxy.daemon.spawn(cmd)?;
            match proxy.wait_socket().await {
                Ok(()) => return Ok(proxy),
                Err(e) => {
                    let log = crate::postmaster::log_since(&log_path, offset);
                    if !log.contains("cannot bind socket") {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("HAProxy found no free ports")))
    }

    /// The configuration: checks every half second, a server is DOWN after
    /// two failed checks and UP after one good one, and the connections of a
    /// server marked DOWN are cut, as a production setup would.
    fn config(&self, servers: &[Server]) -> String {
        let mut cfg = format!(
            "# Written by resilient-tx-testkit.\n\
             global\n\
             \x20   maxconn 2000\n\
             \x20   nbthread 1\n\
             \x20   stats socket {socket} mode 600 level admin\n\
             \x20   log stdout format raw local0 notice\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   log global\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 1h\n\
             \x20   timeout server 1h\n\
             \x20   timeout check 1s\n\
             \x20   default-server inter 500ms fastinter 250ms downinter 500ms rise 1 fall 2 \
             on-marked-down shutdown-sessions\n",
            socket = self.stats_socket.display()
        );
        for (backend, port, check) in [
            (WRITE_BACKEND, self.write_port, "/primary"),
            (READ_BACKEND, self.read_port, "/replica"),
        ] {
            let _ = write!(
                cfg,
                "listen {backend}\n\
                 \x20   bind 127.0.0.1:{port}\n\
                 \x20   balance roundrobin\n\
                 \x20   option httpchk\n\
                 \x20   http-check send meth OPTIONS uri {check}\n\
                 \x20   http-check expect status 200\n"
            );
            for server in servers {
                let _ = writeln!(
                    cfg,
                    "    server {} 127.0.0.1:{} check port {}",
                    server.name, server.pg_port, server.check_port
                );
            }
        }
        cfg
    }

    async fn wait_socket(&self) -> io::Result<()> {
        wait::until(
            &format!("HAProxy's stats socket {}", self.stats_socket.display()),
            START_TIMEOUT,
            &[&self.log_path],
            || async {
                if let Some(how) = self.daemon.exit_status() {
                    return Probe::Failed(format!("HAProxy stopped: {how}"));
                }
                match self.server_status().await {
                    Ok(_) => Probe::Ready(()),
                    Err(e) => Probe::NotYet(e.to_string()),
                }
            },
        )
        .await
    }

    /// HAProxy's current view of every server in both backends.
    pub async fn server_status(&self) -> io::Result<Vec<ServerStatus>> {
        let csv = self.stats_command("show stat").await?;
        parse_show_stat(&csv)
    }

    async fn stats_command(&self, command: &str) -> io::Result<String> {
        let io = async {
            let mut socket = tokio::net::UnixStream::connect(&self.stats_socket).await?;
            socket.write_all(format!("{command}\n").as_bytes()).await?;
            let mut answer = String::new();
            socket.read_to_string(&mut answer).await?;
            Ok::<_, io::Error>(answer)
        };
        tokio::time::timeout(Duration::from_secs(3), io)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 3 s")))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "HAProxy's stats socket {} did not answer `{command}`: {e}",
                        self.stats_socket.display()
                    ),
                )
            })
    }

    /// Waits until HAProxy routes the write port to `leader` alone (the only
    /// server UP in [`WRITE_BACKEND`], every other DOWN) and the read port to
    /// exactly `replicas`, every server having been checked at least once.
    pub(crate) async fn wait_routes(
        &self,
        leader: &str,
        replicas: &[&str],
        timeout: Duration,
    ) -> io::Result<()> {
        let what =
            format!("HAProxy to route writes to {leader} only and reads to {replicas:?} only");
        wait::until(&what, timeout, &[&self.log_path], || async {
            let rows = match self.server_status().await {
                Ok(rows) => rows,
                Err(e) => return Probe::NotYet(e.to_string()),
            };
            let expected_up = |row: &ServerStatus| {
                if row.backend == WRITE_BACKEND {
                    row.server == leader
                } else {
                    replicas.contains(&row.server.as_str())
                }
            };
            let settled = rows.iter().all(|row| {
                let checked = !matches!(row.check_status.as_str(), "" | "INI");
                let want = if expected_up(row) { "UP" } else { "DOWN" };
                checked && row.status == want
            });
            if settled {
                Probe::Ready(())
            } else {
                Probe::NotYet(describe(&rows))
            }
        })
        .await
    }

    /// The servers UP in the write backend right now.
    pub async fn write_servers_up(&self) -> io::Result<Vec<String>> {
        Ok(self
            .server_status()
            .await?
            .into_iter()
            .filter(|row| row.backend == WRITE_BACKEND && row.status == "UP")
            .map(|row| row.server)
            .collect())
    }

    /// The port that reaches the primary.
    pub fn write_port(&self) -> u16 {
        self.write_port
    }

    /// The port that reaches the replicas.
    pub fn read_port(&self) -> u16 {
        self.read_port
    }

    /// HAProxy's log file (server state changes and alerts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

/// Parses the CSV of `show stat` into the server rows (the FRONTEND and
/// BACKEND summary rows are left out).
fn parse_show_stat(csv: &str) -> io::Result<Vec<ServerStatus>> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|line| line.strip_prefix("# "))
        .ok_or_else(|| io::Error::other(format!("unexpected `show stat` answer: {csv:?}")))?;
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| io::Error::other(format!("`show stat` has no column {name}: {header}")))
    };
    let (px, sv, status, check) = (
        column("pxname")?,
        column("svname")?,
        column("status")?,
        column("check_status")?,
    );
    Ok(lines
        .filter(|line| !line.is_empty())
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|fields| {
            fields
                .get(sv)
                .is_some_and(|sv| *sv != "FRONTEND" && *sv != "BACKEND")
        })
        .map(|fields| {
            let field = |i: usize| fields.get(i).copied().unwrap_or_default().to_owned();
            ServerStatus {
                backend: field(px),
                server: field(sv),
                status: field(status),
                check_status: field(check),
            }
        })
        .collect())
}

/// `write: node0 UP (L7OK), node1 DOWN (L7STS); read: ...` for messages.
fn describe(rows: &[ServerStatus]) -> String {
    let mut out = String::new();
    for backend in [WRITE_BACKEND, READ_BACKEND] {
        let servers: Vec<String> = rows
            .iter()
            .filter(|row| row.backend == backend)
            .map(|row| format!("{} {} ({})", row.server, row.status, row.check_status))
            .collect();
        let _ = write!(out, "{backend}: {}; ", servers.join(", "));
    }
    out.trim_end_matches("; ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_rows_of_show_stat() {
        let csv = "# pxname,svname,qcur,status,check_status,\n\
                   write,FRONTEND,,OPEN,,\n\
                   write,node0,0,UP,L7OK,\n\
                   write,node1,0,DOWN,L7STS,\n\
                   write,BACKEND,0,UP,,\n\
                   \n";
        let rows = parse_show_stat(csv).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].server, "node0");
        assert_eq!(rows[0].status, "UP");
        assert_eq!(rows[1].check_status, "L7STS");
        assert_eq!(
            describe(&rows),
            "write: node0 UP (L7OK), node1 DOWN (L7STS); read: "
        );
    }

    #[test]
    fn an_unexpected_answer_is_an_error() {
        assert!(parse_show_stat("Unknown command").is_err());
    }
}

//! [`PgBouncer`]: a PgBouncer process in front of a [`PgCluster`], so tests
//! meet the pooler production puts between clients and servers (named
//! prepared statements lost in transaction mode, "server conn crashed?",
//! pooler restarts).
//!
//! The process runs in the foreground as a child of the test process (as the
//! postgres OS user when the tests run as root, exec'ed directly, so its pid
//! is PgBouncer's own), from an ini and an auth file in a temporary
//! directory of its own, listening on a free loopback port. Its configuration
//! lives in [`crate::pgbouncer_config`].

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::Mutex;
use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

use crate::binaries;
use crate::cluster::{PgCluster, SUPERUSER, write_owned};
use crate::pgbouncer_config::PgBouncerBuilder;
use crate::ports;
use crate::postmaster::{self, signal};
use crate::tls::TlsFiles;

/// Environment variable that, when set, is the path of the `pgbouncer`
/// binary; otherwise `/usr/sbin/pgbouncer` (Debian's package), then `PATH`.
pub const PGBOUNCER_ENV: &str = "PGBOUNCER";

/// The database name of PgBouncer's admin console.
pub const CONSOLE_DATABASE: &str = "pgbouncer";

const DEFAULT_BINARY: &str = "/usr/sbin/pgbouncer";

/// How long a start may take until the console answers.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an immediate shutdown may take before PgBouncer is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports a first start tries before giving up on "address in use".
const PORT_ATTEMPTS: usize = 5;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A PgBouncer in front of a [`PgCluster`], listening on 127.0.0.1 at a port
/// of its own.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use resilient_tx_testkit::{PgBouncer, PgCluster, PoolMode};
///
/// let cluster = PgCluster::start().await?;
/// let bouncer = PgBouncer::builder(&cluster)
///     .pool_mode(PoolMode::Transaction)
///     .pool_size(3)
///     .start()
///     .await?;
/// // Point the code under test at `bouncer.url()`; inspect with
/// let pools = bouncer.show("POOLS").await?;
/// # let _ = pools;
/// # Ok(()) }
/// ```
///
/// The cluster's roles log in without a password (`auth_type = trust`, every
/// user listed in the auth file: the superuser, plus
/// [`PgBouncerBuilder::user`]); the superuser may use the admin console. For
/// a TLS-only cluster PgBouncer connects over TLS and verifies the server
/// against the cluster's CA (clients still talk plain text to PgBouncer).
///
/// Dropping it stops the process and deletes its files, also when the test
/// panics. Lifecycle methods take `&self` and are serialised with each other.
#[derive(Debug)]
pub struct PgBouncer {
    /// Removed on drop, after `Drop` has stopped the process.
    dir: TempDir,
    ini_path: PathBuf,
    log_path: PathBuf,
    binary: PathBuf,
    port: u16,
    /// Keeps the CA file PgBouncer verifies the server with.
    _tls: Option<TlsFiles>,
    /// The running process, if any; the mutex serialises lifecycle methods.
    process: Mutex<Option<Child>>,
    /// Pid of the running process (0 when stopped), for the synchronous
    /// [`PgBouncer::pid`].
    pid: AtomicU32,
}

impl PgBouncerBuilder {
    /// Writes the configuration, starts PgBouncer on a free port and returns
    /// once it accepts connections.
    pub async fn start(self) -> io::Result<PgBouncer> {
        PgBouncer::start_with(self).await
    }
}

impl PgBouncer {
    /// Options for a PgBouncer in front of `cluster` (its current port; a
    /// restart of the cluster keeps it).
    pub fn builder(cluster: &PgCluster) -> PgBouncerBuilder {
        PgBouncerBuilder::new(cluster)
    }

    /// Starts a PgBouncer with the default options in front of `cluster`.
    pub async fn start(cluster: &PgCluster) -> io::Result<PgBouncer> {
        Self::builder(cluster).start().await
    }

    async fn start_with(config: PgBouncerBuilder) -> io::Result<PgBouncer> {
        config.validate()?;
        let started = Instant::now();
        let dir = binaries::server_temp_dir("resilient-tx-pgbouncer-")?;
        let mut bouncer = PgBouncer {
            ini_path: dir.path().join("pgbouncer.ini"),
            log_path: dir.path().join("pgbouncer.log"),
            binary: find_binary()?,
            dir,
            port: 0,
            _tls: config.tls.clone(),
            process: Mutex::new(None),
            pid: AtomicU32::new(0),
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            bouncer.port = ports::pick_free_port()?;
            let ini = config.write_files(bouncer.dir.path(), bouncer.port)?;
            write_owned(&bouncer.ini_path, &ini)?;
            let log_offset = postmaster::log_len(&bouncer.log_path);
            match bouncer.start_again().await {
                Ok(()) => {
                    tracing::info!(
                        port = bouncer.port,
                        upstream = config.upstream_port,
                        pool_mode = config.pool_mode.as_str(),
                        elapsed = ?started.elapsed(),
                        "started PgBouncer"
                    );
                    return Ok(bouncer);
                }
                Err(e) => {
                    let log = postmaster::log_since(&bouncer.log_path, log_offset);
                    if log.contains("Address already in use") {
                        tracing::debug!(port = bouncer.port, "port taken, trying another one");
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("could not find a free port")))
    }

    /// The TCP port PgBouncer listens on (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL of the `postgres` database through PgBouncer, as the
    /// superuser.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Connection URL of database `dbname` through PgBouncer, as the
    /// superuser.
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Connection URL of the admin console (database
    /// [`CONSOLE_DATABASE`]); it speaks the simple query protocol only.
    pub fn console_url(&self) -> String {
        self.url_for(CONSOLE_DATABASE)
    }

    /// The process id, while PgBouncer runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|&pid| pid != 0)
    }

    /// Whether the process is alive.
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(postmaster::is_alive)
    }

    /// The temporary directory holding the ini, auth file and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The ini file PgBouncer runs with.
    pub fn ini_path(&self) -> &Path {
        &self.ini_path
    }

    /// The whole PgBouncer log, for diagnostics in failing tests.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A connection to the admin console (use `simple_query`: the console
    /// knows no other protocol). The connection task is spawned on the
    /// current runtime.
    pub async fn console(&self) -> io::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .dbname(CONSOLE_DATABASE)
            .connect_timeout(Duration::from_secs(5));
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            config.connect(tokio_postgres::NoTls),
        );
        let (client, connection) = connect
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "PgBouncer's console on port {} did not answer within 10 s",
                        self.port
                    ),
                )
            })?
            .map_err(|e| {
                io::Error::other(format!(
                    "could not connect to PgBouncer's console on port {}: {e}",
                    self.port
                ))
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PgBouncer console connection ended");
            }
        });
        Ok(client)
    }

    /// Runs `SHOW <what>` on the admin console (e.g. `POOLS`, `SERVERS`,
    /// `CLIENTS`, `CONFIG`) and returns its rows; read columns by name with
    /// [`SimpleQueryRow::get`].
    pub async fn show(&self, what: &str) -> io::Result<Vec<SimpleQueryRow>> {
        if what.is_empty() || !what.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("SHOW {what:?}: expected a single word such as POOLS or SERVERS"),
            ));
        }
        let messages = self
            .console()
            .await?
            .simple_query(&format!("SHOW {what}"))
            .await
            .map_err(|e| {
                io::Error::other(format!("PgBouncer's console refused SHOW {what}: {e:?}"))
            })?;
        Ok(messages
            .into_iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .collect())
    }

    /// Starts the stopped (or killed) PgBouncer again on the same port and
    /// waits until it accepts connections. Fails if it is already running.
    pub async fn start_again(&self) -> io::Result<()> {
        let mut guard = self.process.lock().await;
        if let Some(child) = guard.as_mut() {
            if child.try_wait()?.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("PgBouncer on port {} is already running", self.port),
                ));
            }
            *guard = None;
        }
        let log_offset = postmaster::log_len(&self.log_path);
        let mut child = self.spawn()?;
        self.pid.store(child.id(), Ordering::SeqCst);
        match self.wait_ready(&mut child).await {
            Ok(()) => {
                *guard = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                self.pid.store(0, Ordering::SeqCst);
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; PgBouncer log:\n{}",
                        postmaster::log_since(&self.log_path, log_offset)
                    ),
                ))
            }
        }
    }

    fn spawn(&self) -> io::Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("could not open {}: {e}", self.log_path.display()),
                )
            })?;
        binaries::chown_to_server_user(&self.log_path)?;
        // In the foreground (no -d) PgBouncer logs to stderr.
        binaries::server_command(&self.binary)?
            .arg(&self.ini_path)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("could not spawn {}: {e}", self.binary.display()),
                )
            })
    }

    /// Waits until the admin console answers (PgBouncer has read its
    /// configuration and listens).
    async fn wait_ready(&self, child: &mut Child) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "PgBouncer exited during startup ({status})"
                )));
            }
            if let Ok(console) = self.console().await {
                if console.simple_query("SHOW VERSION").await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "PgBouncer on port {} did not accept connections within {START_TIMEOUT:?}",
                        self.port
                    ),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Immediate shutdown (SIGTERM, the console's `SHUTDOWN`): clients and
    /// server connections are closed at once, open transactions roll back.
    /// Kills the process if it takes longer than 10 s. No-op when stopped.
    pub async fn stop(&self) -> io::Result<()> {
        self.end(libc::SIGTERM).await
    }

    /// SIGKILLs PgBouncer, like a crash: clients see their connections
    /// reset. No-op when stopped.
    pub async fn kill(&self) -> io::Result<()> {
        self.end(libc::SIGKILL).await
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again): the
    /// same port, the same configuration, empty pools.
    pub async fn restart(&self) -> io::Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    async fn end(&self, sig: libc::c_int) -> io::Result<()> {
        let mut guard = self.process.lock().await;
        let Some(mut child) = guard.take() else {
            return Ok(());
        };
        self.pid.store(0, Ordering::SeqCst);
        let pid = child.id();
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        signal(pid, sig)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        child.kill()?;
        child.wait()?;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("PgBouncer (pid {pid}) did not stop within {STOP_TIMEOUT:?} and was killed"),
        ))
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.get_mut().take() {
            if let Ok(None) = child.try_wait() {
                let _ = signal(child.id(), libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(POLL_INTERVAL);
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        // `self.dir` (a TempDir) then removes the files.
    }
}

/// The `pgbouncer` binary: `$PGBOUNCER`, Debian's `/usr/sbin/pgbouncer`,
/// or the first on `PATH`.
fn find_binary() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os(PGBOUNCER_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{PGBOUNCER_ENV} is set to {} which is not a file",
                    path.display()
                ),
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("pgbouncer"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::iter::once(PathBuf::from(DEFAULT_BINARY))
        .chain(on_path)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no pgbouncer binary: install the pgbouncer package (.ci/run does) or set \
                     {PGBOUNCER_ENV} to its path"
                ),
            )
        })
}

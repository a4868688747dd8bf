//! [`PgCluster`]: a throw-away PostgreSQL server in a temporary directory.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::Mutex;

use crate::binaries;
use crate::ports;
use crate::postmaster::{self, Postmaster, ShutdownMode};
use crate::proxy::FaultProxy;
use crate::tls::{self, TlsFiles};

/// The database superuser every cluster is initialised with.
pub const SUPERUSER: &str = "postgres";

/// `application_name` of the connections opened by [`PgCluster::admin`];
/// [`PgCluster::terminate_all_client_backends`] spares them.
pub const ADMIN_APPLICATION_NAME: &str = "resilient-tx-testkit-admin";

/// Name of the configuration file the test kit owns inside the data directory.
/// `postgresql.conf` includes it at its end, so its settings win over the
/// defaults, and rewriting it (new port, new socket directory) never touches
/// the rest of the configuration.
const TESTKIT_CONF: &str = "resilient_testkit.conf";

/// How long a start may take, including crash recovery.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fast/immediate shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How many ports a first start tries before giving up on "address in use".
const PORT_ATTEMPTS: usize = 5;

/// Settings that make a disposable test server fast and able to stream to
/// replicas.
///
/// `fsync = off` (and `full_page_writes = off`) only matter if the *operating
/// system* crashes, which tests never cause: WAL still reaches the OS page
/// cache at every commit, so a killed server recovers every acknowledged
/// commit. `synchronous_commit` stays `on` on purpose: with `off`, commits
/// are acknowledged while their WAL is still in PostgreSQL's shared memory,
/// and [`PgCluster::kill`] or an immediate stop would lose acknowledged
/// transactions, exactly what the tests of a resilient-transactions library
/// must never see. With `fsync = off` it costs a `write()` per commit, no
/// flush.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "off"),
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("hot_standby", "on"),
    ("max_connections", "200"),
    ("shared_buffers", "32MB"),
    ("logging_collector", "off"),
    ("log_line_prefix", "%m [%p] %q%a "),
];

/// Options for a new cluster; see [`PgCluster::builder`].
#[derive(Debug, Clone, Default)]
pub struct PgClusterBuilder {
    extra_conf: Vec<String>,
    tls: bool,
}

impl PgClusterBuilder {
    /// Adds `name = 'value'` to the server configuration (quoted, so any type
    /// of setting works). Later settings override earlier ones and the test
    /// kit's defaults; `port` and `unix_socket_directories` are always the
    /// test kit's.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.extra_conf
            .push(format!("{name} = '{}'", value.replace('\'', "''")));
        self
    }

    /// Adds a raw line to the server configuration.
    pub fn conf_line(mut self, line: impl Into<String>) -> Self {
        self.extra_conf.push(line.into());
        self
    }

    /// Makes the cluster TLS-only: certificates are generated for it
    /// ([`PgCluster::tls`] names the client's files), the server runs with
    /// `ssl = on`, and `pg_hba.conf` refuses every TCP connection that is not
    /// encrypted. [`CLIENT_CERT_ROLE`](crate::CLIENT_CERT_ROLE) must log in
    /// with the client certificate; every other role is trusted over TLS.
    /// [`PgCluster::url`] stays the same: add `sslmode=...` to it.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Creates, configures and starts the cluster; returns once it accepts
    /// connections.
    pub async fn start(self) -> io::Result<PgCluster> {
        PgCluster::init_and_start(self.extra_conf, self.tls).await
    }
}

/// A PostgreSQL cluster (one server) living in its own temporary directory,
/// listening on 127.0.0.1 at a port of its own.
///
/// Every cluster has its own data directory, port, Unix socket directory and
/// log file, so tests can create any number of them in parallel. Dropping the
/// cluster stops the server immediately and deletes everything, also when the
/// test panics.
///
/// Lifecycle methods take `&self` (a cluster can be shared through an `Arc`
/// while the test restarts it underneath its clients); they are serialised
/// with each other.
#[derive(Debug)]
pub struct PgCluster {
    /// Root of everything; removed when the cluster is dropped, after `Drop`
    /// has stopped the server.
    dir: TempDir,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    extra_conf: Vec<String>,
    /// The client-side certificates of a TLS-only cluster (shared with its
    /// replicas).
    tls: Option<TlsFiles>,
    /// The running server, if any; the mutex serialises lifecycle operations.
    postmaster: Mutex<Option<Postmaster>>,
    /// Pid of the running server (0 when stopped), for the synchronous
    /// [`PgCluster::is_running`].
    pid: AtomicU32,
}

impl PgCluster {
    /// Starts a new cluster with the default configuration.
    pub async fn start() -> io::Result<PgCluster> {
        Self::builder().start().await
    }

    /// A builder for a cluster with extra configuration.
    pub fn builder() -> PgClusterBuilder {
        PgClusterBuilder::default()
    }

    async fn init_and_start(extra_conf: Vec<String>, tls: bool) -> io::Result<PgCluster> {
        let started = Instant::now();
        let mut cluster = Self::new_layout(extra_conf, None)?;

        let mut initdb = binaries::tokio_pg_command("initdb")?;
        initdb
            .arg("-D")
            .arg(&cluster.data_dir)
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        binaries::run(initdb).await?;

        append(
            &cluster.data_dir.join("postgresql.conf"),
            &format!("\n# Added by resilient-tx-testkit.\ninclude '{TESTKIT_CONF}'\n"),
        )?;
        // Trust everything local, including replication, so that replicas and
        // pg_basebackup need no credentials.
        let hba = if tls {
            cluster.tls = Some(TlsFiles::generate(&cluster.data_dir)?);
            tls::pg_hba()
        } else {
            "# Written by resilient-tx-testkit: disposable test server, trust all local access.\n\
             local all         all              trust\n\
             local replication all              trust\n\
             host  all         all 127.0.0.1/32 trust\n\
             host  replication all 127.0.0.1/32 trust\n"
                .to_owned()
        };
        write_owned(&cluster.data_dir.join("pg_hba.conf"), &hba)?;

        cluster.start_on_free_port().await?;
        if tls {
            cluster
                .admin()
                .await?
                .batch_execute(&format!("CREATE ROLE {} LOGIN", tls::CLIENT_CERT_ROLE))
                .await
                .map_err(pg_error)?;
        }
        tracing::info!(
            port = cluster.port,
            tls,
            dir = %cluster.dir.path().display(),
            elapsed = ?started.elapsed(),
            "started PostgreSQL cluster"
        );
        Ok(cluster)
    }

    /// Creates the temporary directory and decides the paths inside it.
    pub(crate) fn new_layout(
        extra_conf: Vec<String>,
        tls: Option<TlsFiles>,
    ) -> io::Result<PgCluster> {
        let dir = binaries::server_temp_dir("resilient-tx-pg-")?;
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir)?;
        binaries::chown_to_server_user(&socket_dir)?;
        Ok(PgCluster {
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("server.log"),
            socket_dir,
            dir,
            port: 0,
            extra_conf,
            tls,
            postmaster: Mutex::new(None),
            pid: AtomicU32::new(0),
        })
    }

    /// Writes the test kit's configuration file for the current port.
    fn write_testkit_conf(&self) -> io::Result<()> {
        let mut conf = String::from(
            "# Written by resilient-tx-testkit; rewritten whenever the port changes.\n",
        );
        for (name, value) in BASE_SETTINGS {
            let _ = writeln!(conf, "{name} = '{value}'");
        }
        if self.tls.is_some() {
            for (name, value) in tls::SERVER_SETTINGS {
                let _ = writeln!(conf, "{name} = '{value}'");
            }
        }
        for line in &self.extra_conf {
            let _ = writeln!(conf, "{line}");
        }
        // Last, so that no extra line can move the server off its own port
        // and socket directory (the last occurrence of a setting wins).
        let _ = writeln!(conf, "port = {}", self.port);
        let _ = writeln!(
            conf,
            "unix_socket_directories = '{}'",
            self.socket_dir.display().to_string().replace('\'', "''")
        );
        write_owned(&self.data_dir.join(TESTKIT_CONF), &conf)
    }

    /// First start of a fresh data directory: picks a port, and picks another
    /// one if somebody grabbed it between the check and the server's bind.
    pub(crate) async fn start_on_free_port(&mut self) -> io::Result<()> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = ports::pick_free_port()?;
            self.write_testkit_conf()?;
            let log_offset = postmaster::log_len(&self.log_path);
            match self.start_again().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = postmaster::log_since(&self.log_path, log_offset);
                    if log.contains("could not bind") || log.contains("already in use") {
                        tracing::debug!(port = self.port, "port taken, trying another one");
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("could not find a free port")))
    }

    /// The TCP port the server listens on (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host and port, e.g. for [`tokio_postgres::Config`].
    pub fn host_port(&self) -> (&'static str, u16) {
        ("127.0.0.1", self.port)
    }

    /// The server's socket address, e.g. as the upstream of a [`FaultProxy`].
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The client-side certificates, when the cluster is TLS-only (see
    /// [`PgClusterBuilder::tls`]).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Connection URL of the `postgres` database as the superuser. A
    /// TLS-only cluster refuses it as it is: add `sslmode=...`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Connection URL of database `dbname` as the superuser.
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Connection URL of the `postgres` database reached through `proxy`
    /// (which must forward to this cluster).
    pub fn url_via(&self, proxy: &FaultProxy) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", proxy.port())
    }

    /// The temporary directory holding everything of this cluster (data
    /// directory, socket directory, log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's log file (all server processes log there).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole server log, for diagnostics in failing tests.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The postmaster's process id, while the server runs (for measuring what its
    /// processes cost, e.g. in benchmarks).
    pub fn server_pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|&pid| pid != 0)
    }

    /// Whether the server process is alive (it may still be starting up or
    /// shutting down).
    pub fn is_running(&self) -> bool {
        let pid = self.pid.load(Ordering::SeqCst);
        pid != 0 && postmaster::is_alive(pid)
    }

    /// Starts the stopped (or killed) server again and waits until it accepts
    /// connections, crash recovery included. Fails if it is already running.
    pub async fn start_again(&self) -> io::Result<()> {
        let mut guard = self.postmaster.lock().await;
        if let Some(pm) = guard.as_mut() {
            if pm.has_exited()?.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("the server on port {} is already running", self.port),
                ));
            }
            *guard = None;
        }
        let started = Instant::now();
        let log_offset = postmaster::log_len(&self.log_path);
        let mut pm = Postmaster::spawn(&self.data_dir, &self.log_path)?;
        self.pid.store(pm.pid(), Ordering::SeqCst);
        match pm.wait_ready(&self.data_dir, START_TIMEOUT).await {
            Ok(()) => {
                tracing::debug!(port = self.port, elapsed = ?started.elapsed(), "server accepts connections");
                *guard = Some(pm);
                Ok(())
            }
            Err(e) => {
                // Do not leave a half-started server behind.
                let _ = pm.kill_tree().await;
                self.pid.store(0, Ordering::SeqCst);
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; server log:\n{}",
                        postmaster::log_since(&self.log_path, log_offset)
                    ),
                ))
            }
        }
    }

    async fn stop(&self, mode: ShutdownMode) -> io::Result<()> {
        let mut guard = self.postmaster.lock().await;
        let started = Instant::now();
        let result = match guard.take() {
            Some(pm) => pm.stop(mode, STOP_TIMEOUT).await,
            None => Ok(()),
        };
        tracing::debug!(port = self.port, ?mode, elapsed = ?started.elapsed(), "server stopped");
        self.pid.store(0, Ordering::SeqCst);
        result
    }

    /// Fast shutdown: open transactions are rolled back, clients are
    /// disconnected, a shutdown checkpoint is written. No-op when stopped.
    pub async fn stop_fast(&self) -> io::Result<()> {
        self.stop(ShutdownMode::Fast).await
    }

    /// Immediate shutdown: every server process quits at once without a
    /// checkpoint; the next start runs crash recovery. No-op when stopped.
    pub async fn stop_immediate(&self) -> io::Result<()> {
        self.stop(ShutdownMode::Immediate).await
    }

    /// [`stop_fast`](Self::stop_fast) then [`start_again`](Self::start_again).
    pub async fn restart_fast(&self) -> io::Result<()> {
        self.stop_fast().await?;
        self.start_again().await
    }

    /// [`stop_immediate`](Self::stop_immediate) then
    /// [`start_again`](Self::start_again).
    pub async fn restart_immediate(&self) -> io::Result<()> {
        self.stop_immediate().await?;
        self.start_again().await
    }

    /// Simulates a crash: SIGKILLs the postmaster and all its children at
    /// once (no shutdown of any kind), and returns when they are all dead.
    /// Clients see their connections reset. Call
    /// [`start_again`](Self::start_again) to run crash recovery. No-op when
    /// stopped.
    pub async fn kill(&self) -> io::Result<()> {
        let mut guard = self.postmaster.lock().await;
        let started = Instant::now();
        let result = match guard.take() {
            Some(pm) => pm.kill_tree().await,
            None => Ok(()),
        };
        tracing::debug!(port = self.port, elapsed = ?started.elapsed(), "server killed");
        self.pid.store(0, Ordering::SeqCst);
        result
    }

    /// Opens a connection as the superuser with the given `application_name`
    /// (visible in `pg_stat_activity`, and the handle for
    /// [`terminate_backends`](Self::terminate_backends)). The connection task
    /// is spawned on the current runtime.
    ///
    /// It goes through the server's Unix socket, which `pg_hba.conf` trusts
    /// on every cluster, so it works whatever TCP demands (a TLS-only
    /// cluster) and whatever a [`FaultProxy`] does to TCP traffic.
    pub async fn connect(&self, application_name: &str) -> io::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres")
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(20),
            config.connect(tokio_postgres::NoTls),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to the server on port {} through its socket in {} took over 20 s",
                    self.port,
                    self.socket_dir.display()
                ),
            )
        })?
        .map_err(|e| {
            io::Error::other(format!(
                "could not connect to the server on port {} through its socket in {}: {e}",
                self.port,
                self.socket_dir.display()
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "test kit connection ended");
            }
        });
        Ok(client)
    }

    /// A superuser connection for setup and inspection queries.
    pub async fn admin(&self) -> io::Result<tokio_postgres::Client> {
        self.connect(ADMIN_APPLICATION_NAME).await
    }

    /// Terminates every backend whose `application_name` is
    /// `application_name` and waits (up to 5 s each) until they have exited;
    /// returns how many were terminated. Their clients get an error on their
    /// next use of the connection.
    pub async fn terminate_backends(&self, application_name: &str) -> io::Result<u64> {
        let admin = self.admin().await?;
        let row = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
                 FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&application_name],
            )
            .await
            .map_err(pg_error)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Terminates every client backend except the test kit's own
    /// [`admin`](Self::admin) connections, waiting until they have exited;
    /// returns how many were terminated.
    pub async fn terminate_all_client_backends(&self) -> io::Result<u64> {
        let admin = self.admin().await?;
        let row = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
                 FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' \
                   AND application_name <> $1 AND pid <> pg_backend_pid()",
                &[&ADMIN_APPLICATION_NAME],
            )
            .await
            .map_err(pg_error)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    pub(crate) fn extra_conf(&self) -> &[String] {
        &self.extra_conf
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(pm) = self.postmaster.get_mut().take() {
            pm.stop_blocking();
        }
        // `self.dir` (a TempDir) then removes the directory tree.
    }
}

/// Turns a driver error into an `io::Error` keeping its message.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> io::Error {
    io::Error::other(format!("PostgreSQL error: {e}"))
}

/// Appends `text` to the file at `path`.
pub(crate) fn append(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("could not open {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
}

/// Writes `contents` to `path` and gives the file to the server user.
pub(crate) fn write_owned(path: &Path, contents: &str) -> io::Result<()> {
    std::fs::write(path, contents).map_err(|e| {
        io::Error::new(e.kind(), format!("could not write {}: {e}", path.display()))
    })?;
    binaries::chown_to_server_user(path)
}

//! What a [`PgBouncer`](crate::PgBouncer) is configured with
//! ([`PgBouncerBuilder`], [`PoolMode`]) and the files written from it: the
//! ini and the auth file.
//!
//! Only what the lab needs is set (addresses, files, authentication, pool
//! mode and size); everything else, `server_reset_query`,
//! `server_login_retry`, timeouts, is PgBouncer's default unless a test sets
//! it with [`PgBouncerBuilder::setting`].

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::cluster::{PgCluster, SUPERUSER, write_owned};
use crate::proxy::FaultProxy;
use crate::tls::TlsFiles;

/// Settings only the test kit may set: each instance listens on a loopback
/// port of its own and on no Unix socket.
const OWNED_SETTINGS: &[&str] = &["listen_addr", "listen_port", "unix_socket_dir"];

/// When PgBouncer gives a server connection back to the pool
/// (`pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// When the client disconnects: a client keeps one server connection.
    Session,
    /// After each transaction (or each statement outside a transaction): the
    /// next one may run on another server connection. Named prepared
    /// statements and session state do not follow the client.
    #[default]
    Transaction,
    /// After each statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// The value of `pool_mode` in the ini.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Options of a new [`PgBouncer`](crate::PgBouncer); see
/// [`PgBouncer::builder`](crate::PgBouncer::builder).
#[derive(Debug, Clone)]
pub struct PgBouncerBuilder {
    pub(crate) upstream_port: u16,
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) pool_mode: PoolMode,
    pub(crate) pool_size: Option<u32>,
    pub(crate) users: Vec<String>,
    pub(crate) settings: Vec<(String, String)>,
}

impl PgBouncerBuilder {
    pub(crate) fn new(cluster: &PgCluster) -> PgBouncerBuilder {
        PgBouncerBuilder {
            upstream_port: cluster.port(),
            tls: cluster.tls().cloned(),
            pool_mode: PoolMode::default(),
            pool_size: None,
            users: vec![SUPERUSER.to_owned()],
            settings: Vec::new(),
        }
    }

    /// The pool mode (default: [`PoolMode::Transaction`], the one whose
    /// hazards matter to resilient-tx; PgBouncer's own default is session).
    pub fn pool_mode(mut self, mode: PoolMode) -> Self {
        self.pool_mode = mode;
        self
    }

    /// Server connections per database and user (`default_pool_size`;
    /// PgBouncer's default is 20). Clients beyond it wait for a free one.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Lets role `name` log in too (PgBouncer's `trust` authentication still
    /// wants every user listed; the superuser always is). The role must
    /// exist on the cluster.
    pub fn user(mut self, name: &str) -> Self {
        self.users.push(name.to_owned());
        self
    }

    /// Connects to the cluster through `proxy` (which must forward to it)
    /// instead of directly, so tests can break the link between PgBouncer and
    /// the server.
    pub fn via(mut self, proxy: &FaultProxy) -> Self {
        self.upstream_port = proxy.port();
        self
    }

    /// Sets `name = value` in the `[pgbouncer]` section, after (and so over)
    /// the test kit's settings, e.g. `("server_login_retry", "1")` or
    /// `("ignore_startup_parameters", "options")`; setting a name again
    /// replaces its value. The listening address and port are the test
    /// kit's.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.retain(|(own, _)| own != name);
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Checks names and values before anything is written: a newline or a
    /// stray character would change the meaning of the ini or auth file.
    pub(crate) fn validate(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.pool_size == Some(0) {
            return invalid("PgBouncer pool_size must be at least 1".to_owned());
        }
        for user in &self.users {
            if user.is_empty() || user.contains(['"', '\n', '\r', '\0']) {
                return invalid(format!(
                    "PgBouncer user name {user:?} is empty or contains a quote or line break"
                ));
            }
        }
        for (name, value) in &self.settings {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return invalid(format!(
                    "PgBouncer setting name {name:?} must be letters, digits and underscores"
                ));
            }
            if OWNED_SETTINGS.contains(&name.as_str()) {
                return invalid(format!(
                    "PgBouncer setting {name} belongs to the test kit (it picks the address and port)"
                ));
            }
            if value.contains(['\n', '\r', '\0']) {
                return invalid(format!(
                    "the value of PgBouncer setting {name} has a line break"
                ));
            }
        }
        Ok(())
    }

    /// Writes the auth file and returns the ini for `port`.
    pub(crate) fn write_files(&self, dir: &Path, port: u16) -> io::Result<String> {
        let auth_file = dir.join("users.txt");
        let mut users = String::new();
        for user in &self.users {
            // Trust authentication ignores the password; the user must be listed.
            let _ = writeln!(users, "\"{user}\" \"\"");
        }
        write_owned(&auth_file, &users)?;

        let mut ini = String::from("; Written by resilient-tx-testkit.\n[databases]\n");
        let _ = writeln!(ini, "* = host=127.0.0.1 port={}", self.upstream_port);
        ini.push_str("\n[pgbouncer]\n");
        let mut kit = vec![
            ("listen_addr", "127.0.0.1".to_owned()),
            ("listen_port", port.to_string()),
            // No Unix socket: the default directory (/tmp) is shared by every
            // instance on the machine.
            ("unix_socket_dir", String::new()),
            ("auth_type", "trust".to_owned()),
            ("auth_file", auth_file.display().to_string()),
            ("admin_users", SUPERUSER.to_owned()),
            ("pool_mode", self.pool_mode.as_str().to_owned()),
        ];
        if let Some(size) = self.pool_size {
            kit.push(("default_pool_size", size.to_string()));
        }
        if let Some(tls) = &self.tls {
            // The cluster refuses plain text; verify it like a careful
            // client would (its certificate names 127.0.0.1).
            kit.push(("server_tls_sslmode", "verify-full".to_owned()));
            kit.push(("server_tls_ca_file", tls.ca_cert().display().to_string()));
        }
        // Each name once: a test's own setting replaces the kit's.
        for (name, value) in &kit {
            if !self.settings.iter().any(|(own, _)| own == name) {
                let _ = writeln!(ini, "{name} = {value}");
            }
        }
        for (name, value) in &self.settings {
            let _ = writeln!(ini, "{name} = {value}");
        }
        Ok(ini)
    }
}

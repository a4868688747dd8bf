//! The instances of an [`AutoFailoverFormation`]: the monitor and the
//! PostgreSQL nodes, each a data directory run by a `pg_autoctl` of its own.
//!
//! [`AutoFailoverFormation`]: crate::AutoFailoverFormation

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::binaries;
use crate::cluster::SUPERUSER;
use crate::daemon_slot::DaemonSlot;
use crate::pg_autoctl::PgAutoctl;

/// Server settings of every instance, in `postgresql.auto.conf`. Same trade
/// as [`PgCluster`](crate::PgCluster)'s (only an OS crash could lose data);
/// `checkpoint_completion_target = 0` makes the checkpoint `pg_basebackup`
/// requests immediate instead of paced over seconds.
const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("shared_buffers", "32MB"),
    ("effective_cache_size", "256MB"),
    ("maintenance_work_mem", "32MB"),
    ("work_mem", "4MB"),
    ("fsync", "off"),
    ("synchronous_commit", "on"),
    ("checkpoint_completion_target", "0"),
    ("max_connections", "200"),
    ("logging_collector", "off"),
    ("log_line_prefix", "%m [%p] %q%a "),
];

/// One PostgreSQL instance run by `pg_autoctl` (a node or the monitor).
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) data_dir: PathBuf,
    /// `pg_autoctl`, with the PostgreSQL it runs.
    pub(crate) daemon: DaemonSlot,
}

impl Instance {
    /// An instance named `name` with its data directory and log in `root`.
    pub(crate) fn new(root: &Path, name: &str, index: usize, port: u16) -> Instance {
        let data_dir = root.join(name);
        let daemon = DaemonSlot::new(
            &format!("pg_autoctl of {name}"),
            &root.join(format!("{name}.log")),
            Some(&data_dir),
        );
        Instance {
            index,
            name: name.to_owned(),
            port,
            data_dir,
            daemon,
        }
    }

    /// Runs `initdb` and writes the kit's settings, then `extra`, into
    /// `postgresql.auto.conf`.
    pub(crate) async fn init(&self, extra: &[(String, String)]) -> io::Result<()> {
        let mut initdb = binaries::tokio_pg_command("initdb")?;
        initdb.arg("-D").arg(&self.data_dir).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        binaries::run(initdb).await?;
        let mut conf = String::from("# Written by resilient-tx-testkit (ALTER SYSTEM keeps it).\n");
        let settings = SERVER_SETTINGS
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .chain(extra.iter().cloned());
        for (name, value) in settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        crate::cluster::write_owned(&self.data_dir.join("postgresql.auto.conf"), &conf)
    }

    /// Starts `pg_autoctl` with `args` for this instance.
    pub(crate) fn spawn(&self, autoctl: &PgAutoctl, args: Vec<OsString>) -> io::Result<()> {
        self.daemon.spawn(autoctl.command(args)?)
    }

    /// The log of its `pg_autoctl` and PostgreSQL.
    pub(crate) fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }
}

/// A PostgreSQL node of an [`AutoFailoverFormation`](crate::AutoFailoverFormation).
#[derive(Debug)]
pub struct AutoFailoverNode {
    pub(crate) instance: Instance,
}

impl AutoFailoverNode {
    /// Index of the node in its formation.
    pub fn index(&self) -> usize {
        self.instance.index
    }

    /// pg_auto_failover's node name, `node<index>`.
    pub fn name(&self) -> &str {
        &self.instance.name
    }

    /// PostgreSQL's port.
    pub fn port(&self) -> u16 {
        self.instance.port
    }

    /// Connection URL of this node's `postgres` database as the superuser.
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/postgres",
            self.instance.port
        )
    }

    /// The PostgreSQL data directory.
    pub fn data_dir(&self) -> &Path {
        &self.instance.data_dir
    }

    /// The log of this node's `pg_autoctl` and of its PostgreSQL.
    pub fn log_path(&self) -> &Path {
        self.instance.log_path()
    }

    /// Whether the node's `pg_autoctl` runs.
    pub fn is_running(&self) -> bool {
        self.instance.daemon.is_running()
    }
}

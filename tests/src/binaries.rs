//! Locating the PostgreSQL server binaries and running them as the right OS user.
//!
//! PostgreSQL refuses to run as root (`initdb`, `postgres` and friends exit with
//! "cannot be run as root"). Test machines and CI containers often run as root,
//! so when the effective uid is 0 every server binary is started with the uid and
//! gid of the `postgres` OS user (which the distribution packages create). Plain
//! users run the binaries as themselves.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Environment variable that, when set, names the directory holding `initdb`,
/// `postgres`, `pg_ctl` and `pg_basebackup`; it wins over every other lookup.
pub const PG_BINDIR_ENV: &str = "PG_BINDIR";

/// The OS user that runs the server binaries when the test process is root.
pub const POSTGRES_OS_USER: &str = "postgres";

/// Numeric identity of an OS user, as needed by `Command::uid`/`Command::gid`
/// and `chown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Returns the directory holding the PostgreSQL server binaries.
///
/// Lookup order: `$PG_BINDIR`, then `pg_config --bindir`, then the Debian/Ubuntu
/// layout `/usr/lib/postgresql/<major>/bin`, newest major version first. The
/// result is computed once per process.
pub fn bindir() -> io::Result<PathBuf> {
    static BINDIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINDIR
        .get_or_init(|| find_bindir().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn find_bindir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        return if has_server_binaries(&dir) {
            Ok(dir)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{PG_BINDIR_ENV} is set to {} but that directory has no initdb/postgres",
                    dir.display()
                ),
            ))
        };
    }

    // `pg_config` may belong to a client-only package (libpq-dev) whose bindir
    // has no server binaries, so its answer is only taken when it checks out.
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server_binaries(&dir) {
            return Ok(dir);
        }
    }

    // Debian/Ubuntu install every major version side by side; prefer the newest.
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path().join("bin");
            has_server_binaries(&dir).then_some((major, dir))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no PostgreSQL server binaries found: set {PG_BINDIR_ENV}, put pg_config on PATH, \
                 or install the server package (e.g. postgresql-15)"
            ),
        )
    })
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// Full path of the PostgreSQL binary `name` (e.g. `"pg_ctl"`).
pub fn binary(name: &str) -> io::Result<PathBuf> {
    let path = bindir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("PostgreSQL binary {} does not exist", path.display()),
        ))
    }
}

/// Whether this process runs with effective uid 0.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The identity server binaries must run as: `Some(postgres user)` when this
/// process is root, `None` (run as ourselves) otherwise.
pub fn server_user() -> io::Result<Option<OsUser>> {
    Ok(server_account()?.map(|(user, _)| user))
}

/// The server user and its home directory, when this process is root.
fn server_account() -> io::Result<Option<(OsUser, PathBuf)>> {
    if !running_as_root() {
        return Ok(None);
    }
    static USER: OnceLock<Result<(OsUser, PathBuf), String>> = OnceLock::new();
    USER.get_or_init(|| lookup_user(POSTGRES_OS_USER).map_err(|e| e.to_string()))
        .clone()
        .map(Some)
        .map_err(io::Error::other)
}

/// Looks a user and its home directory up through NSS (`getent passwd`), so
/// it works with any user database, not just `/etc/passwd`.
fn lookup_user(name: &str) -> io::Result<(OsUser, PathBuf)> {
    let out = Command::new("getent").args(["passwd", name]).output()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (out.status.success(), fields.get(2), fields.get(3)) {
        (true, Some(uid), Some(gid)) => Ok((
            OsUser {
                uid: uid.parse().map_err(io::Error::other)?,
                gid: gid.parse().map_err(io::Error::other)?,
            },
            PathBuf::from(fields.get(5).copied().unwrap_or("/")),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "running as root, but there is no `{name}` OS user to run PostgreSQL as \
                 (PostgreSQL refuses to run as root)"
            ),
        )),
    }
}

/// Gives `path` to the server user when running as root, so the server can
/// write there. A no-op for non-root users.
pub fn chown_to_server_user(path: &Path) -> io::Result<()> {
    match server_user()? {
        Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "could not chown {} to the postgres user: {e}",
                    path.display()
                ),
            )
        }),
        None => Ok(()),
    }
}

/// Creates a temporary directory (mode 0700) in `$TMPDIR` that belongs to
/// the server user, for a server's files; it is removed when the returned
/// [`TempDir`](tempfile::TempDir) is dropped.
pub fn server_temp_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;

    let base = std::env::temp_dir();
    if running_as_root() {
        // The postgres user has to reach its directory inside `base`.
        let mode = std::fs::metadata(&base)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the temporary directory {} is not traversable by the postgres user; \
                     point TMPDIR at a world-traversable directory such as /tmp",
                    base.display()
                ),
            ));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "could not create a temporary directory in {}: {e}",
                    base.display()
                ),
            )
        })?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    chown_to_server_user(dir.path())?;
    Ok(dir)
}

/// A [`Command`] for the PostgreSQL binary `name`, switched to the postgres OS
/// user when this process is root.
///
/// The switch uses `Command::uid`/`gid`, which makes the child exec the binary
/// directly (no `su`/`runuser` in between), so the child's pid is the server's
/// pid; std also drops root's supplementary groups. Stdin is `/dev/null`.
pub fn pg_command(name: &str) -> io::Result<Command> {
    server_command(&binary(name)?)
}

/// A [`Command`] for the server-side program at `program` (PostgreSQL's or
/// another one that refuses to run as root, such as PgBouncer), run as the
/// postgres OS user when this process is root, like [`pg_command`].
///
/// `HOME` is the user's own: libpq looks for `~/.postgresql/postgresql.crt`
/// and friends there, and fails the connection when root's home is not
/// readable.
pub fn server_command(program: &Path) -> io::Result<Command> {
    use std::os::unix::process::CommandExt;

    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    if let Some((user, home)) = server_account()? {
        cmd.uid(user.uid).gid(user.gid).env("HOME", home);
        // The tool may chdir-check its cwd (initdb warns when it cannot); the
        // root of the filesystem is readable by everybody.
        cmd.current_dir("/");
    }
    Ok(cmd)
}

/// Async version of [`pg_command`].
pub fn tokio_pg_command(name: &str) -> io::Result<tokio::process::Command> {
    Ok(tokio::process::Command::from(pg_command(name)?))
}

/// Runs `cmd` to completion and turns a non-zero exit into an error that
/// carries the command line, the exit status and the command's stderr.
pub async fn run(mut cmd: tokio::process::Command) -> io::Result<Output> {
    let description = describe(cmd.as_std().get_program(), cmd.as_std().get_args());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd
        .output()
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("could not run {description}: {e}")))?;
    check(&description, out)
}

/// Blocking version of [`run`], for contexts without a runtime (e.g. `Drop`).
pub fn run_blocking(mut cmd: Command) -> io::Result<Output> {
    let description = describe(cmd.get_program(), cmd.get_args());
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("could not run {description}: {e}")))?;
    check(&description, out)
}

fn check(description: &str, out: Output) -> io::Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{description} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn describe<'a>(program: &OsStr, args: impl Iterator<Item = &'a OsStr>) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for arg in args {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

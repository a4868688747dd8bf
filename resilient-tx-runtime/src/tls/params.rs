//! libpq's TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`): taken out of
//! a connection string, checked against libpq's rules, and turned into what the
//! connector and the connecting code need.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` and rejects the other keys,
//! so the connection string it parses gets the nearest mode it knows, and the rest of
//! the parse stays its own.
//!
//! Where this differs from libpq, on purpose:
//! - No defaults from the home directory (`~/.postgresql/root.crt`,
//!   `postgresql.crt`, `postgresql.key`) and none from `PGSSLMODE` and friends: a
//!   service's trust should be visible in its configuration. So `verify-ca` and
//!   `verify-full` need an explicit `sslrootcert`, and a client certificate needs both
//!   `sslcert` and `sslkey`.
//! - A file that is named but cannot be read is an error in every mode; libpq skips a
//!   missing root or client certificate file silently unless the mode needs it.
//! - `sslrootcert=system` follows libpq 16: the platform's trusted roots, `sslmode`
//!   defaults to `verify-full`, and any other mode is an error. (A file called `system`
//!   is written `./system`, as in libpq.)

use std::fmt;
use std::path::PathBuf;

use tokio_postgres::config::{Host, SslMode as PgSslMode};

use super::conninfo::ConnInfo;
use crate::error::TxError;

/// The keys taken out of the connection string.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plain text only.
    Disable,
    /// Plain text first; TLS when the server refuses plain text.
    Allow,
    /// TLS first; plain text when the server does not offer TLS (the default).
    Prefer,
    /// TLS or nothing; the certificate is checked only when `sslrootcert` is given.
    Require,
    /// TLS, and the server's certificate chain must lead to a CA of `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The name used in connection strings.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, TxError> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == value)
            .ok_or_else(|| {
                TxError::config(format!(
                    "invalid sslmode value '{value}': expected disable, allow, prefer, \
                     require, verify-ca or verify-full"
                ))
            })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the CA certificates that vouch for the server come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCerts {
    /// A file of PEM certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the platform's trusted roots.
    System,
}

impl fmt::Display for RootCerts {
    /// How messages name the source: `sslrootcert 'path'` or `sslrootcert=system`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCerts::File(path) => write!(f, "sslrootcert '{}'", path.display()),
            RootCerts::System => f.write_str("sslrootcert=system (the platform's trusted roots)"),
        }
    }
}

/// The client certificate presented to the server (`sslcert` + `sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCert {
    /// PEM file of the certificate, optionally followed by its intermediates.
    pub(crate) cert: PathBuf,
    /// PEM file of the private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub(crate) key: PathBuf,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verification {
    /// Encrypt, accept any certificate (the handshake signatures are still checked, so
    /// the server holds the certificate's key, but anyone may have made it).
    None,
    /// The chain must lead to a trusted CA; any host name.
    Chain,
    /// The chain, and the certificate must name the host (DNS name or IP address).
    ChainAndHostName,
}

/// The TLS settings of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsParams {
    mode: SslMode,
    root_certs: Option<RootCerts>,
    client_cert: Option<ClientCert>,
}

/// Takes libpq's TLS parameters out of `conninfo` (URI or key=value form).
///
/// Returns the connection string without them and with an `sslmode` tokio-postgres
/// accepts (the mode of the first connect attempt, see [`TlsParams::first_mode`]), and
/// the parameters. Errors are [`ErrorKind::Config`](crate::error::ErrorKind) and never
/// contain a password or the connection string; the returned string still holds the
/// password, so it must not be logged either.
pub(crate) fn split_tls_params(conninfo: &str) -> Result<(String, TlsParams), TxError> {
    let info = ConnInfo::parse(conninfo)?;
    let mut mode = None;
    let mut root_certs = None;
    let mut cert = None;
    let mut key = None;
    for param in info.params() {
        // The last occurrence wins, as in libpq.
        match param.key.as_str() {
            "sslmode" => mode = Some(SslMode::parse(&param.value()?)?),
            "sslrootcert" => root_certs = non_empty(param.value()?),
            "sslcert" => cert = non_empty(param.value()?),
            "sslkey" => key = non_empty(param.value()?),
            _ => {}
        }
    }
    let root_certs = root_certs.map(|value| match value.as_str() {
        "system" => RootCerts::System,
        _ => RootCerts::File(PathBuf::from(value)),
    });
    let params = TlsParams::new(mode, root_certs, cert, key)?;
    let rest = info.rewrite(
        |key| TLS_KEYS.contains(&key),
        "sslmode",
        pg_mode_name(params.first_mode()),
    );
    Ok((rest, params))
}

/// libpq treats an empty value as not given.
fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn pg_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Require => "require",
        // `SslMode` is non-exhaustive; `first_mode` only ever returns these three.
        _ => "prefer",
    }
}

impl TlsParams {
    /// Checks libpq's rules; `mode` is `None` when the connection string has no sslmode.
    fn new(
        mode: Option<SslMode>,
        root_certs: Option<RootCerts>,
        cert: Option<String>,
        key: Option<String>,
    ) -> Result<TlsParams, TxError> {
        let mode = match (mode, &root_certs) {
            (None, Some(RootCerts::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
            (Some(SslMode::VerifyFull), _) => SslMode::VerifyFull,
            (Some(weaker), Some(RootCerts::System)) => {
                return Err(TxError::config(format!(
                    "sslmode={weaker} may not be used with sslrootcert=system: the \
                     platform's roots vouch for host names, use sslmode=verify-full"
                )));
            }
            (Some(mode), _) => mode,
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_certs.is_none() {
            return Err(TxError::config(format!(
                "sslmode={mode} needs sslrootcert: a file of CA certificates (PEM), or \
                 'system' for the platform's trusted roots"
            )));
        }
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(TxError::config(format!(
                    "sslcert '{cert}' is given without sslkey: a client certificate needs \
                     its private key file too"
                )));
            }
            (None, Some(key)) => {
                return Err(TxError::config(format!(
                    "sslkey '{key}' is given without sslcert: a client key needs its \
                     certificate file too"
                )));
            }
        };
        Ok(TlsParams {
            mode,
            root_certs,
            client_cert,
        })
    }

    /// The mode as given (or its default).
    pub(crate) fn mode(&self) -> SslMode {
        self.mode
    }

    /// The CA certificates the server's chain is checked against, if any.
    pub(crate) fn root_certs(&self) -> Option<&RootCerts> {
        self.root_certs.as_ref()
    }

    /// The client certificate, if any.
    pub(crate) fn client_cert(&self) -> Option<&ClientCert> {
        self.client_cert.as_ref()
    }

    /// How much of the server's certificate a TLS connection checks.
    ///
    /// As libpq does (with OpenSSL, once a root certificate is loaded the chain is
    /// verified whatever the mode), a given `sslrootcert` makes `allow`, `prefer` and
    /// `require` check the chain: libpq documents it for `require` ("behaves like
    /// verify-ca").
    pub(crate) fn verification(&self) -> Verification {
        match (self.mode, &self.root_certs) {
            (SslMode::VerifyFull, _) => Verification::ChainAndHostName,
            (SslMode::VerifyCa, _) | (_, Some(_)) => Verification::Chain,
            (_, None) => Verification::None,
        }
    }

    /// Whether a connection may use TLS at all (every mode but `disable`).
    pub(crate) fn may_use_tls(&self) -> bool {
        self.mode != SslMode::Disable
    }

    /// The tokio-postgres mode of the first connect attempt to a TCP host: `allow` starts
    /// in plain text, `prefer` is tokio-postgres' own, the others insist on TLS.
    pub(crate) fn first_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable | SslMode::Allow => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        }
    }

    /// [`first_mode`](Self::first_mode) for one host: libpq never asks for TLS over a
    /// Unix-domain socket (the server would answer that it has none), whatever the mode.
    pub(crate) fn first_mode_for(&self, host: &Host) -> PgSslMode {
        match host {
            Host::Tcp(_) => self.first_mode(),
            #[cfg(unix)]
            Host::Unix(_) => PgSslMode::Disable,
        }
    }

    /// The mode of libpq's second attempt, for the modes that have one: `allow` tries
    /// TLS after the server refused plain text, `prefer` tries plain text after TLS
    /// failed or was refused. [`fallback_after`](super::fallback_after) says whether a
    /// given connect error calls for it.
    pub(crate) fn fallback(&self) -> Option<PgSslMode> {
        match self.mode {
            SslMode::Allow => Some(PgSslMode::Require),
            SslMode::Prefer => Some(PgSslMode::Disable),
            _ => None,
        }
    }

    /// The root certificate file (`None` for none or `system`).
    #[cfg(test)]
    pub(crate) fn root_cert_file(&self) -> Option<&std::path::Path> {
        match &self.root_certs {
            Some(RootCerts::File(path)) => Some(path),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn split(conninfo: &str) -> (String, TlsParams) {
        split_tls_params(conninfo).expect("valid")
    }

    fn error(conninfo: &str) -> String {
        split_tls_params(conninfo)
            .err()
            .map(|e| {
                assert_eq!(e.kind(), crate::error::ErrorKind::Config);
                e.to_string()
            })
            .expect("an error")
    }

    /// The rewritten string must be one tokio-postgres parses, with the given mode.
    fn pg_mode(rest: &str) -> PgSslMode {
        rest.parse::<tokio_postgres::Config>()
            .expect("tokio-postgres accepts the rest")
            .get_ssl_mode()
    }

    #[test]
    fn uri_form_loses_its_tls_keys_and_keeps_the_rest() {
        let (rest, tls) = split(
            "postgres://user:pw@h1:5432,h2/db?sslmode=verify-full&sslrootcert=/path/ca.pem\
             &target_session_attrs=read-write",
        );
        assert_eq!(
            rest,
            "postgres://user:pw@h1:5432,h2/db?target_session_attrs=read-write&sslmode=require"
        );
        assert_eq!(tls.mode(), SslMode::VerifyFull);
        assert_eq!(
            tls.root_certs(),
            Some(&RootCerts::File("/path/ca.pem".into()))
        );
        assert_eq!(tls.verification(), Verification::ChainAndHostName);
        let config: tokio_postgres::Config = rest.parse().expect("parses");
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
        assert_eq!(config.get_hosts().len(), 2);
        assert_eq!(
            config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }

    #[test]
    fn key_value_form_with_quotes_and_escapes() {
        let (rest, tls) = split(
            r"host=h1,h2 sslmode=require sslrootcert='/path with space/ca.pem' user=app password=a\ b",
        );
        assert_eq!(rest, r"sslmode=require host=h1,h2 user=app password=a\ b");
        assert_eq!(tls.mode(), SslMode::Require);
        assert_eq!(
            tls.root_cert_file(),
            Some(Path::new("/path with space/ca.pem"))
        );
        let config: tokio_postgres::Config = rest.parse().expect("parses");
        assert_eq!(config.get_password(), Some(&b"a b"[..]));
        assert_eq!(config.get_user(), Some("app"));
    }

    #[test]
    fn uri_values_are_percent_decoded() {
        let (_, tls) = split(
            "postgresql://h/db?sslmode=verify-ca&sslrootcert=%2Fa%20b%2Fca.pem\
             &sslcert=c%2Bd.pem&sslkey=%2Fk.pem",
        );
        assert_eq!(tls.root_cert_file(), Some(Path::new("/a b/ca.pem")));
        assert_eq!(
            tls.client_cert(),
            Some(&ClientCert {
                cert: "c+d.pem".into(),
                key: "/k.pem".into()
            })
        );
    }

    #[test]
    fn default_is_prefer_and_each_mode_maps_to_what_tokio_postgres_knows() {
        let (rest, tls) = split("host=h user=u");
        assert_eq!(tls.mode(), SslMode::Prefer);
        assert_eq!(tls.verification(), Verification::None);
        assert_eq!(pg_mode(&rest), PgSslMode::Prefer);
        for (mode, first, fallback) in [
            ("disable", PgSslMode::Disable, None),
            ("allow", PgSslMode::Disable, Some(PgSslMode::Require)),
            ("prefer", PgSslMode::Prefer, Some(PgSslMode::Disable)),
            ("require", PgSslMode::Require, None),
        ] {
            let (rest, tls) = split(&format!("postgres://h/db?sslmode={mode}"));
            assert_eq!(tls.mode().as_str(), mode);
            assert_eq!(pg_mode(&rest), first, "{mode}");
            assert_eq!(tls.first_mode(), first, "{mode}");
            assert_eq!(tls.fallback(), fallback, "{mode}");
            assert_eq!(tls.verification(), Verification::None, "{mode}");
            assert_eq!(tls.may_use_tls(), mode != "disable");
        }
        for mode in ["verify-ca", "verify-full"] {
            let (rest, tls) = split(&format!("sslmode={mode} sslrootcert=ca.pem"));
            assert_eq!(pg_mode(&rest), PgSslMode::Require, "{mode}");
            assert_eq!(tls.fallback(), None);
        }
    }

    #[test]
    fn the_last_occurrence_wins() {
        let (rest, tls) = split("sslmode=disable sslmode=require host=h");
        assert_eq!(tls.mode(), SslMode::Require);
        assert_eq!(pg_mode(&rest), PgSslMode::Require);
    }

    #[test]
    fn unknown_sslmode_names_the_valid_ones() {
        let message = error("postgres://u:secret@h/db?sslmode=verify_full");
        assert!(message.contains("'verify_full'"), "{message}");
        assert!(
            message.contains("disable, allow, prefer, require, verify-ca or verify-full"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
        assert!(error("sslmode=Require").contains("'Require'"));
        // Unlike the file parameters, an empty sslmode is not "not given" in libpq.
        assert!(error("sslmode='' host=h").contains("invalid sslmode value ''"));
    }

    #[test]
    fn a_root_certificate_makes_weaker_modes_check_the_chain() {
        for mode in ["allow", "prefer", "require", "verify-ca"] {
            let (_, tls) = split(&format!("sslmode={mode} sslrootcert=ca.pem"));
            assert_eq!(tls.verification(), Verification::Chain, "{mode}");
        }
        let (_, tls) = split("sslmode=disable sslrootcert=ca.pem");
        assert!(!tls.may_use_tls());
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        for mode in ["verify-ca", "verify-full"] {
            let message = error(&format!("host=h sslmode={mode}"));
            assert!(
                message.contains(&format!("sslmode={mode} needs sslrootcert")),
                "{message}"
            );
            // An empty value counts as not given.
            let message = error(&format!("postgres://h/db?sslmode={mode}&sslrootcert="));
            assert!(message.contains("needs sslrootcert"), "{message}");
        }
    }

    #[test]
    fn system_roots_default_to_and_require_verify_full() {
        let (rest, tls) = split("host=h sslrootcert=system");
        assert_eq!(tls.mode(), SslMode::VerifyFull);
        assert_eq!(tls.root_certs(), Some(&RootCerts::System));
        assert_eq!(tls.root_cert_file(), None);
        assert_eq!(pg_mode(&rest), PgSslMode::Require);
        let (_, tls) = split("host=h sslrootcert=system sslmode=verify-full");
        assert_eq!(tls.verification(), Verification::ChainAndHostName);
        for weaker in ["disable", "allow", "prefer", "require", "verify-ca"] {
            let message = error(&format!("host=h sslrootcert=system sslmode={weaker}"));
            assert!(
                message.contains(&format!(
                    "sslmode={weaker} may not be used with sslrootcert=system"
                )),
                "{message}"
            );
        }
        // A file named system is written as a path.
        let (_, tls) = split("sslrootcert=./system sslmode=verify-ca");
        assert_eq!(tls.root_cert_file(), Some(Path::new("./system")));
    }

    #[test]
    fn client_certificate_needs_both_files() {
        let (_, tls) = split("host=h sslcert=c.pem sslkey=k.pem");
        assert_eq!(
            tls.client_cert(),
            Some(&ClientCert {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        let message = error("host=h sslcert=c.pem");
        assert!(
            message.contains("sslcert 'c.pem' is given without sslkey"),
            "{message}"
        );
        let message = error("postgres://h/db?sslkey=k.pem");
        assert!(
            message.contains("sslkey 'k.pem' is given without sslcert"),
            "{message}"
        );
    }

    #[test]
    fn syntax_errors_are_config_errors_without_the_password() {
        let message = error("host=h password='secret");
        assert!(
            message.starts_with("invalid connection string"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn unix_socket_hosts_never_ask_for_tls() {
        let (_, tls) = split("sslmode=require sslrootcert=ca.pem");
        assert_eq!(
            tls.first_mode_for(&Host::Unix("/run/postgresql".into())),
            PgSslMode::Disable
        );
        assert_eq!(
            tls.first_mode_for(&Host::Tcp("db".into())),
            PgSslMode::Require
        );
    }

    #[test]
    fn other_libpq_keys_are_left_to_tokio_postgres() {
        let (rest, _) = split("host=h sslmode=require sslcrl=crl.pem");
        let error = rest
            .parse::<tokio_postgres::Config>()
            .expect_err("tokio-postgres rejects sslcrl");
        let source = std::error::Error::source(&error).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("unknown option `sslcrl`"));
    }
}

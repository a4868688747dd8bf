//! Certificates of a TLS-only [`PgCluster`](crate::PgCluster), generated at
//! run time (nothing is checked in), and the server configuration that
//! demands TLS on every TCP connection.
//!
//! One generation makes a certificate authority, a server certificate signed
//! by it for `localhost` and `127.0.0.1`, a client certificate for
//! [`CLIENT_CERT_ROLE`] (the role that must log in with it), and a second,
//! unrelated authority for "untrusted CA" tests. The server's files go into
//! the data directory under the names PostgreSQL looks for by default, so a
//! base backup carries them to replicas; the client's files go into a
//! directory of their own ([`TlsFiles`]), shared by a cluster and its
//! replicas and removed when the last of them is dropped.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::binaries;

/// The role that logs in with a client certificate (`cert` authentication:
/// the certificate's common name is the role name); every other role is
/// trusted once the connection is encrypted.
pub const CLIENT_CERT_ROLE: &str = "cert_client";

/// The names the server certificate is valid for (subject alternative
/// names): `sslmode=verify-full` accepts either as the host.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Server settings of a TLS-only cluster. The file names are relative to the
/// data directory (where [`TlsFiles::generate`] puts them), so a replica's
/// copy of the data directory finds its own copies.
pub(crate) const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("ssl", "on"),
    ("ssl_cert_file", "server.crt"),
    ("ssl_key_file", "server.key"),
    // Verifies client certificates; clients without one are still accepted
    // where pg_hba.conf does not ask for a certificate.
    ("ssl_ca_file", "root.crt"),
];

/// `pg_hba.conf` of a TLS-only cluster. The Unix socket stays trusted: the
/// test kit's own connections ([`PgCluster::admin`](crate::PgCluster::admin))
/// use it, so every kit helper works whatever TCP demands.
pub(crate) fn pg_hba() -> String {
    format!(
        "# Written by resilient-tx-testkit: TLS-only test server. The Unix socket is\n\
         # trusted; over TCP only TLS connections are accepted.\n\
         local     all         all                                  trust\n\
         local     replication all                                  trust\n\
         hostssl   all         {role:<16} 127.0.0.1/32         cert\n\
         hostssl   all         {role:<16} ::1/128              cert\n\
         hostssl   all         all              127.0.0.1/32         trust\n\
         hostssl   all         all              ::1/128              trust\n\
         hostssl   replication all              127.0.0.1/32         trust\n\
         hostssl   replication all              ::1/128              trust\n\
         hostnossl all         all              all                  reject\n\
         hostnossl replication all              all                  reject\n",
        role = CLIENT_CERT_ROLE
    )
}

/// The client-side files of a TLS-only cluster: the certificate authorities
/// and the client certificate with its key (PEM files).
///
/// Files are readable by the test process and by the server's OS user (which
/// runs `psql` and friends when the tests run as root); keys are mode 0600,
/// as libpq demands. Clones share one directory, removed when the last clone
/// (a cluster or one of its replicas) is dropped.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: TempDir,
    ca_cert: PathBuf,
    untrusted_ca_cert: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsFiles {
    /// Generates every certificate, writes the server's files into
    /// `data_dir` (`server.crt`, `server.key`, `root.crt`) and the client's
    /// into a new temporary directory.
    pub(crate) fn generate(data_dir: &Path) -> io::Result<TlsFiles> {
        let ca = authority("resilient-tx-testkit CA")?;
        let untrusted = authority("resilient-tx-testkit untrusted CA")?;

        let mut server = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())
            .map_err(|e| cert_error("server", e))?;
        server
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAMES[0]);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (server_cert, server_key) = ca.sign("server", server)?;

        let mut client =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_error("client", e))?;
        client
            .distinguished_name
            .push(DnType::CommonName, CLIENT_CERT_ROLE);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (client_cert, client_key) = ca.sign("client", client)?;

        // The server refuses a key that others can read.
        write_file(&data_dir.join("server.crt"), &server_cert, 0o644)?;
        write_file(&data_dir.join("server.key"), &server_key, 0o600)?;
        write_file(&data_dir.join("root.crt"), &ca.cert_pem, 0o644)?;

        let dir = binaries::server_temp_dir("resilient-tx-tls-")?;
        let inner = Inner {
            ca_cert: dir.path().join("ca.crt"),
            untrusted_ca_cert: dir.path().join("untrusted-ca.crt"),
            client_cert: dir.path().join("client.crt"),
            client_key: dir.path().join("client.key"),
            dir,
        };
        write_file(&inner.ca_cert, &ca.cert_pem, 0o644)?;
        write_file(&inner.untrusted_ca_cert, &untrusted.cert_pem, 0o644)?;
        write_file(&inner.client_cert, &client_cert, 0o644)?;
        write_file(&inner.client_key, &client_key, 0o600)?;
        Ok(TlsFiles {
            inner: Arc::new(inner),
        })
    }

    /// The certificate authority that signed the server and client
    /// certificates (`sslrootcert` for `verify-ca` / `verify-full`).
    pub fn ca_cert(&self) -> &Path {
        &self.inner.ca_cert
    }

    /// A certificate authority that signed nothing the server presents:
    /// verifying against it fails.
    pub fn untrusted_ca_cert(&self) -> &Path {
        &self.inner.untrusted_ca_cert
    }

    /// The client certificate of [`CLIENT_CERT_ROLE`] (`sslcert`).
    pub fn client_cert(&self) -> &Path {
        &self.inner.client_cert
    }

    /// The private key of [`client_cert`](Self::client_cert) (`sslkey`),
    /// mode 0600.
    pub fn client_key(&self) -> &Path {
        &self.inner.client_key
    }

    /// The role that must log in with the client certificate
    /// ([`CLIENT_CERT_ROLE`]).
    pub fn client_cert_role(&self) -> &'static str {
        CLIENT_CERT_ROLE
    }

    /// The directory holding the client-side files.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }
}

/// A certificate authority that can sign certificates.
struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn authority(name: &str) -> io::Result<Authority> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_error(name, e))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(|e| cert_error(name, e))?;
    let cert = params.self_signed(&key).map_err(|e| cert_error(name, e))?;
    Ok(Authority {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

impl Authority {
    /// Signs a certificate with a fresh key; returns both as PEM.
    fn sign(&self, what: &str, mut params: CertificateParams) -> io::Result<(String, String)> {
        // Strict verifiers (OpenSSL's X509_STRICT) want the issuer's key id.
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().map_err(|e| cert_error(what, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| cert_error(what, e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn cert_error(what: &str, e: rcgen::Error) -> io::Error {
    io::Error::other(format!("could not generate the {what} certificate: {e}"))
}

/// Writes `contents` to a new file of mode `mode` (set at creation, so a key
/// is never readable by others, not even for a moment) owned by the server
/// user.
fn write_file(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents.as_bytes())?;
        // The umask may have narrowed the mode; certificates must stay
        // readable by the other user.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    };
    write().map_err(|e| {
        io::Error::new(e.kind(), format!("could not write {}: {e}", path.display()))
    })?;
    binaries::chown_to_server_user(path)
}

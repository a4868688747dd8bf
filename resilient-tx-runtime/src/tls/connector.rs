//! The TLS connector tokio-postgres connects with: one rustls configuration per set of
//! TLS parameters, built (files read, roots loaded) once and shared by every connection.
//!
//! The stream, the handshake future and `tls-server-end-point` channel binding (for
//! `channel_binding=require` with SCRAM) come from `tokio-postgres-rustls`; this module
//! only decides how the configuration is made. rustls runs on its `ring` provider,
//! chosen explicitly rather than through the process-wide default, so nothing depends
//! on which providers other crates of the application switch on.

use std::fmt;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::params::{RootCerts, SslMode, TlsParams, Verification};
use super::{pem, verify};
use crate::error::TxError;

/// ALPN protocol PostgreSQL 17 expects for `sslnegotiation=direct`; libpq 17 offers it
/// on every TLS connection and servers that do not know it ignore it.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// A `MakeTlsConnect` for tokio-postgres, made from [`TlsParams`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    inner: MakeRustlsConnect,
    mode: SslMode,
    verification: Verification,
}

impl TlsConnector {
    /// Reads the files `params` names and builds the rustls configuration. Every
    /// problem (unreadable file, no certificate in it, key not matching the
    /// certificate, empty platform store) is a `Config` error naming the parameter
    /// and file.
    ///
    /// With `sslmode=disable` no file is read: TLS is never attempted.
    pub(crate) fn new(params: &TlsParams) -> Result<TlsConnector, TxError> {
        let roots = match params.root_certs() {
            _ if !params.may_use_tls() => None,
            Some(RootCerts::File(path)) => Some(pem::root_certs_from_file(path)?),
            Some(RootCerts::System) => Some(pem::system_root_certs()?),
            None => None,
        };
        TlsConnector::with_roots(params, roots)
    }

    /// As [`new`](Self::new), with the root certificates already loaded.
    pub(super) fn with_roots(
        params: &TlsParams,
        roots: Option<RootCertStore>,
    ) -> Result<TlsConnector, TxError> {
        let verification = if params.may_use_tls() {
            params.verification()
        } else {
            Verification::None
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = verify::server_verifier(verification, roots, &provider)?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TxError::config(format!("TLS cannot be set up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match params.client_cert() {
            Some(files) if params.may_use_tls() => {
                let (chain, key) = pem::client_cert(files)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TxError::config(format!(
                        "sslcert '{}' and sslkey '{}' cannot be used together: {e}",
                        files.cert.display(),
                        files.key.display()
                    ))
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(TlsConnector {
            inner: MakeRustlsConnect::new(config),
            mode: params.mode(),
            verification,
        })
    }

    /// How much of the server's certificate this connector checks.
    #[cfg(test)]
    pub(crate) fn verification(&self) -> Verification {
        self.verification
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("sslmode", &self.mode)
            .field("verification", &self.verification)
            .finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    /// `domain` is the host as written in the connection string (not `hostaddr`): it
    /// is what `verify-full` checks the certificate against, as a DNS name or, for an IP
    /// literal, an IP address; it is sent as SNI unless it is an IP address.
    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        <MakeRustlsConnect as MakeTlsConnect<S>>::make_tls_connect(&mut self.inner, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::split_tls_params;
    use super::super::test_certs::{Ca, TempFiles};
    use super::*;

    fn params(conninfo: &str) -> TlsParams {
        split_tls_params(conninfo).expect("valid").1
    }

    #[test]
    fn each_mode_gets_its_verification() {
        let files = TempFiles::new();
        let ca = files.write("ca.pem", &Ca::new("ca").pem());
        let ca = ca.display();
        for (conninfo, expected) in [
            ("sslmode=prefer".to_owned(), Verification::None),
            ("sslmode=require".to_owned(), Verification::None),
            (
                format!("sslmode=require sslrootcert='{ca}'"),
                Verification::Chain,
            ),
            (
                format!("sslmode=verify-ca sslrootcert='{ca}'"),
                Verification::Chain,
            ),
            (
                format!("sslmode=verify-full sslrootcert='{ca}'"),
                Verification::ChainAndHostName,
            ),
        ] {
            let connector = TlsConnector::new(&params(&conninfo)).expect("connector");
            assert_eq!(connector.verification(), expected, "{conninfo}");
        }
    }

    #[test]
    fn disable_reads_no_file() {
        let connector = TlsConnector::new(&params(
            "sslmode=disable sslrootcert=/nonexistent/ca.pem sslcert=/nonexistent/c sslkey=/nonexistent/k",
        ))
        .expect("nothing is read");
        assert_eq!(connector.verification(), Verification::None);
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let message = TlsConnector::new(&params(
            "sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
        ))
        .expect_err("error")
        .to_string();
        assert_eq!(
            message,
            "sslrootcert file '/nonexistent/ca.pem' could not be read: No such file or directory"
        );
    }

    #[test]
    fn client_keys_load_in_pkcs8_and_sec1_and_must_match_the_certificate() {
        let ca = Ca::new("ca");
        let client = ca.leaf(&["client"], "app");
        let files = TempFiles::new();
        let cert = files.write("client.pem", &client.cert_pem);
        let pkcs8 = files.write("pkcs8.key", &client.key_pem);
        let sec1 = files.write("sec1.key", &client.sec1_key_pem());
        for key in [&pkcs8, &sec1] {
            let conninfo = format!(
                "sslmode=require sslcert='{}' sslkey='{}'",
                cert.display(),
                key.display()
            );
            TlsConnector::new(&params(&conninfo)).expect("the key loads and matches");
        }
        let other = files.write("other.key", &ca.leaf(&["x"], "x").key_pem);
        let conninfo = format!(
            "sslmode=require sslcert='{}' sslkey='{}'",
            cert.display(),
            other.display()
        );
        let message = TlsConnector::new(&params(&conninfo))
            .expect_err("mismatch")
            .to_string();
        assert!(message.contains("cannot be used together"), "{message}");
        assert!(message.contains("other.key"), "{message}");
    }

    #[test]
    fn system_roots_build_a_verify_full_connector() {
        let mut found = rustls_native_certs::CertificateResult::default();
        found.certs.push(Ca::new("platform").der());
        let roots = pem::platform_roots(found).expect("roots");
        let connector = TlsConnector::with_roots(&params("sslrootcert=system"), Some(roots))
            .expect("connector");
        assert_eq!(connector.verification(), Verification::ChainAndHostName);
        assert!(format!("{connector:?}").contains("VerifyFull"));
    }
}

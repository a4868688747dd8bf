//! How the server's certificate is checked, one verifier per [`Verification`] level.
//!
//! `verify-full` is rustls' own WebPKI verifier. `verify-ca` delegates to it and forgives
//! only a name that does not match. The no-verification level accepts any certificate
//! but still checks the handshake signatures, so the traffic is encrypted to whoever
//! holds the certificate's key (libpq's `require` without a root certificate).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use super::params::Verification;
use crate::error::TxError;

/// The verifier for `verification`; `roots` is required for the checking levels.
pub(super) fn server_verifier(
    verification: Verification,
    roots: Option<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TxError> {
    let webpki = |roots: Option<RootCertStore>| {
        let roots = roots.ok_or_else(|| {
            TxError::config("certificate verification needs sslrootcert (no CA was loaded)")
        })?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TxError::config(format!("the CA certificates cannot be used: {e}")))
    };
    Ok(match verification {
        Verification::ChainAndHostName => webpki(roots)?,
        Verification::Chain => Arc::new(ChainOnly {
            inner: webpki(roots)?,
        }),
        Verification::None => Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }),
    })
}

/// `verify-ca`: the chain must lead to a trusted CA, the name may be anything.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // The WebPKI verifier checks the name last, after the chain, validity and usage:
        // a name mismatch therefore means everything else passed.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require` (and `prefer`, `allow`) without a root certificate: any certificate.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_certs::Ca;
    use super::*;

    struct Setup {
        ca: Ca,
        other_ca: Ca,
        server: CertificateDer<'static>,
        provider: Arc<CryptoProvider>,
    }

    fn setup() -> Setup {
        let ca = Ca::new("test ca");
        let server = ca.leaf(&["localhost", "127.0.0.1"], "server").cert_der;
        Setup {
            ca,
            other_ca: Ca::new("another ca"),
            server,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn roots(ca: &Ca) -> Option<RootCertStore> {
        let mut store = RootCertStore::empty();
        store.add(ca.der()).expect("CA");
        Some(store)
    }

    fn check(
        verifier: &Arc<dyn ServerCertVerifier>,
        cert: &CertificateDer<'static>,
        name: &str,
    ) -> Result<ServerCertVerified, Error> {
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    fn certificate_error(result: Result<ServerCertVerified, Error>) -> CertificateError {
        match result {
            Err(Error::InvalidCertificate(e)) => e,
            other => panic!("expected a certificate error, got {other:?}"),
        }
    }

    #[test]
    fn verify_full_accepts_the_right_names_and_rejects_others() {
        let s = setup();
        let verifier = server_verifier(Verification::ChainAndHostName, roots(&s.ca), &s.provider)
            .expect("verifier");
        assert!(check(&verifier, &s.server, "localhost").is_ok());
        // An IP literal host verifies against the certificate's IP address.
        assert!(check(&verifier, &s.server, "127.0.0.1").is_ok());
        assert!(matches!(
            certificate_error(check(&verifier, &s.server, "db.example.com")),
            CertificateError::NotValidForNameContext { .. }
        ));
        assert!(matches!(
            certificate_error(check(&verifier, &s.server, "127.0.0.2")),
            CertificateError::NotValidForNameContext { .. }
        ));
    }

    #[test]
    fn verify_full_rejects_another_ca_and_an_expired_certificate() {
        let s = setup();
        let verifier = server_verifier(
            Verification::ChainAndHostName,
            roots(&s.other_ca),
            &s.provider,
        )
        .expect("verifier");
        assert_eq!(
            certificate_error(check(&verifier, &s.server, "localhost")),
            CertificateError::UnknownIssuer
        );
        let verifier = server_verifier(Verification::ChainAndHostName, roots(&s.ca), &s.provider)
            .expect("verifier");
        let expired = s.ca.expired_leaf().cert_der;
        assert!(matches!(
            certificate_error(check(&verifier, &expired, "localhost")),
            CertificateError::ExpiredContext { .. }
        ));
    }

    #[test]
    fn verify_ca_accepts_any_name_but_not_another_ca() {
        let s = setup();
        let verifier =
            server_verifier(Verification::Chain, roots(&s.ca), &s.provider).expect("verifier");
        assert!(check(&verifier, &s.server, "localhost").is_ok());
        assert!(check(&verifier, &s.server, "db.example.com").is_ok());
        assert!(check(&verifier, &s.server, "10.0.0.1").is_ok());
        // Everything but the name is still checked.
        let expired = s.ca.expired_leaf().cert_der;
        assert!(matches!(
            certificate_error(check(&verifier, &expired, "localhost")),
            CertificateError::ExpiredContext { .. }
        ));
        let verifier = server_verifier(Verification::Chain, roots(&s.other_ca), &s.provider)
            .expect("verifier");
        assert_eq!(
            certificate_error(check(&verifier, &s.server, "db.example.com")),
            CertificateError::UnknownIssuer
        );
    }

    #[test]
    fn no_verification_accepts_a_self_signed_certificate() {
        let s = setup();
        let verifier = server_verifier(Verification::None, None, &s.provider).expect("verifier");
        let self_signed = rcgen::generate_simple_self_signed(vec!["elsewhere".to_owned()])
            .expect("certificate")
            .cert
            .der()
            .clone();
        assert!(check(&verifier, &self_signed, "localhost").is_ok());
        assert!(check(&verifier, &s.server, "anything").is_ok());
        // The handshake signatures are checked with the provider's algorithms.
        assert_eq!(
            verifier.supported_verify_schemes(),
            s.provider
                .signature_verification_algorithms
                .supported_schemes()
        );
    }

    #[test]
    fn checking_levels_need_roots() {
        let s = setup();
        for level in [Verification::Chain, Verification::ChainAndHostName] {
            let message = server_verifier(level, None, &s.provider)
                .expect_err("error")
                .to_string();
            assert!(message.contains("sslrootcert"), "{message}");
        }
    }
}

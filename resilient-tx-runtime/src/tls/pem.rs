//! Reading the certificate and key files the TLS parameters name, with errors that name
//! the parameter, the file and the problem.

use std::io;
use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::params::ClientCert;
use crate::error::TxError;

/// The CA certificates of an `sslrootcert` file.
pub(super) fn root_certs_from_file(path: &Path) -> Result<RootCertStore, TxError> {
    let certs = certificates("sslrootcert", path)?;
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            file_error(
                "sslrootcert",
                path,
                format!("certificate {} is not usable as a CA: {e}", i + 1),
            )
        })?;
    }
    Ok(store)
}

/// The platform's trusted roots (`sslrootcert=system`).
///
/// `rustls-native-certs` reads the system store (on Linux the distribution's bundle,
/// honouring `SSL_CERT_FILE` / `SSL_CERT_DIR`; the keychain on macOS; the Windows
/// store). Certificates it cannot parse are skipped, as OpenSSL skips them.
pub(super) fn system_root_certs() -> Result<RootCertStore, TxError> {
    platform_roots(rustls_native_certs::load_native_certs())
}

/// The store made of what the platform's store gave; empty is an error.
pub(super) fn platform_roots(
    found: rustls_native_certs::CertificateResult,
) -> Result<RootCertStore, TxError> {
    let mut store = RootCertStore::empty();
    let (_added, _skipped) = store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let why = match found.errors.first() {
            Some(error) => format!(": {error}"),
            None => String::new(),
        };
        return Err(TxError::config(format!(
            "sslrootcert=system: no trusted CA certificate was found in the platform's \
             certificate store{why}"
        )));
    }
    Ok(store)
}

/// The certificate chain and private key of `sslcert` / `sslkey`.
pub(super) fn client_cert(
    files: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TxError> {
    let chain = certificates("sslcert", &files.cert)?;
    let bytes = read("sslkey", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let problem = match e {
            pem::Error::NoItemsFound if contains(&bytes, b"ENCRYPTED") => {
                "the private key is encrypted; only unencrypted keys are supported".to_owned()
            }
            pem::Error::NoItemsFound => "it holds no PEM private key (PKCS#8, PKCS#1 RSA or \
                                         SEC1 EC)"
                .to_owned(),
            other => format!("it is not valid PEM: {other}"),
        };
        file_error("sslkey", &files.key, problem)
    })?;
    Ok((chain, key))
}

/// Every certificate of a PEM file; none is an error.
fn certificates(param: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TxError> {
    let bytes = read(param, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(param, path, format!("it is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            param,
            path,
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

fn read(param: &str, path: &Path) -> Result<Vec<u8>, TxError> {
    std::fs::read(path).map_err(|e| {
        TxError::config(format!(
            "{param} file '{}' could not be read: {}",
            path.display(),
            io_reason(&e)
        ))
    })
}

/// "No such file or directory", without the "(os error 2)" that helps nobody.
fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

pub(super) fn file_error(param: &str, path: &Path, problem: String) -> TxError {
    TxError::config(format!(
        "{param} file '{}' could not be used: {problem}",
        path.display()
    ))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::super::test_certs::{Ca, TempFiles};
    use super::*;

    #[test]
    fn root_file_with_several_cas_is_read() {
        let (a, b) = (Ca::new("ca a"), Ca::new("ca b"));
        let files = TempFiles::new();
        let path = files.write("roots.pem", &format!("{}\n{}", a.pem(), b.pem()));
        let store = root_certs_from_file(&path).expect("readable");
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn unreadable_and_unparsable_files_are_named_with_the_problem() {
        let files = TempFiles::new();
        let missing = files.path("missing.pem");
        let message = root_certs_from_file(&missing)
            .expect_err("error")
            .to_string();
        assert_eq!(
            message,
            format!(
                "sslrootcert file '{}' could not be read: No such file or directory",
                missing.display()
            )
        );

        let empty = files.write("empty.pem", "not a certificate\n");
        let message = root_certs_from_file(&empty).expect_err("error").to_string();
        assert!(message.contains("sslrootcert file"), "{message}");
        assert!(message.contains("holds no PEM certificate"), "{message}");

        let broken = files.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let message = root_certs_from_file(&broken)
            .expect_err("error")
            .to_string();
        assert!(message.contains("not usable as a CA"), "{message}");

        let truncated = files.write("truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let message = root_certs_from_file(&truncated)
            .expect_err("error")
            .to_string();
        assert!(message.contains("not valid PEM"), "{message}");
    }

    #[test]
    fn client_key_files_in_each_format_are_read() {
        let ca = Ca::new("ca");
        let client = ca.leaf(&["client"], "app");
        let files = TempFiles::new();
        let cert = files.write("client.pem", &format!("{}{}", client.cert_pem, ca.pem()));
        for (name, pem, expect) in [
            ("pkcs8.key", client.key_pem.clone(), "pkcs8"),
            ("sec1.key", client.sec1_key_pem(), "sec1"),
            ("rsa.key", RSA_PKCS1_KEY.to_owned(), "pkcs1"),
        ] {
            let key = files.write(name, &pem);
            let (chain, key) = client_cert(&ClientCert {
                cert: cert.clone(),
                key,
            })
            .expect("readable");
            assert_eq!(chain.len(), 2, "the chain keeps its intermediates");
            let kind = match key {
                PrivateKeyDer::Pkcs8(_) => "pkcs8",
                PrivateKeyDer::Sec1(_) => "sec1",
                PrivateKeyDer::Pkcs1(_) => "pkcs1",
                _ => "other",
            };
            assert_eq!(kind, expect, "{name}");
        }
    }

    #[test]
    fn encrypted_or_missing_keys_are_explained() {
        let ca = Ca::new("ca");
        let client = ca.leaf(&["client"], "app");
        let files = TempFiles::new();
        let cert = files.write("client.pem", &client.cert_pem);
        let encrypted = files.write(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let message = client_cert(&ClientCert {
            cert: cert.clone(),
            key: encrypted,
        })
        .expect_err("error")
        .to_string();
        assert!(message.contains("sslkey file"), "{message}");
        assert!(message.contains("encrypted"), "{message}");

        let message = client_cert(&ClientCert {
            cert: cert.clone(),
            key: cert.clone(),
        })
        .expect_err("error")
        .to_string();
        assert!(message.contains("holds no PEM private key"), "{message}");
    }

    #[test]
    fn an_empty_platform_store_is_an_error() {
        let message = platform_roots(Default::default())
            .expect_err("error")
            .to_string();
        assert!(message.contains("sslrootcert=system"), "{message}");
        let mut found = rustls_native_certs::CertificateResult::default();
        found.certs.push(Ca::new("platform").der());
        assert_eq!(platform_roots(found).expect("one root").len(), 1);
    }

    /// An RSA 2048 key in PKCS#1 form (`-----BEGIN RSA PRIVATE KEY-----`), made for this
    /// test only: rcgen cannot make RSA keys with the ring provider.
    const RSA_PKCS1_KEY: &str = include_str!("testdata/rsa-pkcs1.key");
}

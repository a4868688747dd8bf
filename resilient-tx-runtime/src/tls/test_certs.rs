//! Certificates made on the fly for the TLS tests (rcgen), and a directory to write
//! them into that the PostgreSQL server user can read.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A certificate authority.
pub(crate) struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A certificate signed by a [`Ca`], with its key.
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl Ca {
    pub(crate) fn new(common_name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca { params, key, cert }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate for `names` (DNS names or IP addresses) with `common_name`.
    pub(crate) fn leaf(&self, names: &[&str], common_name: &str) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("names");
        params.distinguished_name = named(common_name);
        self.sign(params)
    }

    /// A certificate for `localhost` and `127.0.0.1` whose validity ended in 2020.
    pub(crate) fn expired_leaf(&self) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("names");
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Leaf {
    /// The key as SEC1 (`-----BEGIN EC PRIVATE KEY-----`), the form `openssl ecparam
    /// -genkey` writes: the ECPrivateKey inside the PKCS#8 structure rcgen makes.
    pub(crate) fn sec1_key_pem(&self) -> String {
        // PrivateKeyInfo ::= SEQUENCE { version INTEGER, algorithm SEQUENCE, privateKey OCTET STRING }
        let (_, info, _) = der_element(&self.key_der);
        let (_, _version, rest) = der_element(info);
        let (_, _algorithm, rest) = der_element(rest);
        let (tag, ec_private_key, _) = der_element(rest);
        assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
        let out = ::pem::encode(&::pem::Pem::new("EC PRIVATE KEY", ec_private_key.to_vec()));
        assert!(matches!(
            rustls::pki_types::PrivateKeyDer::from_pem_slice(out.as_bytes()),
            Ok(rustls::pki_types::PrivateKeyDer::Sec1(_))
        ));
        out
    }
}

/// One DER element of `input`: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        short if short < 0x80 => (usize::from(short), 2),
        long => {
            let bytes = usize::from(long & 0x7f);
            let len = input[2..2 + bytes]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + bytes)
        }
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// A temporary directory for certificate and key files, removed on drop.
///
/// It is world-traversable and its files world-readable, except keys written with
/// [`TempFiles::write_key`], so that a PostgreSQL server running as another OS user
/// can read what it needs.
pub(crate) struct TempFiles {
    dir: tempfile::TempDir,
}

impl TempFiles {
    pub(crate) fn new() -> TempFiles {
        let dir = tempfile::Builder::new()
            .prefix("resilient-tx-tls-")
            .tempdir_in(std::env::temp_dir())
            .expect("temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        TempFiles { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        path
    }

    /// A private key the PostgreSQL server accepts: mode 0600, owned by the server's OS
    /// user.
    pub(crate) fn write_key(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        resilient_tx_testkit::binaries::chown_to_server_user(&path).expect("chown");
        path
    }
}

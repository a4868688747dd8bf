//! TLS for database connections, with libpq's parameters and meaning: `sslmode`
//! (`disable`, `allow`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`), `sslrootcert` (a PEM file, or `system`), `sslcert` and `sslkey`.
//!
//! The pipeline is the file list: [`params`] takes the parameters out of the connection
//! string (whose remainder tokio-postgres parses as before), [`connector`] builds one
//! rustls configuration from them (reading the files through [`pem`], checking the
//! server through [`verify`]), and [`diagnose`] reads a failed connect: a sentence for
//! a rejected certificate, and whether libpq's second attempt of `allow` / `prefer` is
//! due. tokio-postgres has no `allow` mode and no fallback after a failed handshake,
//! so the connecting code makes that second attempt itself.

mod connector;
mod conninfo;
mod diagnose;
mod params;
mod pem;
mod verify;

#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod test_certs;

pub(crate) use connector::TlsConnector;
pub(crate) use diagnose::{
    describe_tls_failure, fallback_after, is_certificate_rejected, refused_by_hba, server_lacks_tls,
};
pub(crate) use params::{SslMode, TlsParams, split_tls_params};

//! Reading a failed connect: what went wrong with TLS, in words a person can act on, and
//! whether libpq's second attempt (`allow`, `prefer`) is called for.

use std::error::Error;
use std::io;

use rustls::{AlertDescription, CertificateError};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;

use super::params::{RootCerts, SslMode, TlsParams};

/// tokio-postgres' own words when the server answers `N` to the TLS request under
/// `sslmode=require` (its `Error::tls`, whose kind is not public).
const SERVER_LACKS_TLS: &str = "server does not support TLS";

/// The routine of PostgreSQL's `auth.c` that reports the pg_hba.conf refusals.
const CLIENT_AUTHENTICATION: &str = "ClientAuthentication";

/// A sentence about the TLS failure in `error`'s source chain, if there is one: a
/// certificate the server presented and this side rejected, an alert the server sent
/// (often: it rejected the client certificate), or another handshake failure.
///
/// The connecting code adds the host and port.
pub(crate) fn describe_tls_failure(
    error: &(dyn Error + 'static),
    params: &TlsParams,
) -> Option<String> {
    let error = find_rustls_error(error)?;
    Some(match error {
        rustls::Error::InvalidCertificate(problem) => describe_certificate(problem, params),
        rustls::Error::AlertReceived(alert) => describe_alert(*alert, params),
        other => format!("the TLS handshake with the server failed: {other}"),
    })
}

/// Whether the chain of `error` holds a rejected server certificate (as opposed to a
/// TLS failure of another kind).
pub(crate) fn is_certificate_rejected(error: &(dyn Error + 'static)) -> bool {
    matches!(
        find_rustls_error(error),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

fn describe_certificate(problem: &CertificateError, params: &TlsParams) -> String {
    match problem {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names = if presented.is_empty() {
                " no host name or address".to_owned()
            } else {
                let names: Vec<&str> = presented.iter().map(|n| tidy_name(n)).collect();
                format!(": {}", names.join(", "))
            };
            format!(
                "the server's certificate is not valid for host name '{}' (it names{names})",
                expected.to_str()
            )
        }
        CertificateError::NotValidForName => {
            "the server's certificate is not valid for the host name connected to".to_owned()
        }
        CertificateError::UnknownIssuer => match params.root_certs() {
            Some(RootCerts::System) => "the server's certificate was not issued by a CA the \
                                        platform trusts (sslrootcert=system)"
                .to_owned(),
            Some(file) => format!("the server's certificate was not issued by a CA in {file}"),
            None => "the server's certificate was not issued by a trusted CA".to_owned(),
        },
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "the server's certificate expired on {}",
            utc_date(not_after.as_secs())
        ),
        CertificateError::Expired => "the server's certificate has expired".to_owned(),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "the server's certificate is not valid before {} (is the clock right?)",
            utc_date(not_before.as_secs())
        ),
        CertificateError::NotValidYet => {
            "the server's certificate is not valid yet (is the clock right?)".to_owned()
        }
        CertificateError::BadSignature => {
            "the server's certificate chain has a signature that does not verify".to_owned()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not meant for a TLS server (extended key usage)".to_owned()
        }
        CertificateError::Revoked => "the server's certificate has been revoked".to_owned(),
        CertificateError::BadEncoding => "the server's certificate could not be parsed".to_owned(),
        other => format!("the server's certificate was rejected: {other:?}"),
    }
}

/// `localhost` for webpki's `DnsName("localhost")`, `127.0.0.1` for
/// `IpAddress(127.0.0.1)`; other kinds of names as webpki writes them.
fn tidy_name(name: &str) -> &str {
    if let Some(dns) = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
    {
        return dns;
    }
    if let Some(ip) = name
        .strip_prefix("IpAddress(")
        .and_then(|n| n.strip_suffix(')'))
    {
        return ip;
    }
    name
}

fn describe_alert(alert: AlertDescription, params: &TlsParams) -> String {
    let client_cert_alert = matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied
    );
    match (client_cert_alert, params.client_cert()) {
        (true, Some(files)) => format!(
            "the server rejected the TLS handshake ({alert:?}): it may not accept the client \
             certificate in sslcert '{}'",
            files.cert.display()
        ),
        (true, None) => format!(
            "the server rejected the TLS handshake ({alert:?}): it may require a client \
             certificate (sslcert and sslkey)"
        ),
        (false, _) => match alert {
            AlertDescription::ProtocolVersion => "the server ended the TLS handshake: it \
                 speaks no TLS version this client does (TLS 1.2 and 1.3)"
                .to_owned(),
            AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity => {
                format!(
                    "the server ended the TLS handshake ({alert:?}): it shares no cipher suite \
                     or signature algorithm with this client"
                )
            }
            _ => format!("the server ended the TLS handshake ({alert:?})"),
        },
    }
}

/// Whether `error` is tokio-postgres' "server does not support TLS": the server answered
/// the TLS request with `N` and the mode insists on TLS.
pub(crate) fn server_lacks_tls(error: &tokio_postgres::Error) -> bool {
    error
        .source()
        .is_some_and(|cause| cause.to_string() == SERVER_LACKS_TLS)
}

/// Whether the server's pg_hba.conf refused the connection before authentication:
/// FATAL 28000 from `ClientAuthentication`. PostgreSQL sends it when no line matches
/// ("no pg_hba.conf entry for host …, no encryption" where only `hostssl` lines exist,
/// "…, SSL encryption" where only `hostnossl` ones do) or a `reject` line matches, so
/// the other choice of encryption may be let in. Decided by SQLSTATE and routine, never
/// by the message, which servers translate. A server that sends no routine (a proxy,
/// not PostgreSQL itself) counts too: 28000 before authentication is the access rules.
pub(crate) fn refused_by_hba(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        db.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.severity() == "FATAL"
            && db.routine().is_none_or(|r| r == CLIENT_AUTHENTICATION)
    })
}

/// The mode to connect to `host` again with after the first attempt failed with
/// `error`, for the two modes libpq gives a second attempt:
/// - `allow` (first attempt in plain text) tries TLS after pg_hba.conf refused it
///   ([`refused_by_hba`]);
/// - `prefer` (first attempt over TLS if the server offers it) tries plain text after
///   pg_hba.conf refused it, or after the TLS handshake failed, but not when the
///   server's certificate was rejected: libpq would go on in plain text, but a given
///   `sslrootcert` is a wish to check the server. (tokio-postgres does not say whether
///   a refused `prefer` attempt ran over TLS; when it did not, the second attempt meets
///   the same refusal, one needless round trip on a path that fails anyway.)
///
/// Never for a Unix-domain socket, where neither attempt uses TLS. Call it once per
/// host, after the attempt made with [`TlsParams::first_mode_for`]; the second
/// attempt's error is final.
pub(crate) fn fallback_after(
    params: &TlsParams,
    host: &Host,
    error: &tokio_postgres::Error,
) -> Option<PgSslMode> {
    if !matches!(host, Host::Tcp(_)) {
        return None;
    }
    let handshake_failed = find_rustls_error(error).is_some() && !is_certificate_rejected(error);
    let retry = match params.mode() {
        SslMode::Allow => refused_by_hba(error),
        SslMode::Prefer => refused_by_hba(error) || handshake_failed,
        _ => false,
    };
    if retry { params.fallback() } else { None }
}

/// The `rustls::Error` in `error`'s chain. tokio-rustls wraps it in an `io::Error`, whose
/// `source()` skips the wrapped error itself, so each `io::Error` is opened by hand.
fn find_rustls_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        next = match current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => current.source(),
        };
    }
    None
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch (the proleptic Gregorian
/// calendar, as certificates use).
fn utc_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{ServerName, UnixTime};

    use super::super::params::split_tls_params;
    use super::*;

    fn params(conninfo: &str) -> TlsParams {
        split_tls_params(conninfo).expect("valid").1
    }

    /// The shape tokio-postgres gives a failed handshake: its error, around the
    /// `io::Error` tokio-rustls makes, around the rustls error.
    fn wrapped(error: rustls::Error) -> Box<dyn Error + Send + Sync> {
        Box::new(io::Error::new(io::ErrorKind::InvalidData, error))
    }

    #[test]
    fn names_the_host_and_what_the_certificate_names() {
        let error = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("db.example.com")
                    .expect("name")
                    .to_owned(),
                presented: vec![
                    "DnsName(\"localhost\")".into(),
                    "IpAddress(127.0.0.1)".into(),
                ],
            },
        ));
        let tls = params("sslmode=verify-full sslrootcert=ca.pem");
        let message = describe_tls_failure(error.as_ref(), &tls).expect("a TLS failure");
        assert_eq!(
            message,
            "the server's certificate is not valid for host name 'db.example.com' \
             (it names: localhost, 127.0.0.1)"
        );
        assert!(is_certificate_rejected(error.as_ref()));
    }

    #[test]
    fn unknown_issuer_names_the_root_file_or_the_platform() {
        let error = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let message = describe_tls_failure(
            error.as_ref(),
            &params("sslmode=verify-ca sslrootcert=/etc/ca.pem"),
        );
        assert_eq!(
            message.as_deref(),
            Some("the server's certificate was not issued by a CA in sslrootcert '/etc/ca.pem'")
        );
        let message = describe_tls_failure(error.as_ref(), &params("sslrootcert=system"));
        assert!(message.expect("failure").contains("platform trusts"));
    }

    #[test]
    fn expiry_is_given_as_a_date() {
        let error = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    1_577_836_800,
                )),
            },
        ));
        let message = describe_tls_failure(error.as_ref(), &params("sslmode=require"));
        assert_eq!(
            message.as_deref(),
            Some("the server's certificate expired on 2020-01-01 00:00:00 UTC")
        );
        assert_eq!(utc_date(951_782_400 + 3_723), "2000-02-29 01:02:03 UTC");
    }

    #[test]
    fn alerts_point_at_the_client_certificate() {
        let error = wrapped(rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        let message = describe_tls_failure(
            error.as_ref(),
            &params("sslmode=require sslcert=client.pem sslkey=client.key"),
        )
        .expect("failure");
        assert!(message.contains("sslcert 'client.pem'"), "{message}");
        assert!(!is_certificate_rejected(error.as_ref()));
    }

    #[test]
    fn errors_without_tls_in_them_are_not_described() {
        let error: Box<dyn Error + Send + Sync> =
            Box::new(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert!(describe_tls_failure(error.as_ref(), &params("sslmode=require")).is_none());
        assert!(!is_certificate_rejected(error.as_ref()));
    }
}

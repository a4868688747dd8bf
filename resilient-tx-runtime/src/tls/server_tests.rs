//! The TLS module against real PostgreSQL servers (the test kit's clusters): each mode's
//! handshake, the certificate checks, client certificates, channel binding, and the
//! errors a server sends that `allow` and `require` depend on.

use std::path::PathBuf;
use std::time::Duration;

use resilient_tx_testkit::PgCluster;
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::diagnose::refused_by_hba;
use super::test_certs::{Ca, TempFiles};
use super::{
    TlsConnector, TlsParams, describe_tls_failure, fallback_after, is_certificate_rejected,
    server_lacks_tls, split_tls_params,
};

/// A bound for each connect, far above what a local handshake takes.
const CONNECT_BOUND: Duration = Duration::from_secs(30);

/// A server with `ssl = on`, a certificate for `localhost` and `127.0.0.1` from `ca`, and
/// a pg_hba.conf that lets TCP clients in over TLS only.
struct TlsServer {
    cluster: PgCluster,
    files: TempFiles,
    ca_file: PathBuf,
    ca: Ca,
}

const HBA: &str = "\
local   all all                 trust
hostssl all certuser 127.0.0.1/32 cert
hostssl all scramuser 127.0.0.1/32 scram-sha-256
hostssl all all      127.0.0.1/32 trust
";

impl TlsServer {
    async fn start() -> TlsServer {
        TlsServer::start_with(HBA, &[]).await
    }

    /// As [`start`](Self::start), with another pg_hba.conf and extra settings.
    async fn start_with(hba: &str, settings: &[(&str, &str)]) -> TlsServer {
        let ca = Ca::new("resilient-tx test CA");
        let server = ca.leaf(&["localhost", "127.0.0.1"], "server");
        let files = TempFiles::new();
        let ca_file = files.write("ca.pem", &ca.pem());
        let cert = files.write("server.crt", &server.cert_pem);
        let key = files.write_key("server.key", &server.key_pem);
        let hba = files.write("pg_hba.conf", hba);
        let mut builder = PgCluster::builder()
            .setting("ssl", "on")
            .setting("ssl_cert_file", &cert.display().to_string())
            .setting("ssl_key_file", &key.display().to_string())
            .setting("ssl_ca_file", &ca_file.display().to_string())
            .setting("hba_file", &hba.display().to_string());
        for (name, value) in settings {
            builder = builder.setting(name, value);
        }
        let cluster = builder.start().await.expect("TLS cluster starts");
        let server = TlsServer {
            cluster,
            files,
            ca_file,
            ca,
        };
        server
            .admin()
            .await
            .batch_execute(
                "CREATE ROLE certuser LOGIN; \
                 CREATE ROLE scramuser LOGIN PASSWORD 'scram-secret';",
            )
            .await
            .expect("roles");
        server
    }

    /// A superuser connection over the Unix socket (pg_hba.conf lets TCP in over TLS
    /// only).
    async fn admin(&self) -> Client {
        let mut config = Config::new();
        config
            .host_path(self.cluster.socket_dir())
            .port(self.cluster.port())
            .user("postgres")
            .dbname("postgres");
        let (client, connection) = config.connect(NoTls).await.expect("admin connects");
        tokio::spawn(connection);
        client
    }

    /// `key=value` connection string to `host`, followed by `extra`.
    fn conninfo(&self, host: &str, extra: &str) -> String {
        format!(
            "host={host} port={} user=postgres dbname=postgres {extra}",
            self.cluster.port()
        )
    }

    fn ca(&self) -> String {
        format!("sslrootcert='{}'", self.ca_file.display())
    }
}

/// Connects as the connecting code will: TLS parameters out, one connector, then
/// libpq's second attempt when [`fallback_after`] calls for it.
async fn connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (rest, params) = split_tls_params(conninfo).expect("valid connection string");
    let connector = TlsConnector::new(&params).expect("connector");
    let mut config: Config = rest.parse().expect("tokio-postgres parses the rest");
    let host = config.get_hosts()[0].clone();
    config.ssl_mode(params.first_mode_for(&host));
    let first = attempt(&config, &connector).await;
    match first {
        Err(error) => match fallback_after(&params, &host, &error) {
            Some(mode) => {
                config.ssl_mode(mode);
                attempt(&config, &connector).await
            }
            None => Err(error),
        },
        ok => ok,
    }
}

async fn attempt(
    config: &Config,
    connector: &TlsConnector,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) =
        tokio::time::timeout(CONNECT_BOUND, config.connect(connector.clone()))
            .await
            .expect("the connect ends within its bound")?;
    tokio::spawn(connection);
    Ok(client)
}

/// Whether the server sees this connection as encrypted.
async fn uses_tls(client: &Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

fn params(conninfo: &str) -> TlsParams {
    split_tls_params(conninfo).expect("valid").1
}

async fn connect_error(conninfo: &str) -> tokio_postgres::Error {
    match connect(conninfo).await {
        Ok(_) => panic!("connecting with {conninfo:?} should fail"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let server = TlsServer::start().await;
    for host in ["localhost", "127.0.0.1"] {
        let client =
            connect(&server.conninfo(host, &format!("sslmode=verify-full {}", server.ca())))
                .await
                .unwrap_or_else(|e| panic!("verify-full to {host}: {e:?}"));
        assert!(uses_tls(&client).await, "{host}");
    }

    // The name checked is the host as written, the address only where to connect.
    let wrong_name = server.conninfo(
        "db.example.com",
        &format!("hostaddr=127.0.0.1 sslmode=verify-full {}", server.ca()),
    );
    let error = connect_error(&wrong_name).await;
    assert!(is_certificate_rejected(&error), "{error:?}");
    assert_eq!(
        describe_tls_failure(&error, &params(&wrong_name)).as_deref(),
        Some(
            "the server's certificate is not valid for host name 'db.example.com' \
             (it names: localhost, 127.0.0.1)"
        )
    );

    let other_ca = server
        .files
        .write("other-ca.pem", &Ca::new("another CA").pem());
    let other = server.conninfo(
        "localhost",
        &format!("sslmode=verify-full sslrootcert='{}'", other_ca.display()),
    );
    let error = connect_error(&other).await;
    assert_eq!(
        describe_tls_failure(&error, &params(&other)),
        Some(format!(
            "the server's certificate was not issued by a CA in sslrootcert '{}'",
            other_ca.display()
        ))
    );
    // A rejected certificate is final, also under `prefer`.
    let prefer_other = server.conninfo(
        "localhost",
        &format!("sslmode=prefer sslrootcert='{}'", other_ca.display()),
    );
    let error = connect_error(&prefer_other).await;
    assert!(is_certificate_rejected(&error), "{error:?}");
}

#[tokio::test]
async fn weaker_modes_encrypt_with_the_checks_they_promise() {
    let server = TlsServer::start().await;
    let wrong_name = |mode: &str, roots: &str| {
        server.conninfo(
            "db.example.com",
            &format!("hostaddr=127.0.0.1 sslmode={mode} {roots}"),
        )
    };
    // verify-ca, and require with a root certificate: any name, but the chain counts.
    for mode in ["verify-ca", "require"] {
        let client = connect(&wrong_name(mode, &server.ca()))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        assert!(uses_tls(&client).await, "{mode}");
    }
    let other_ca = server
        .files
        .write("other-ca.pem", &Ca::new("another CA").pem());
    let other = format!("sslrootcert='{}'", other_ca.display());
    let error = connect_error(&wrong_name("verify-ca", &other)).await;
    assert!(is_certificate_rejected(&error), "{error:?}");

    // require without a root certificate and the default prefer: encrypted, unchecked.
    for extra in ["sslmode=require", ""] {
        let client = connect(&wrong_name("require", "").replace("sslmode=require", extra))
            .await
            .unwrap_or_else(|e| panic!("{extra:?}: {e:?}"));
        assert!(uses_tls(&client).await, "{extra:?}");
    }
}

#[tokio::test]
async fn allow_tries_tls_after_the_server_refused_plain_text() {
    let server = TlsServer::start().await;
    let plain = server.conninfo("127.0.0.1", "sslmode=disable");
    let error = connect_error(&plain).await;
    // What PostgreSQL sends when only hostssl lines match the client.
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(db.routine(), Some("ClientAuthentication"));
    assert!(refused_by_hba(&error));
    // disable has no second attempt; allow has one, with TLS.
    let tcp = Host::Tcp("127.0.0.1".into());
    assert_eq!(fallback_after(&params(&plain), &tcp, &error), None);
    let allow = server.conninfo("127.0.0.1", "sslmode=allow");
    assert_eq!(
        fallback_after(&params(&allow), &tcp, &error),
        Some(PgSslMode::Require)
    );
    let client = connect(&allow).await.expect("allow connects over TLS");
    assert!(uses_tls(&client).await);
}

#[tokio::test]
async fn client_certificates_and_channel_binding_work_over_tls() {
    let server = TlsServer::start().await;
    let client_cert = server.ca.leaf(&["certuser"], "certuser");
    let cert = server.files.write("client.crt", &client_cert.cert_pem);
    // A SEC1 key, the form `openssl ecparam -genkey` writes.
    let key = server
        .files
        .write("client.key", &client_cert.sec1_key_pem());
    let with_cert = format!(
        "host=localhost port={} user=certuser dbname=postgres sslmode=verify-full {} \
         sslcert='{}' sslkey='{}'",
        server.cluster.port(),
        server.ca(),
        cert.display(),
        key.display()
    );
    let client = connect(&with_cert).await.expect("certificate login");
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(user, "certuser");

    // Without the certificate the `cert` line refuses the login.
    let without = format!(
        "host=localhost port={} user=certuser dbname=postgres sslmode=verify-full {}",
        server.cluster.port(),
        server.ca()
    );
    let error = connect_error(&without).await;
    assert_eq!(
        error.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );

    // SCRAM with channel binding to the server's certificate (tls-server-end-point).
    let scram = format!(
        "host=localhost port={} user=scramuser password=scram-secret dbname=postgres \
         sslmode=verify-full {} channel_binding=require",
        server.cluster.port(),
        server.ca()
    );
    let client = connect(&scram).await.expect("SCRAM-SHA-256-PLUS login");
    assert!(uses_tls(&client).await);
}

#[tokio::test]
async fn prefer_goes_on_in_plain_text_after_a_failed_handshake() {
    // A server that speaks only TLS 1.1, which rustls refuses: the handshake fails for
    // a reason other than the certificate.
    let server = TlsServer::start_with(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        &[
            ("ssl_min_protocol_version", "TLSv1.1"),
            ("ssl_max_protocol_version", "TLSv1.1"),
        ],
    )
    .await;
    let require = server.conninfo("localhost", "sslmode=require");
    let error = connect_error(&require).await;
    assert!(!is_certificate_rejected(&error), "{error:?}");
    let message = describe_tls_failure(&error, &params(&require)).expect("a TLS failure");
    assert!(message.contains("TLS handshake"), "{message}");
    let tcp = Host::Tcp("localhost".into());
    assert_eq!(fallback_after(&params(&require), &tcp, &error), None);
    let prefer = server.conninfo("localhost", "sslmode=prefer");
    assert_eq!(
        fallback_after(&params(&prefer), &tcp, &error),
        Some(PgSslMode::Disable)
    );
    let client = connect(&prefer)
        .await
        .expect("prefer connects in plain text");
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn prefer_goes_on_in_plain_text_after_pg_hba_refused_tls() {
    let server = TlsServer::start_with(
        "local all all trust\nhostnossl all all 127.0.0.1/32 trust\n",
        &[],
    )
    .await;
    let require = server.conninfo("localhost", "sslmode=require");
    let error = connect_error(&require).await;
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert_eq!(db.routine(), Some("ClientAuthentication"));
    assert!(refused_by_hba(&error));
    let tcp = Host::Tcp("localhost".into());
    assert_eq!(fallback_after(&params(&require), &tcp, &error), None);
    let prefer = server.conninfo("localhost", "");
    assert_eq!(
        fallback_after(&params(&prefer), &tcp, &error),
        Some(PgSslMode::Disable)
    );
    let client = connect(&prefer)
        .await
        .expect("prefer connects in plain text");
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn require_meets_a_server_without_tls() {
    let cluster = PgCluster::start().await.expect("plain cluster starts");
    let (host, port) = cluster.host_port();
    let base = format!("host={host} port={port} user=postgres dbname=postgres");
    let error = connect_error(&format!("{base} sslmode=require")).await;
    assert!(server_lacks_tls(&error), "{error:?}");
    assert!(!is_certificate_rejected(&error));
    let files = TempFiles::new();
    let ca = files.write("ca.pem", &Ca::new("ca").pem());
    let error = connect_error(&format!(
        "{base} sslmode=verify-full sslrootcert='{}'",
        ca.display()
    ))
    .await;
    assert!(server_lacks_tls(&error), "{error:?}");
    // prefer and allow go on in plain text, as libpq does.
    for mode in ["prefer", "allow"] {
        let client = connect(&format!("{base} sslmode={mode}"))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        assert!(!uses_tls(&client).await, "{mode}");
    }
}

//! The gateway configured from the environment as an operator would: a TLS-only
//! primary and replica reached with `sslmode=verify-full` in `DATABASE_URL` and
//! `DATABASE_REPLICA_URL`, and PgBouncer in transaction mode with
//! `DATABASE_STATEMENT_CACHE=off`. Over real HTTP, against real servers.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use gateway::{Config, Server};
use resilient_tx_testkit::{PgBouncer, PgCluster, PoolMode, init_tracing};
use serde_json::{Value, json};

const TOKEN: &str = "connectivity-token-0123456789";

/// No test may run longer than this, whatever the servers do.
const TEST_LIMIT: Duration = Duration::from_secs(120);

async fn within<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("the test finished within its time limit")
}

/// The gateway's settings from these variables (and a loopback listener, the token).
fn config_from(vars: &[(&str, String)]) -> Config {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    map.insert("GATEWAY_TOKEN".to_owned(), TOKEN.to_owned());
    map.insert("HOST".to_owned(), "127.0.0.1".to_owned());
    map.insert("PORT".to_owned(), "0".to_owned());
    Config::from_vars(|name| map.get(name).cloned()).expect("a valid configuration")
}

/// An HTTP client for the gateway under test.
struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(server: &Server) -> Client {
        Client {
            base: server.url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .expect("HTTP client"),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, body)
    }

    async fn create(&self, name: &str) -> Value {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/api/servers", self.base))
                    .json(&json!({ "name": name, "url": format!("http://{name}.example") })),
            )
            .await;
        assert_eq!(status, 201, "create {name}: {body}");
        body
    }

    /// The names the list answers with.
    async fn list(&self, consistency: &str) -> Vec<String> {
        let (status, body) = self
            .send(self.http.get(format!(
                "{}/api/servers?consistency={consistency}",
                self.base
            )))
            .await;
        assert_eq!(status, 200, "list ({consistency}): {body}");
        let mut names: Vec<String> = body
            .as_array()
            .expect("a JSON array")
            .iter()
            .map(|server| server["name"].as_str().expect("a name").to_owned())
            .collect();
        names.sort();
        names
    }

    async fn wait_ready(&self) {
        for _ in 0..300 {
            let (status, _) = self
                .send(self.http.get(format!("{}/health/ready", self.base)))
                .await;
            if status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway never became ready");
    }
}

/// The gateway's connections on `cluster` (by `application_name`) and how many of
/// them are encrypted.
async fn encrypted_connections(cluster: &PgCluster, application_name: &str) -> (i64, i64) {
    let admin = cluster.admin().await.expect("admin");
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE ssl) FROM pg_stat_ssl \
             JOIN pg_stat_activity USING (pid) WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_tls_only_primary_and_replica_with_verify_full_in_the_urls() {
    const APP: &str = "gateway-tls";
    within(async {
        init_tracing();
        let primary = PgCluster::builder()
            .tls()
            .start()
            .await
            .expect("a TLS-only primary");
        let replica = primary.create_replica().await.expect("a TLS-only replica");
        let ca = primary.tls().expect("TLS").ca_cert().display().to_string();
        let config = config_from(&[
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
                    primary.port()
                ),
            ),
            (
                "DATABASE_REPLICA_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
                    replica.port()
                ),
            ),
            ("APPLICATION_NAME", APP.to_owned()),
            ("POOL_MIN_IDLE", "1".to_owned()),
        ]);
        let server = gateway::serve(config).await.expect("start the gateway");
        let client = Client::new(&server);
        client.wait_ready().await;

        client.create("alpha").await;
        client.create("beta").await;
        assert_eq!(client.list("strong").await, ["alpha", "beta"]);
        replica
            .wait_replay_catch_up(&primary)
            .await
            .expect("the replica catches up");
        assert_eq!(
            client.list("eventual").await,
            ["alpha", "beta"],
            "read on the replica"
        );

        // Both URLs' TLS parameters were used: the gateway's connections on each
        // server are there, and all encrypted (plain text is refused over TCP).
        for (role, cluster) in [("primary", &primary), ("replica", &replica)] {
            let (connections, encrypted) = encrypted_connections(cluster, APP).await;
            assert!(connections >= 1, "the gateway reached the {role}");
            assert_eq!(connections, encrypted, "every {role} connection is encrypted");
        }
        assert_eq!(server.db().metrics().connect_failures, 0);
        server.shutdown().await.expect("clean shutdown");
    })
    .await;
}

/// A certificate that does not verify is not an outage to wait out: readiness and the
/// API answer 503 at once, well within the 30 s deadline (in fixed words: the probe
/// needs no token), and the sentence that names the host and the problem is the
/// runtime's, for the log and for `Db::health`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_verify_is_a_503_at_once_and_named_in_the_health_report() {
    within(async {
        init_tracing();
        let cluster = PgCluster::builder().tls().start().await.expect("TLS-only");
        let tls = cluster.tls().expect("TLS");
        let untrusted = tls.untrusted_ca_cert().display().to_string();
        let url = format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={untrusted}",
            cluster.port()
        );
        let server = gateway::serve(config_from(&[("DATABASE_URL", url)]))
            .await
            .expect("starts without the database");
        let client = Client::new(&server);
        let started = std::time::Instant::now();
        let (status, body) = client
            .send(client.http.get(format!("{}/health/ready", client.base)))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("database_unavailable")),
            "{body}"
        );
        let (status, body) = client
            .send(client.http.get(format!("{}/api/servers", client.base)))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("database_unavailable")),
            "{body}"
        );
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        let health = server.db().health().await;
        let reason = health.last_error.unwrap_or_default();
        assert!(
            reason.contains(&format!("localhost:{}", cluster.port()))
                && reason.contains("not issued by a CA in sslrootcert"),
            "the health report names the host and the problem: {reason}"
        );
        server.shutdown().await.expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_through_pgbouncer_with_database_statement_cache_off() {
    const APP: &str = "gateway-bouncer";
    const CLIENTS: usize = 8;
    const CREATES: usize = 5;
    within(async {
        init_tracing();
        // Every statement in the log, so the test can tell named from unnamed ones.
        let cluster = PgCluster::builder()
            .setting("log_statement", "all")
            .start()
            .await
            .expect("PostgreSQL");
        let bouncer = PgBouncer::builder(&cluster)
            .pool_mode(PoolMode::Transaction)
            .pool_size(3)
            .start()
            .await
            .expect("PgBouncer");
        let config = config_from(&[
            ("DATABASE_URL", bouncer.url()),
            ("DATABASE_STATEMENT_CACHE", "off".to_owned()),
            ("APPLICATION_NAME", APP.to_owned()),
            ("POOL_MIN_IDLE", "2".to_owned()),
            ("POOL_MAX_SIZE", "8".to_owned()),
        ]);
        assert!(!config.statement_cache);
        let server = gateway::serve(config).await.expect("start the gateway");
        let client = std::sync::Arc::new(Client::new(&server));
        client.wait_ready().await;

        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let client = client.clone();
                tokio::spawn(async move {
                    for i in 0..CREATES {
                        client.create(&format!("server-{c}-{i}")).await;
                        assert!(client.list("strong").await.len() > i);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("client task");
        }
        assert_eq!(client.list("eventual").await.len(), CLIENTS * CREATES);
        let metrics = server.db().metrics();
        assert_eq!(
            metrics.retries_conflict, 0,
            "no prepared statement was lost: {metrics:?}"
        );
        assert_eq!(metrics.give_ups, 0, "{metrics:?}");

        // The server executed the gateway's statements unnamed, never a named one.
        let log = cluster.log_contents();
        let gateway_lines: Vec<&str> = log.lines().filter(|line| line.contains(APP)).collect();
        assert!(
            gateway_lines
                .iter()
                .any(|line| line.contains("execute <unnamed>")),
            "the gateway's statements are in the log"
        );
        let named: Vec<&&str> = gateway_lines
            .iter()
            .filter(|line| line.contains("execute s"))
            .collect();
        assert!(named.is_empty(), "named statements: {named:?}");
        server.shutdown().await.expect("clean shutdown");
    })
    .await;
}

//! Self-tests of the orchestrated clusters: real Patroni (on etcd, behind
//! HAProxy) and real pg_auto_failover, switched over and killed. They print
//! the measured times (visible with `--nocapture`, or in the output of a
//! failing test).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use resilient_tx_testkit::{
    AutoFailoverFormation, PatroniCluster, Via, WRITE_PROBE_TABLE, init_tracing,
};
use tokio::time::timeout;
use tokio_postgres::{Client, NoTls};

/// How long a new primary may take to accept writes after a switchover.
const SWITCHOVER_BOUND: Duration = Duration::from_secs(60);

/// How long Patroni may take to replace a killed leader: the leader lock's
/// 20 s time to live, plus generous slack for a busy machine.
const PATRONI_FAILOVER_BOUND: Duration = Duration::from_secs(45);

/// How long pg_auto_failover may take to replace a killed primary (about
/// 3 s unhealthy + 2 s demote timeout with the kit's settings).
const AUTO_FAILOVER_BOUND: Duration = Duration::from_secs(45);

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `f` with an overall deadline, so a hanging kit fails instead of
/// blocking the run.
async fn bounded<F: std::future::Future<Output = TestResult>>(f: F) -> TestResult {
    timeout(Duration::from_secs(180), f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test exceeded 180 s"))?
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The port of the server `client` is connected to, and whether it is a
/// standby.
async fn server_of(client: &Client) -> Result<(i32, bool), tokio_postgres::Error> {
    let row = client
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn notes(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query("SELECT note FROM orchestrator_notes ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Processes whose command line mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_switchover_moves_writes_to_the_other_node() -> TestResult {
    init_tracing();
    bounded(async {
        let started = Instant::now();
        let cluster = PatroniCluster::start().await?;
        eprintln!("Patroni cluster of 2 started in {:?}", started.elapsed());
        assert_eq!(cluster.leader().await?, 0);
        for node in cluster.nodes() {
            assert!(![5432, 2379, 2380, 8008, 6432].contains(&node.port()));
        }

        let writer = connect(&cluster.write_url()).await?;
        assert_eq!(server_of(&writer).await?, (i32::from(cluster.nodes()[0].port()), false));
        writer
            .batch_execute(
                "CREATE TABLE orchestrator_notes (id serial PRIMARY KEY, note text NOT NULL);
                 INSERT INTO orchestrator_notes (note) VALUES ('before the switchover')",
            )
            .await?;
        let reader = connect(&cluster.read_url()).await?;
        assert_eq!(server_of(&reader).await?, (i32::from(cluster.nodes()[1].port()), true));

        let switched = Instant::now();
        assert_eq!(cluster.switchover(Some(1)).await?, 1);
        let via_proxy = cluster.wait_writable(Via::Proxy, SWITCHOVER_BOUND).await?;
        let via_multi_host = cluster.wait_writable(Via::MultiHost, SWITCHOVER_BOUND).await?;
        eprintln!(
            "switchover: writable through HAProxy after {:?}, through the multi-host URL after {:?}",
            via_proxy - switched,
            via_multi_host - switched
        );
        assert_eq!(cluster.leader().await?, 1);

        let writer = connect(&cluster.write_url()).await?;
        assert_eq!(server_of(&writer).await?, (i32::from(cluster.nodes()[1].port()), false));
        let multi = connect(&cluster.multi_host_url()).await?;
        assert_eq!(server_of(&multi).await?, (i32::from(cluster.nodes()[1].port()), false));
        multi
            .batch_execute("INSERT INTO orchestrator_notes (note) VALUES ('after the switchover')")
            .await?;
        assert_eq!(
            notes(&writer).await?,
            ["before the switchover", "after the switchover"]
        );

        // The former leader follows the new one.
        assert_eq!(cluster.wait_healthy(SWITCHOVER_BOUND).await?, 1);
        let old = connect(&cluster.nodes()[0].url()).await?;
        assert!(server_of(&old).await?.1, "node 0 is a standby now");

        let dir = cluster.dir().to_owned();
        assert!(!processes_mentioning(&dir).is_empty());
        drop((writer, reader, multi, old));
        drop(cluster);
        assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
        assert!(!dir.exists());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_killed_leader_is_replaced_and_rejoins() -> TestResult {
    init_tracing();
    bounded(async {
        let cluster = PatroniCluster::start().await?;
        let writer = connect(&cluster.write_url()).await?;
        writer
            .batch_execute(
                "CREATE TABLE orchestrator_notes (id serial PRIMARY KEY, note text NOT NULL);
                 INSERT INTO orchestrator_notes (note) VALUES ('before the kill')",
            )
            .await?;
        // The replica has the row before the leader dies (asynchronous
        // replication gives no such promise by itself).
        let replica = connect(&cluster.nodes()[1].url()).await?;
        timeout(Duration::from_secs(30), async {
            while notes(&replica).await.map(|n| n.len()).unwrap_or(0) < 1 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await?;

        let killed = cluster.kill_leader().await?;
        assert_eq!(killed.node, 0);
        assert!(!cluster.nodes()[0].is_running());
        let via_proxy = cluster
            .wait_writable(Via::Proxy, PATRONI_FAILOVER_BOUND)
            .await?;
        let direct = cluster
            .wait_writable(Via::Node(1), PATRONI_FAILOVER_BOUND)
            .await?;
        eprintln!(
            "failover after SIGKILL of the leader: writable through HAProxy after {:?}, \
             on node 1 after {:?}",
            via_proxy - killed.at,
            direct - killed.at
        );
        assert_eq!(cluster.leader().await?, 1);
        let writer = connect(&cluster.write_url()).await?;
        assert_eq!(
            server_of(&writer).await?,
            (i32::from(cluster.nodes()[1].port()), false)
        );
        assert_eq!(notes(&writer).await?, ["before the kill"]);

        // Started again, the former leader is rewound and follows node 1.
        let restarted = Instant::now();
        cluster.start_node(0)?;
        assert_eq!(cluster.wait_healthy(Duration::from_secs(90)).await?, 1);
        eprintln!(
            "the killed leader rejoined as a replica in {:?}",
            restarted.elapsed()
        );
        let old = connect(&cluster.nodes()[0].url()).await?;
        assert!(server_of(&old).await?.1, "node 0 is a standby now");
        // It streams from the new timeline: a write on node 1 reaches it.
        writer
            .batch_execute("INSERT INTO orchestrator_notes (note) VALUES ('after the rejoin')")
            .await?;
        timeout(Duration::from_secs(30), async {
            while notes(&old).await.map(|n| n.len()).unwrap_or(0) < 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await?;
        assert_eq!(notes(&old).await?, ["before the kill", "after the rejoin"]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_synchronous_mode_keeps_a_commit_across_the_kill() -> TestResult {
    init_tracing();
    bounded(async {
        let started = Instant::now();
        let cluster = PatroniCluster::builder()
            .synchronous_mode(true)
            .start()
            .await?;
        eprintln!(
            "synchronous Patroni cluster started in {:?}",
            started.elapsed()
        );
        let members = cluster.members().await?;
        assert!(
            members
                .iter()
                .any(|m| m.name == "node1" && m.role == "sync_standby"),
            "{members:?}"
        );

        let writer = connect(&cluster.write_url()).await?;
        writer
            .batch_execute(
                "CREATE TABLE orchestrator_notes (id serial PRIMARY KEY, note text NOT NULL)",
            )
            .await?;
        // Acknowledged means the synchronous standby has it: no waiting for
        // replication here, unlike the asynchronous test.
        writer
            .batch_execute("INSERT INTO orchestrator_notes (note) VALUES ('acknowledged')")
            .await?;

        let killed = cluster.kill_leader().await?;
        let writable = cluster
            .wait_writable(Via::MultiHost, PATRONI_FAILOVER_BOUND)
            .await?;
        eprintln!(
            "synchronous failover: writable through the multi-host URL after {:?}",
            writable - killed.at
        );
        let multi = connect(&cluster.multi_host_url()).await?;
        assert_eq!(
            server_of(&multi).await?,
            (i32::from(cluster.nodes()[1].port()), false)
        );
        assert_eq!(notes(&multi).await?, ["acknowledged"]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_three_nodes_switch_over_to_a_replica_of_patronis_choice() -> TestResult {
    init_tracing();
    bounded(async {
        let started = Instant::now();
        let cluster = PatroniCluster::builder()
            .nodes(3)
            .parameter("work_mem", "8MB")
            .start()
            .await?;
        eprintln!("Patroni cluster of 3 started in {:?}", started.elapsed());
        let writer = connect(&cluster.write_url()).await?;
        let work_mem: String = writer.query_one("SHOW work_mem", &[]).await?.get(0);
        assert_eq!(work_mem, "8MB");

        let switched = Instant::now();
        let new = cluster.switchover(None).await?;
        assert!(new == 1 || new == 2, "new leader {new}");
        let writable = cluster.wait_writable(Via::Proxy, SWITCHOVER_BOUND).await?;
        eprintln!(
            "switchover to node {new}: writable through HAProxy after {:?}",
            writable - switched
        );
        assert_eq!(cluster.wait_healthy(SWITCHOVER_BOUND).await?, new);
        let up = cluster.haproxy().write_servers_up().await?;
        assert_eq!(up, [cluster.nodes()[new].name()]);
        // Reads go round robin to the two replicas, the old leader included.
        let mut read_ports = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let reader = connect(&cluster.read_url()).await?;
            let (port, standby) = server_of(&reader).await?;
            assert!(standby);
            read_ports.insert(port);
        }
        let replicas: std::collections::BTreeSet<i32> = cluster
            .nodes()
            .iter()
            .filter(|node| node.index() != new)
            .map(|node| i32::from(node.port()))
            .collect();
        assert_eq!(read_ports, replicas);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn patroni_builder_rejects_impossible_options() {
    for (builder, expected) in [
        (PatroniCluster::builder().nodes(0), "1 to 5 nodes"),
        (PatroniCluster::builder().ttl(10), "ttl >= 20"),
        (
            PatroniCluster::builder().ttl(20).retry_timeout(10),
            "loop_wait + 2 * retry_timeout <= ttl",
        ),
        (
            PatroniCluster::builder().synchronous_mode_strict(true),
            "needs synchronous_mode",
        ),
    ] {
        let err = builder.start().await.expect_err("invalid options");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_failover_switchover_moves_writes_to_the_other_node() -> TestResult {
    init_tracing();
    bounded(async {
        let started = Instant::now();
        let formation = AutoFailoverFormation::start().await?;
        eprintln!(
            "pg_auto_failover formation (monitor + 2) started in {:?}",
            started.elapsed()
        );
        assert_eq!(formation.primary().await?, 0);
        let url = formation.url().to_owned();
        for node in formation.nodes() {
            assert!(url.contains(&format!("127.0.0.1:{}", node.port())), "{url}");
        }
        assert!(url.contains("target_session_attrs=read-write"), "{url}");

        let client = connect(&url).await?;
        assert_eq!(
            server_of(&client).await?,
            (i32::from(formation.nodes()[0].port()), false)
        );
        client
            .batch_execute(
                "CREATE TABLE orchestrator_notes (id serial PRIMARY KEY, note text NOT NULL);
                 INSERT INTO orchestrator_notes (note) VALUES ('before the switchover')",
            )
            .await?;

        let switched = Instant::now();
        assert_eq!(formation.switchover().await?, 1);
        let writable = formation
            .wait_writable(Via::MultiHost, SWITCHOVER_BOUND)
            .await?;
        eprintln!(
            "pg_auto_failover switchover: writable through the formation URL after {:?}",
            writable - switched
        );
        let client = connect(&url).await?;
        assert_eq!(
            server_of(&client).await?,
            (i32::from(formation.nodes()[1].port()), false)
        );
        client
            .batch_execute("INSERT INTO orchestrator_notes (note) VALUES ('after the switchover')")
            .await?;
        assert_eq!(
            notes(&client).await?,
            ["before the switchover", "after the switchover"]
        );
        assert_eq!(formation.wait_settled(SWITCHOVER_BOUND).await?, 1);

        let dir = formation.dir().to_owned();
        drop(client);
        drop(formation);
        assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
        assert!(!dir.exists());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_failover_killed_primary_is_replaced() -> TestResult {
    init_tracing();
    bounded(async {
        let formation = AutoFailoverFormation::start().await?;
        let client = connect(formation.url()).await?;
        client
            .batch_execute(
                "CREATE TABLE orchestrator_notes (id serial PRIMARY KEY, note text NOT NULL);
                 INSERT INTO orchestrator_notes (note) VALUES ('before the kill')",
            )
            .await?;
        let err = formation
            .wait_writable(Via::Proxy, Duration::from_secs(1))
            .await
            .expect_err("no proxy");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);

        let killed = formation.kill_primary().await?;
        assert_eq!(killed.node, 0);
        let writable = formation
            .wait_writable(Via::MultiHost, AUTO_FAILOVER_BOUND)
            .await?;
        eprintln!(
            "pg_auto_failover failover after SIGKILL of the primary: writable through the \
             formation URL after {:?}",
            writable - killed.at
        );
        let client = connect(formation.url()).await?;
        assert_eq!(
            server_of(&client).await?,
            (i32::from(formation.nodes()[1].port()), false)
        );
        // pg_auto_failover's primary commits synchronously once its standby
        // caught up, so the row survived the kill.
        assert_eq!(notes(&client).await?, ["before the kill"]);
        assert_eq!(formation.wait_settled(SWITCHOVER_BOUND).await?, 1);
        assert_eq!(formation.primary().await?, 1);

        let probe_rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {WRITE_PROBE_TABLE}"), &[])
            .await?
            .get(0);
        assert!(probe_rows >= 1);
        Ok(())
    })
    .await
}

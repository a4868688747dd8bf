//! Protocol-aware cuts: before and after a statement, before and after COMMIT,
//! on TLS-negotiating connections, and at random from a seed.

use std::time::Instant;

use resilient_tx_testkit::{
    CutCounts, CutPoint, CutRule, FaultProxy, PgCluster, RandomCuts, init_tracing,
};
use tokio_postgres::{Client, NoTls};

use crate::common::{TestResult, bounded, connect, count_rows};

/// A cluster with `t(n int)`, a proxy in front of it, and a client through it.
async fn cut_setup() -> Result<(PgCluster, FaultProxy, Client), Box<dyn std::error::Error>> {
    let cluster = PgCluster::start().await?;
    cluster
        .admin()
        .await?
        .batch_execute("CREATE TABLE t(n int)")
        .await?;
    let proxy = FaultProxy::start(cluster.socket_addr()).await?;
    let client = connect(&cluster.url_via(&proxy)).await?;
    Ok((cluster, proxy, client))
}

/// Rows of `t`, counted on a direct connection.
async fn rows_of_t(cluster: &PgCluster) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(count_rows(&cluster.admin().await?, "t").await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_before_statement_never_reaches_the_server() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;

        // A simple query.
        proxy.cut_next(CutPoint::BeforeStatement);
        assert_eq!(
            proxy.pending_cuts(),
            [CutRule::at(CutPoint::BeforeStatement)]
        );
        let error = client
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .expect_err("the connection is cut");
        eprintln!("the client saw: {error}");
        assert_eq!(rows_of_t(&cluster).await?, 0, "the server never saw it");
        assert!(proxy.pending_cuts().is_empty(), "one-shot");

        // The extended protocol: Bind, Execute, Sync of a prepared statement.
        let client = connect(&cluster.url_via(&proxy)).await?;
        let insert = client.prepare("INSERT INTO t VALUES ($1)").await?;
        proxy.cut_next(CutPoint::BeforeStatement);
        client
            .execute(&insert, &[&2])
            .await
            .expect_err("the connection is cut");
        assert_eq!(rows_of_t(&cluster).await?, 0, "the server never saw it");

        // Cutting is off again: a new connection works.
        let client = connect(&cluster.url_via(&proxy)).await?;
        client.execute("INSERT INTO t VALUES ($1)", &[&3]).await?;
        assert_eq!(rows_of_t(&cluster).await?, 1);
        assert_eq!(
            proxy.cuts(),
            CutCounts {
                before_statement: 2,
                ..CutCounts::default()
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_after_statement_executes_it_but_loses_the_reply() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;
        // Only the statement that mentions the table.
        proxy.cut_next_matching(CutPoint::AfterStatementBeforeReply, "INSERT INTO t");
        client.batch_execute("SELECT 1").await?;
        client.query_one("SELECT count(*) FROM t", &[]).await?;
        client
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .expect_err("the reply never arrives");
        assert_eq!(rows_of_t(&cluster).await?, 1, "the server executed it");
        assert_eq!(
            proxy.cuts(),
            CutCounts {
                after_statement: 1,
                ..CutCounts::default()
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_after_commit_commits_but_the_client_sees_an_error() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;

        // Armed before the transaction: BEGIN and INSERT are not COMMITs and
        // go through.
        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        client.batch_execute("BEGIN").await?;
        client.execute("INSERT INTO t VALUES (1)", &[]).await?;
        assert_eq!(rows_of_t(&cluster).await?, 0, "not committed yet");
        let error = client
            .batch_execute("COMMIT")
            .await
            .expect_err("the client never learns that COMMIT succeeded");
        eprintln!("the client saw: {error}");
        assert_eq!(rows_of_t(&cluster).await?, 1, "yet the row IS committed");

        // Pipelined, as the runtime sends a marker INSERT with its COMMIT:
        // replies to the statements before COMMIT still reach the client.
        let client = connect(&cluster.url_via(&proxy)).await?;
        let insert = client.prepare("INSERT INTO t VALUES ($1)").await?;
        client.batch_execute("BEGIN").await?;
        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        let (inserted, committed) = futures_util::future::join(
            client.execute(&insert, &[&2]),
            client.batch_execute("commit;"),
        )
        .await;
        assert_eq!(inserted?, 1, "the INSERT's reply went through");
        committed.expect_err("the COMMIT's did not");
        assert_eq!(rows_of_t(&cluster).await?, 2);
        assert_eq!(
            proxy.cuts(),
            CutCounts {
                after_commit: 2,
                ..CutCounts::default()
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cut_before_commit_rolls_back() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, proxy, client) = cut_setup().await?;
        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await?;
        proxy.cut_next(CutPoint::BeforeCommit);
        client
            .batch_execute("COMMIT")
            .await
            .expect_err("the connection is cut");
        assert_eq!(
            rows_of_t(&cluster).await?,
            0,
            "COMMIT never reached the server"
        );
        assert_eq!(proxy.cuts().before_commit, 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_frames_connections_that_sent_an_ssl_request() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    init_tracing();
    bounded(async {
        let (cluster, proxy, _client) = cut_setup().await?;
        // What a driver with sslmode=prefer and TLS support sends first.
        let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await?;
        stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await?;
        let mut answer = [0u8];
        stream.read_exact(&mut answer).await?;
        assert_eq!(answer[0], b'N', "the kit's servers run without TLS");
        let mut config: tokio_postgres::Config = cluster.url_via(&proxy).parse()?;
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, connection) = config.connect_raw(stream, NoTls).await?;
        tokio::spawn(connection);

        proxy.cut_next(CutPoint::AfterCommitBeforeReply);
        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await?;
        client
            .batch_execute("COMMIT")
            .await
            .expect_err("the reply is cut");
        assert_eq!(rows_of_t(&cluster).await?, 1);
        assert_eq!(proxy.cuts().after_commit, 1);
        Ok(())
    })
    .await
}

/// What happened to each of `rounds` transactions (`BEGIN`, `INSERT`,
/// `COMMIT`, each a simple query) run one after the other through a proxy
/// cutting at random, reconnecting after each failure.
async fn random_cut_run(
    cluster: &PgCluster,
    cuts: RandomCuts,
    rounds: i32,
) -> Result<(Vec<bool>, CutCounts, i64), Box<dyn std::error::Error>> {
    let admin = cluster.admin().await?;
    admin.batch_execute("TRUNCATE t").await?;
    let proxy = FaultProxy::start(cluster.socket_addr()).await?;
    let url = cluster.url_via(&proxy);
    proxy.cut_randomly(cuts);
    let mut client = connect(&url).await?;
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        let result = async {
            client.batch_execute("BEGIN").await?;
            client
                .batch_execute(&format!("INSERT INTO t VALUES ({round})"))
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        outcomes.push(result.is_ok());
        if result.is_err() {
            client = connect(&url).await?;
        }
    }
    proxy.stop_cutting();
    Ok((outcomes, proxy.cuts(), count_rows(&admin, "t").await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_random_cuts_are_exact_and_reproducible() -> TestResult {
    init_tracing();
    bounded(async {
        let (cluster, _proxy, _client) = cut_setup().await?;
        let seed = 20_240_611;
        let cuts = RandomCuts::new(0.08, seed).commit_rate(0.25);
        let started = Instant::now();
        let (outcomes, counts, rows) = random_cut_run(&cluster, cuts, 300).await?;
        eprintln!("seed {seed}: {counts:?} in {:?}", started.elapsed());

        let succeeded = outcomes.iter().filter(|ok| **ok).count() as u64;
        let failed = outcomes.len() as u64 - succeeded;
        assert_eq!(
            failed,
            counts.total(),
            "every failure is a cut, every cut a failure"
        );
        assert!(
            counts.before_statement > 0 && counts.after_statement > 0,
            "{counts:?}"
        );
        assert!(
            counts.before_commit > 0 && counts.after_commit > 0,
            "{counts:?}"
        );
        assert_eq!(counts.after_without_reply, 0, "{counts:?}");
        // Exactly the transactions that succeeded and those whose COMMIT was
        // executed before the cut are in the table.
        assert_eq!(
            rows as u64,
            succeeded + counts.after_commit,
            "seed {seed}: {counts:?}"
        );

        // The same seed cuts the same statements.
        let (again, counts_again, _) = random_cut_run(&cluster, cuts, 300).await?;
        assert_eq!(again, outcomes, "seed {seed}");
        assert_eq!(counts_again, counts);
        Ok(())
    })
    .await
}

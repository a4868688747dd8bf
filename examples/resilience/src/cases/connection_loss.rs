//! Connection loss: CL-01 database shutdown, CL-02 network partition, CL-03 connection
//! drop, CL-04 slow network.

use std::time::Duration;

use resilient_tx_testkit::{FaultProxy, PgCluster};
use tokio::time::Instant;

use crate::harness::{
    App, CaseResult, Recorder, Reply, backends, check_encrypted, config, names, poll, registry,
    start_cluster, stop, tally, url, url_via,
};
use crate::text::secs;

/// Margin allowed above a deadline for an answer to come back on a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);

/// Sends `/health/ready` every 250 ms until it answers 200; how many probes it took.
async fn probes_until_ready(app: &App, most: u32) -> (u32, Reply) {
    let mut probes = 0;
    loop {
        probes += 1;
        let reply = app.http.get("/health/ready").await;
        if reply.status == 200 || probes >= most {
            return (probes, reply);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// CL-01.
pub(crate) async fn database_shutdown(rec: &Recorder) -> CaseResult {
    rec.step("starting PostgreSQL and the gateway");
    let cluster = start_cluster().await?;
    let mut settings = config(&url(&cluster), "gw-cl01");
    settings.deadline = Duration::from_secs(4);
    let deadline = settings.deadline;
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    let before = app.http.create("cl01-before").await;
    if before.status != 201 {
        return Err(stop(format!("the first create failed: {}", before.brief())));
    }
    let opened_before = app.metrics().connections_opened;

    rec.step("stopping the server (fast shutdown)");
    rec.fault_begins("server stopped");
    cluster.stop_fast().await?;

    let live = app.http.get("/health/live").await;
    rec.check(
        live.status == 200,
        format!(
            "/health/live answers 200 while the database is down ({})",
            live.brief()
        ),
    );
    let ready = app.http.get("/health/ready").await;
    rec.check(
        ready.is(503, "database_unavailable")
            && ready.retry_after.is_some()
            && ready.elapsed < MARGIN,
        format!(
            "/health/ready answers 503 database_unavailable with Retry-After within {} ({})",
            secs(MARGIN),
            ready.brief()
        ),
    );
    let list = app.http.get("/api/servers").await;
    let create = app.http.create("cl01-during").await;
    for (what, reply) in [("GET /api/servers", &list), ("POST /api/servers", &create)] {
        rec.check(
            reply.is(503, "database_unavailable")
                && reply.acceptable()
                && reply.body["error"]["retryable"] == true
                && reply.elapsed < deadline + MARGIN,
            format!(
                "{what} answers 503 database_unavailable (retryable, Retry-After, a message) \
                 within the {} deadline, not a 500 or a hang ({})",
                secs(deadline),
                reply.brief()
            ),
        );
    }

    rec.step("starting the server again");
    cluster.start_again().await?;
    rec.fault_ends();
    let restarted = Instant::now();
    let (probes, ready) = probes_until_ready(&app, 40).await;
    rec.check(
        ready.status == 200 && probes <= 2,
        format!(
            "/health/ready answers 200 on probe {probes} after the start (the matrix asks for \
             one; one more is allowed for a loaded machine) ({})",
            ready.brief()
        ),
    );
    let api_back = app.wait_api().await;
    rec.check(
        api_back.is_some(),
        "GET /api/servers answers 200 again without a restart of the gateway",
    );
    rec.recovery(restarted, restarted.elapsed());
    let list_after = app.http.get("/api/servers").await;
    rec.check(
        names(&list_after.body) == ["cl01-before"],
        format!(
            "the write before the outage is there and the refused one is not ({:?})",
            names(&list_after.body)
        ),
    );
    let after = app.http.create("cl01-after").await;
    rec.check(
        after.status == 201,
        format!("writes succeed again ({})", after.brief()),
    );
    let m = app.metrics();
    rec.check(
        m.connect_failures > 0 && m.connections_opened > opened_before,
        format!(
            "the same gateway (same pool) saw the outage and reconnected: {} failed connects, \
             {} connections opened since",
            m.connect_failures,
            m.connections_opened - opened_before
        ),
    );
    rec.summary(format!(
        "down: ready 503 in {}, API 503 database_unavailable in {} (list) / {} (create); \
         after start: ready 200 on probe {probes}, API 200 with no gateway restart",
        secs(ready.elapsed.min(MARGIN)),
        secs(list.elapsed),
        secs(create.elapsed)
    ));
    app.shutdown().await;
    Ok(())
}

/// CL-02.
pub(crate) async fn network_partition(rec: &Recorder) -> CaseResult {
    rec.step("starting PostgreSQL, a fault proxy and the gateway behind it");
    let cluster = start_cluster().await?;
    let proxy = FaultProxy::start(cluster.socket_addr()).await?;
    let mut settings = config(&url_via(&cluster, &proxy), "gw-cl02");
    settings.statement_timeout = Some(Duration::from_secs(1));
    settings.deadline = Duration::from_secs(3);
    let deadline = settings.deadline;
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    let before = app.http.create("cl02-before").await;
    if before.status != 201 {
        return Err(stop(format!("the first create failed: {}", before.brief())));
    }
    check_encrypted(rec, &cluster, "gw-cl02", "server, through the proxy").await?;

    rec.step("partition: the proxy swallows all traffic, in both directions");
    rec.fault_begins("network partition (blackhole)");
    proxy.blackhole();
    let ready = app.http.get("/health/ready").await;
    rec.check(
        ready.is(503, "database_unavailable") && ready.elapsed < MARGIN,
        format!(
            "/health/ready answers 503 within the probe's 1 s bound (+ margin) ({})",
            ready.brief()
        ),
    );
    let list = app.http.get("/api/servers").await;
    let create = app.http.create("cl02-during").await;
    for (what, reply) in [("GET /api/servers", &list), ("POST /api/servers", &create)] {
        rec.check(
            (reply.is(503, "database_unavailable") || reply.is(504, "timeout"))
                && reply.acceptable()
                && reply.elapsed < deadline + MARGIN,
            format!(
                "{what} answers 503/504 within the {} deadline, not after minutes ({})",
                secs(deadline),
                reply.brief()
            ),
        );
    }
    let live = app.http.get("/health/live").await;
    rec.check(live.status == 200, "/health/live still answers 200");

    rec.step("healing the partition");
    proxy.pass();
    rec.fault_ends();
    let healed = Instant::now();
    let back = app.wait_api().await;
    rec.check(
        back.is_some(),
        "GET /api/servers answers 200 after the heal",
    );
    rec.recovery(healed, healed.elapsed());
    let ready_back = app.wait_ready(Duration::from_secs(10)).await.is_ok();
    rec.check(ready_back, "/health/ready answers 200 after the heal");
    let after = app.http.create("cl02-after").await;
    rec.check(
        after.status == 201,
        format!("writes succeed again ({})", after.brief()),
    );
    // Whatever the partition held back has reached the server by now: the refused
    // create's INSERT arrived without its COMMIT, on a connection already closed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = registry(&cluster).await?;
    rec.check(
        !rows.contains_key("cl02-during")
            && rows.contains_key("cl02-before")
            && rows.contains_key("cl02-after"),
        format!(
            "the create refused during the partition was not applied; the others were \
             ({} rows)",
            rows.len()
        ),
    );
    rec.summary(format!(
        "partitioned: ready {}, list {}, create {}; after heal 200 again",
        ready.brief(),
        list.brief(),
        create.brief()
    ));
    app.shutdown().await;
    Ok(())
}

/// CL-03.
pub(crate) async fn connection_drop(rec: &Recorder) -> CaseResult {
    rec.step("starting PostgreSQL and the gateway");
    let cluster = start_cluster().await?;
    let settings = config(&url(&cluster), "gw-cl03");
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    app.http.set_accounts(&[]).await?;

    rec.step("load: 6 clients creating, listing and running 0.3 s transactions for 4 s");
    let load_for = Duration::from_secs(4);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..6 {
        let http = app.http.clone();
        workers.push(tokio::spawn(async move {
            let mut replies: Vec<(String, Reply)> = Vec::new();
            let mut n = 0;
            while started.elapsed() < load_for {
                n += 1;
                match (worker + n) % 3 {
                    0 => {
                        let name = format!("cl03-{worker}-{n}");
                        let reply = http.create(&name).await;
                        replies.push((name, reply));
                    }
                    1 => replies.push((String::new(), http.get("/api/servers?name=x").await)),
                    _ => replies.push((String::new(), http.sleep(0.3, 1, None).await)),
                }
            }
            replies
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killing = Instant::now();
    let first = cluster.terminate_backends("gw-cl03").await?;
    rec.fault_at(killing, format!("{first} connections terminated"));
    rec.step(format_args!("terminated {first} gateway connections"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killing = Instant::now();
    let second = cluster.terminate_backends("gw-cl03").await?;
    rec.fault_at(killing, format!("{second} connections terminated"));
    rec.step(format_args!(
        "terminated {second} gateway connections again"
    ));
    let mut replies = Vec::new();
    for worker in workers {
        replies.extend(
            worker
                .await
                .map_err(|e| stop(format!("a client failed: {e}")))?,
        );
    }
    rec.check(
        first > 0 && second > 0,
        format!("pg_terminate_backend killed gateway connections twice ({first}, then {second})"),
    );
    let all: Vec<&Reply> = replies.iter().map(|(_, r)| r).collect();
    let bad: Vec<String> = all
        .iter()
        .filter(|r| {
            !(r.ok()
                || (r.acceptable()
                    && (r.is(503, "database_unavailable") || r.is(503, "commit_unknown"))))
        })
        .map(|r| r.brief())
        .collect();
    rec.check(
        bad.is_empty(),
        format!(
            "every request succeeded or answered a documented 503, never a 500 ({} requests: \
             {}; other: {bad:?})",
            all.len(),
            tally(all.iter().copied())
        ),
    );
    let m = app.metrics();
    rec.check(
        m.retries_connection + m.stale_connections_replaced > 0,
        format!(
            "killed connections were retried on fresh ones ({} connection retries, {} stale \
             connections replaced at checkout)",
            m.retries_connection, m.stale_connections_replaced
        ),
    );
    let rows = registry(&cluster).await?;
    let mut lost = Vec::new();
    let mut phantom = Vec::new();
    for (name, reply) in replies.iter().filter(|(name, _)| !name.is_empty()) {
        if reply.status == 201 && rows.get(name) != reply.body["id"].as_i64().as_ref() {
            lost.push(name.clone());
        }
        if reply.is(503, "database_unavailable") && rows.contains_key(name) {
            phantom.push(name.clone());
        }
    }
    rec.check(
        lost.is_empty() && phantom.is_empty(),
        format!(
            "each acknowledged create is stored once under its id, no refused one is \
             (missing: {lost:?}, applied though refused: {phantom:?})"
        ),
    );

    rec.step("waiting for the pool to refill to its minimum");
    let refill_started = Instant::now();
    let refilled = refill(&app, &cluster, Duration::from_secs(20)).await?;
    rec.check(
        refilled.is_some(),
        format!(
            "the pool refilled to at least {} live connections",
            app.min_idle
        ),
    );
    if refilled.is_some() {
        rec.recovery(refill_started, refill_started.elapsed());
    }
    rec.summary(format!(
        "{} requests while {first}+{second} connections were killed: {}; {} retries on fresh \
         connections; pool refilled",
        all.len(),
        tally(all.iter().copied()),
        m.retries_connection
    ));
    app.shutdown().await;
    Ok(())
}

/// Waits until the server has at least `min_idle` live connections of the gateway and
/// `/health/status` shows as many, probing readiness meanwhile as an orchestrator
/// would (the pool tops itself up when it is used).
pub(crate) async fn refill(
    app: &App,
    cluster: &PgCluster,
    limit: Duration,
) -> Result<Option<Duration>, crate::harness::CaseError> {
    let started = Instant::now();
    let min = i64::from(app.min_idle);
    loop {
        let _ = app.http.get("/health/ready").await;
        let (live, busy) = backends(cluster, &app.application_name).await?;
        let status = app.status().await;
        let connections = status["pool"]["connections"].as_i64().unwrap_or(0);
        let in_use = status["pool"]["in_use"].as_i64().unwrap_or(-1);
        if live >= min && busy == 0 && connections >= min && in_use == 0 {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= limit {
            tracing::warn!(live, busy, %status, "the pool did not refill");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CL-04.
pub(crate) async fn slow_network(rec: &Recorder) -> CaseResult {
    rec.step("starting PostgreSQL, a fault proxy and the gateway behind it");
    let cluster = start_cluster().await?;
    let proxy = FaultProxy::start(cluster.socket_addr()).await?;
    let mut settings = config(&url_via(&cluster, &proxy), "gw-cl04");
    // A 1 s statement timeout makes a 1.5 s attempt timer; a 2 s deadline leaves room
    // for one attempt and the start of a second.
    settings.statement_timeout = Some(Duration::from_secs(1));
    settings.deadline = Duration::from_secs(2);
    settings.pool.connect_timeout = Duration::from_secs(3);
    let deadline = settings.deadline;
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    let before = app.http.create("cl04-before").await;
    if before.status != 201 {
        return Err(stop(format!("the first create failed: {}", before.brief())));
    }
    let min_idle = i64::from(app.min_idle);
    let http = app.http.clone();
    poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let http = http.clone();
        async move {
            http.get("/health/status").await.body["pool"]["idle"]
                .as_i64()
                .unwrap_or(0)
                >= min_idle
        }
    })
    .await;

    rec.step("latency 100 ms each way: requests within the 1.5 s attempt timer");
    rec.fault_begins("latency 100 ms each way");
    proxy.latency(Duration::from_millis(100));
    let mut fast = Vec::new();
    for i in 0..4 {
        fast.push(app.http.get("/api/servers").await);
        if i % 2 == 0 {
            fast.push(app.http.create(&format!("cl04-slow-ok-{i}")).await);
        }
    }
    let slowest = fast.iter().map(|r| r.elapsed).max().unwrap_or_default();
    rec.check(
        fast.iter().all(Reply::ok) && slowest >= Duration::from_millis(200),
        format!(
            "with 100 ms each way every request succeeds, slower but within the timeout ({}; \
             slowest {})",
            tally(&fast),
            secs(slowest)
        ),
    );
    rec.figure("slowest request at 100 ms latency", secs(slowest));

    rec.step("latency 1000 ms each way: a round trip exceeds the attempt timer");
    rec.fault_ends();
    rec.fault_begins("latency 1000 ms each way");
    proxy.latency(Duration::from_millis(1000));
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(app.http.get("/api/servers").await);
    }
    slow.push(app.http.create("cl04-too-slow").await);
    let bounded = slow.iter().all(|r| {
        r.acceptable()
            && (r.is(504, "timeout") || r.is(503, "database_unavailable"))
            && r.elapsed < deadline + MARGIN
    });
    let timeouts = slow.iter().filter(|r| r.is(504, "timeout")).count();
    rec.check(
        bounded && timeouts > 0,
        format!(
            "over the timeout, requests answer 504 timeout (or 503 when the retry could not \
             even connect) within the {} deadline ({})",
            secs(deadline),
            tally(&slow)
        ),
    );

    rec.step("latency removed");
    proxy.pass();
    rec.fault_ends();
    let healed = Instant::now();
    let back = app.wait_api().await;
    rec.check(
        back.is_some(),
        "requests succeed again once the latency goes",
    );
    rec.recovery(healed, healed.elapsed());
    let after = app.http.create("cl04-after").await;
    rec.check(
        after.status == 201,
        format!("writes succeed again ({})", after.brief()),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = registry(&cluster).await?;
    rec.check(
        !rows.contains_key("cl04-too-slow")
            && rows.contains_key("cl04-slow-ok-0")
            && rows.contains_key("cl04-slow-ok-2"),
        "the timed-out create was rolled back; the slow but successful ones are stored",
    );
    rec.summary(format!(
        "100 ms: {} (slowest {}); 1000 ms: {} within the deadline; 200 again after",
        tally(&fast),
        secs(slowest),
        tally(&slow)
    ));
    app.shutdown().await;
    Ok(())
}

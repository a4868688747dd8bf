//! The connection pool: CP-01 exhaustion, CP-02 stale connections, CP-03 recovery.

use std::time::Duration;

use tokio::time::Instant;

use super::connection_loss::refill;
use crate::harness::{
    App, CaseResult, Http, Recorder, Reply, backends, config, poll, start_cluster, stop, tally, url,
};
use crate::text::secs;

/// Runs `n` transactions of `seconds` at once; their answers.
async fn concurrent_sleeps(
    http: &Http,
    n: usize,
    seconds: f64,
) -> Result<Vec<Reply>, crate::harness::CaseError> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let http = http.clone();
        tasks.push(tokio::spawn(
            async move { http.sleep(seconds, 1, None).await },
        ));
    }
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(
            task.await
                .map_err(|e| stop(format!("a client failed: {e}")))?,
        );
    }
    Ok(replies)
}

/// CP-01.
pub(crate) async fn exhaustion(rec: &Recorder) -> CaseResult {
    rec.step("starting PostgreSQL and the gateway (pool: 5 kept, 15 at most, 1.5 s pool timeout)");
    let cluster = start_cluster().await?;
    let mut settings = config(&url(&cluster), "gw-cp01");
    settings.pool.pool_timeout = Duration::from_millis(1500);
    settings.statement_timeout = Some(Duration::from_secs(10));
    settings.deadline = Duration::from_secs(15);
    let pool_timeout = settings.pool.pool_timeout;
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    app.http.set_accounts(&[]).await?;

    rec.step("25 concurrent 0.3 s transactions: 10 must queue for a connection");
    rec.fault_begins("25 concurrent 0.3 s transactions");
    let short = concurrent_sleeps(&app.http, 25, 0.3).await?;
    rec.fault_ends();
    let slowest = short.iter().map(|r| r.elapsed).max().unwrap_or_default();
    rec.check(
        short.iter().all(|r| r.status == 200),
        format!(
            "requests beyond the pool's 15 connections queue and all succeed ({}; slowest {})",
            tally(&short),
            secs(slowest)
        ),
    );

    rec.step("25 concurrent 3 s transactions: 10 wait past the pool timeout");
    rec.fault_begins("25 concurrent 3 s transactions");
    let long = {
        let http = app.http.clone();
        tokio::spawn(async move { concurrent_sleeps(&http, 25, 3.0).await })
    };
    // Watch the pool while the load runs: full, with callers queueing behind it.
    let (mut in_use, mut waiting) = (0, 0);
    while !long.is_finished() {
        let during = app.status().await;
        let now_in_use = during["pool"]["in_use"].as_i64().unwrap_or(0);
        let now_waiting = during["pool"]["waiting"].as_i64().unwrap_or(0);
        if now_in_use == 15 && now_waiting > waiting {
            (in_use, waiting) = (now_in_use, now_waiting);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let long = long
        .await
        .map_err(|e| stop(format!("the load failed: {e}")))??;
    rec.fault_ends();
    rec.check(
        in_use == 15 && waiting > 0,
        format!(
            "/health/status showed the pool full with callers waiting ({in_use} in use, \
             {waiting} waiting)"
        ),
    );
    let ok = long.iter().filter(|r| r.status == 200).count();
    let exhausted: Vec<&Reply> = long
        .iter()
        .filter(|r| r.is(503, "pool_exhausted"))
        .collect();
    let promptly = exhausted
        .iter()
        .all(|r| r.acceptable() && r.elapsed < pool_timeout + Duration::from_secs(2));
    rec.check(
        ok + exhausted.len() == long.len() && ok >= 1 && !exhausted.is_empty() && promptly,
        format!(
            "the 15 with a connection succeed, those waiting past the {} pool timeout get 503 \
             pool_exhausted with Retry-After, promptly ({})",
            secs(pool_timeout),
            tally(&long)
        ),
    );
    if let Some(first) = exhausted.iter().map(|r| r.elapsed).min() {
        rec.figure("pool_exhausted answered after", secs(first));
    }

    rec.step("checking that no connection leaked");
    let http = app.http.clone();
    let checking = Instant::now();
    let idle_again = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let http = http.clone();
        async move {
            let status = http.get("/health/status").await.body;
            status["pool"]["in_use"] == 0 && status["pool"]["waiting"] == 0
        }
    })
    .await;
    if let Some(idle_again) = idle_again {
        rec.recovery(checking, idle_again);
    }
    let status = app.status().await;
    let (live, busy) = backends(&cluster, &app.application_name).await?;
    rec.check(
        idle_again.is_some()
            && status["pool"]["connections"].as_i64() <= Some(15)
            && status["pool"]["idle"] == status["pool"]["connections"]
            && busy == 0
            && live <= 15,
        format!(
            "afterwards every connection is idle, none leaked: pool {}, server: {live} \
             connections, {busy} not idle",
            status["pool"]
        ),
    );
    let next = app.http.get("/api/servers").await;
    rec.check(
        next.status == 200,
        format!("the next request succeeds ({})", next.brief()),
    );
    rec.summary(format!(
        "25×0.3 s: {} (queued, slowest {}); 25×3 s: {}; pool idle again ({} connections), no \
         leak",
        tally(&short),
        secs(slowest),
        tally(&long),
        status["pool"]["connections"]
    ));
    app.shutdown().await;
    Ok(())
}

/// CP-02.
pub(crate) async fn stale_connections(rec: &Recorder) -> CaseResult {
    rec.step("starting PostgreSQL and the gateway");
    let cluster = start_cluster().await?;
    let settings = config(&url(&cluster), "gw-cp02");
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    app.http.set_accounts(&[]).await?;

    let mut summary = Vec::new();
    let mut recoveries = Vec::new();
    for (what, crash) in [("fast restart", false), ("crash restart (immediate)", true)] {
        rec.step(format_args!(
            "filling the pool: 15 concurrent 0.5 s transactions"
        ));
        let fill = concurrent_sleeps(&app.http, 15, 0.5).await?;
        let (live, _) = backends(&cluster, &app.application_name).await?;
        let connections = app.status().await["pool"]["connections"]
            .as_i64()
            .unwrap_or(0);
        rec.check(
            fill.iter().all(|r| r.status == 200) && connections == 15 && live == 15,
            format!(
                "before the {what}: the pool is full ({connections} connections, {live} on \
                 the server; {})",
                tally(&fill)
            ),
        );
        let before = app.metrics();
        rec.step(format_args!("{what} of the server"));
        rec.fault_begins(what);
        if crash {
            cluster.restart_immediate().await?;
        } else {
            cluster.restart_fast().await?;
        }
        rec.fault_ends();
        let restarted = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let http = app.http.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    http.get("/api/servers").await
                } else {
                    http.create(&format!("cp02-{}-{i}", u8::from(crash))).await
                }
            }));
        }
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(
                task.await
                    .map_err(|e| stop(format!("a client failed: {e}")))?,
            );
        }
        let took = restarted.elapsed();
        let after = app.metrics();
        let replaced = after.stale_connections_replaced - before.stale_connections_replaced;
        let retried = after.retries_connection - before.retries_connection;
        rec.check(
            replies.iter().all(Reply::ok),
            format!(
                "after the {what}, 20 concurrent requests all succeed: no error reaches a \
                 client ({})",
                tally(&replies)
            ),
        );
        rec.check(
            replaced > 0,
            format!(
                "stale connections were detected and replaced ({replaced} replaced at \
                 checkout, {retried} statements retried on a fresh connection)"
            ),
        );
        rec.figure(format!("all answered after the {what}"), secs(took));
        recoveries.push((took, restarted));
        summary.push(format!(
            "{what}: 20/20 ok, {replaced} stale replaced, {retried} retried"
        ));
    }
    if let Some((worst, from)) = recoveries.into_iter().max() {
        rec.recovery(from, worst);
    }
    rec.summary(summary.join("; "));
    app.shutdown().await;
    Ok(())
}

/// CP-03.
pub(crate) async fn recovery(rec: &Recorder) -> CaseResult {
    rec.step("starting PostgreSQL and the gateway (pool: 5 kept)");
    let cluster = start_cluster().await?;
    let settings = config(&url(&cluster), "gw-cp03");
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    let initial = refill(&app, &cluster, Duration::from_secs(20)).await?;
    rec.check(
        initial.is_some(),
        "at start the pool opens its minimum of 5 connections",
    );

    rec.step("CL-03: terminating every gateway connection");
    let killing = Instant::now();
    let killed = cluster.terminate_backends(&app.application_name).await?;
    rec.fault_at(killing, format!("{killed} connections terminated"));
    let (left, _) = backends(&cluster, &app.application_name).await?;
    rec.check(
        killed >= 5 && left == 0,
        format!("{killed} connections terminated, {left} left on the server"),
    );
    let after_kill = refill(&app, &cluster, Duration::from_secs(20)).await?;
    rec.check(
        after_kill.is_some(),
        "after the kill, the pool is back to 5 live idle connections",
    );
    if let Some(took) = after_kill {
        rec.figure("refill after the kill", secs(took));
    }

    rec.step("CL-01: stopping the server, a failed request, starting it again");
    rec.fault_begins("server stopped");
    cluster.stop_fast().await?;
    let down = app.http.get("/api/servers").await;
    rec.check(
        down.is(503, "database_unavailable"),
        format!("while down the API answers 503 ({})", down.brief()),
    );
    cluster.start_again().await?;
    rec.fault_ends();
    let restarted = Instant::now();
    let after_outage = refill(&app, &cluster, Duration::from_secs(30)).await?;
    rec.check(
        after_outage.is_some(),
        "after the outage, the pool is back to 5 live idle connections",
    );
    if let Some(took) = after_outage {
        rec.recovery(restarted, took);
    }
    // The status endpoint agrees with the server once the dead connections are gone.
    let http = app.http.clone();
    let name = app.application_name.clone();
    let cluster_ref = &cluster;
    let agree = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let (http, name) = (http.clone(), name.clone());
        async move {
            let status = http.get("/health/status").await.body;
            let live = backends(cluster_ref, &name)
                .await
                .map(|(l, _)| l)
                .unwrap_or(-1);
            status["pool"]["connections"].as_i64() == Some(live) && live >= 5
        }
    })
    .await;
    let status = app.status().await;
    let (live, _) = backends(&cluster, &app.application_name).await?;
    rec.check(
        agree.is_some(),
        format!(
            "/health/status shows it: pool {} with {live} live connections on the server; \
             {} connections opened, {} stale ones replaced",
            status["pool"],
            status["metrics"]["connections_opened"],
            status["metrics"]["stale_connections_replaced"]
        ),
    );
    rec.summary(format!(
        "after killing {killed} connections: refilled in {}; after a stop/start: refilled in \
         {}; status pool {}",
        after_kill.map(secs).unwrap_or_else(|| "-".to_owned()),
        after_outage.map(secs).unwrap_or_else(|| "-".to_owned()),
        status["pool"]
    ));
    rec.note(
        "the pool tops itself up to min_idle on every checkout (bb8); the readiness probes \
         the suite sends, as an orchestrator would, are such checkouts. With no traffic at \
         all, bb8's reaper does it within 30 s.",
    );
    app.shutdown().await;
    Ok(())
}

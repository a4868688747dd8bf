//! Failover: FO-01 primary failure, FO-02 replica lag, FO-03 split brain.

use std::collections::HashSet;
use std::time::Duration;

use resilient_tx_testkit::{FaultProxy, PgCluster};
use tokio::time::Instant;

use crate::harness::{
    App, CaseError, CaseResult, Recorder, Reply, Writer, check_encrypted, check_writes, config,
    first_ack_after, longest_gap, multi_host_url, names, poll, registry, start_cluster, stop,
    tally, url,
};
use crate::text::secs;

/// FO-01.
pub(crate) async fn primary_failure(rec: &Recorder) -> CaseResult {
    rec.step("starting a primary and a streaming replica");
    let primary = start_cluster().await?;
    let replica = primary.create_replica().await?;
    let url = multi_host_url(&primary, &[primary.port(), replica.port()]);
    let mut settings = config(&url, "gw-fo01");
    settings.deadline = Duration::from_secs(10);
    settings.retries = 30;
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    let ready = app.http.get("/health/ready").await;
    rec.check(
        ready.body["role"] == "primary",
        format!(
            "the gateway's URL lists both hosts with target_session_attrs=read-write and \
             connects to the primary (role {})",
            ready.body["role"]
        ),
    );

    rec.step("writing continuously (a create every 20 ms, no idempotency key)");
    let writer = Writer::start(app.http.clone(), "fo01", false, 0);
    if !writer.wait_acked(20, Duration::from_secs(30)).await {
        return Err(stop(
            "the writer did not get 20 writes through before the failover",
        ));
    }
    let before_failover = writer.acked();

    rec.step("stopping the primary (fast shutdown)");
    rec.fault_begins("primary stopped, replica being promoted");
    let stopped_at = Instant::now();
    primary.stop_fast().await?;
    rec.step("promoting the replica");
    replica.promote().await?;
    rec.fault_ends();
    let promoted_at = Instant::now();
    rec.figure("stop + promote took", secs(promoted_at - stopped_at));
    let resumed = writer
        .wait_acked(before_failover + 20, Duration::from_secs(60))
        .await;
    let records = writer.stop().await?;
    rec.check(
        resumed,
        format!(
            "writes resumed on the promoted replica without a restart of the gateway \
             ({before_failover} before the failover, {} in all)",
            records.iter().filter(|r| r.acked()).count()
        ),
    );
    let first = first_ack_after(&records, promoted_at);
    if let Some(first) = first {
        rec.recovery(promoted_at, first);
        rec.figure(
            "time from promotion to the first acknowledged write",
            secs(first),
        );
    }
    let gap = longest_gap(&records, stopped_at);
    rec.figure("longest time without an acknowledged write", secs(gap));

    let ready = app.http.get("/health/ready").await;
    rec.check(
        ready.status == 200 && ready.body["role"] == "primary",
        format!(
            "/health/ready answers 200 from the new primary ({})",
            ready.brief()
        ),
    );
    let (acked, refused, unknown) = check_writes(rec, &replica, &records, false).await?;
    // Through the API as well: every acknowledged write is readable after the failover.
    let listed = app.http.get_strong("/api/servers").await;
    let listed: HashSet<String> = names(&listed.body).into_iter().collect();
    let missing: Vec<&str> = records
        .iter()
        .filter(|r| r.acked() && !listed.contains(&r.name))
        .map(|r| r.name.as_str())
        .collect();
    rec.check(
        missing.is_empty(),
        format!(
            "GET /api/servers after the failover lists every acknowledged write ({} listed, \
             missing {missing:?})",
            listed.len()
        ),
    );
    let m = app.metrics();
    rec.summary(format!(
        "{acked} writes acknowledged ({refused} refused 503, {unknown} other), all present on \
         the new primary; first write {} after promotion; {} connection retries",
        first.map(secs).unwrap_or_else(|| "-".to_owned()),
        m.retries_connection
    ));
    app.shutdown().await;
    Ok(())
}

/// FO-02.
pub(crate) async fn replica_lag(rec: &Recorder) -> CaseResult {
    rec.step("starting a primary, a streaming replica, and the gateway reading from the replica");
    let primary = start_cluster().await?;
    let replica = primary.create_replica().await?;
    let mut settings = config(&url(&primary), "gw-fo02");
    settings.database_replica_url = Some(url(&replica));
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;
    const ACCOUNTS: i64 = 10;
    const TOTAL: i64 = ACCOUNTS * 100;
    let accounts: Vec<(i64, i64)> = (1..=ACCOUNTS).map(|id| (id, 100)).collect();
    app.http.set_accounts(&accounts).await?;
    let base = app.http.create("fo02-base").await;
    if base.status != 201 {
        return Err(stop(format!("the first create failed: {}", base.brief())));
    }
    replica.wait_replay_catch_up(&primary).await?;
    let listed = app.http.get("/api/servers").await;
    let replica_pool = app.status().await["replica_pool"].clone();
    rec.check(
        names(&listed.body) == ["fo02-base"]
            && replica_pool["connections"].as_i64().unwrap_or(0) > 0,
        format!(
            "the gateway keeps a pool on the replica ({replica_pool}) and reads see what it replayed ({})",
            listed.brief()
        ),
    );
    check_encrypted(rec, &primary, "gw-fo02", "primary").await?;
    check_encrypted(rec, &replica, "gw-fo02", "replica").await?;

    rec.step("pausing replay on the replica: it lags behind the primary");
    let replica_admin = replica.admin().await?;
    rec.fault_begins("replay paused");
    replica_admin
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await?;
    let fresh = app.http.create("fo02-fresh").await;
    let id = fresh.body["id"].as_i64().unwrap_or(-1);
    let eventual = app.http.get("/api/servers?name=fo02-fresh").await;
    let strong_header = app.http.get_strong("/api/servers?name=fo02-fresh").await;
    let strong_query = app
        .http
        .get("/api/servers?name=fo02-fresh&consistency=strong")
        .await;
    let by_id_eventual = app.http.get(&format!("/api/servers/{id}")).await;
    let by_id_strong = app.http.get_strong(&format!("/api/servers/{id}")).await;
    rec.check(
        fresh.status == 201 && eventual.status == 200 && names(&eventual.body).is_empty(),
        format!(
            "a default read right after a write does not see it: it ran on the lagging \
             replica ({:?})",
            names(&eventual.body)
        ),
    );
    rec.check(
        names(&strong_header.body) == ["fo02-fresh"] && names(&strong_query.body) == ["fo02-fresh"],
        "with `Consistency: strong` (header) or `?consistency=strong` the same read sees the \
         write: read-your-writes from the primary",
    );
    rec.check(
        by_id_eventual.is(404, "not_found") && by_id_strong.status == 200,
        format!(
            "GET /api/servers/{id}: {} from the replica, {} with strong consistency",
            by_id_eventual.kind(),
            by_id_strong.kind()
        ),
    );
    replica_admin
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await?;
    rec.fault_ends();
    replica.wait_replay_catch_up(&primary).await?;
    let caught_up = app.http.get("/api/servers?name=fo02-fresh").await;
    rec.check(
        names(&caught_up.body) == ["fo02-fresh"],
        "once replay resumes, the default read sees it too",
    );

    rec.step("transfers on the primary, reads on the replica, replay paused and resumed");
    let run_for = Duration::from_secs(4);
    let started = Instant::now();
    let mut transfers = Vec::new();
    for worker in 0..2 {
        let http = app.http.clone();
        transfers.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            while started.elapsed() < run_for {
                let from = rand::random_range(1..=ACCOUNTS);
                let to = (from % ACCOUNTS) + 1;
                let amount = rand::random_range(1..=50);
                let pause = rand::random_range(0..=20);
                replies.push(
                    http.transfer(from, to, amount, pause, &format!("fo02-{worker}"))
                        .await,
                );
            }
            replies
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..2 {
        let http = app.http.clone();
        readers.push(tokio::spawn(async move {
            let mut reads: Vec<(Reply, Option<i64>)> = Vec::new();
            while started.elapsed() < run_for {
                let reply = http.get("/api/test/accounts").await;
                let sum = reply.body.as_array().and_then(|accounts| {
                    (accounts.len() as i64 == ACCOUNTS).then(|| {
                        accounts
                            .iter()
                            .map(|a| a["balance"].as_i64().unwrap_or(i64::MIN / 64))
                            .sum::<i64>()
                    })
                });
                reads.push((reply, sum));
            }
            reads
        }));
    }
    let mut pauses = 0;
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(300)).await;
        rec.fault_begins("replay paused");
        replica_admin
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await?;
        pauses += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        replica_admin
            .batch_execute("SELECT pg_wal_replay_resume()")
            .await?;
        rec.fault_ends();
    }
    let mut transfer_replies = Vec::new();
    for task in transfers {
        transfer_replies.extend(
            task.await
                .map_err(|e| stop(format!("a writer failed: {e}")))?,
        );
    }
    let mut reads = Vec::new();
    for task in readers {
        reads.extend(
            task.await
                .map_err(|e| stop(format!("a reader failed: {e}")))?,
        );
    }
    rec.check(
        transfer_replies.iter().all(|r| r.status == 200),
        format!(
            "transfers on the primary succeed ({})",
            tally(&transfer_replies)
        ),
    );
    let inconsistent: Vec<String> = reads
        .iter()
        .filter(|(reply, sum)| reply.status != 200 || *sum != Some(TOTAL))
        .map(|(reply, sum)| format!("{} sum {sum:?}", reply.brief()))
        .collect();
    let distinct: HashSet<String> = reads.iter().map(|(r, _)| r.body.to_string()).collect();
    rec.check(
        !reads.is_empty() && inconsistent.is_empty(),
        format!(
            "{} reads on the replica ({} distinct states, replay paused {pauses} times) all \
             sum to {TOTAL}: a transfer is never seen half-applied (inconsistent: \
             {inconsistent:?})",
            reads.len(),
            distinct.len()
        ),
    );
    replica.wait_replay_catch_up(&primary).await?;
    let on_replica = app.http.get("/api/test/accounts").await;
    let on_primary = app.http.get_strong("/api/test/accounts").await;
    rec.check(
        on_replica.status == 200 && on_replica.body == on_primary.body,
        "once caught up, the replica's view equals the primary's",
    );

    rec.step("stopping the replica: reads fall back to the primary");
    rec.fault_begins("replica stopped");
    replica.stop_fast().await?;
    let stopped = Instant::now();
    let fallback = app.http.get("/api/servers?name=fo02-fresh").await;
    let fallback_accounts = app.http.get("/api/test/accounts").await;
    rec.check(
        names(&fallback.body) == ["fo02-fresh"] && fallback_accounts.status == 200,
        format!(
            "with the replica down, default reads are served by the primary ({}, {})",
            fallback.brief(),
            fallback_accounts.brief()
        ),
    );
    rec.recovery(stopped, stopped.elapsed());
    rec.summary(format!(
        "lagging replica hides a fresh write, `Consistency: strong` shows it; {} replica \
         reads during {} transfers, all consistent; replica down → reads from the primary in {}",
        reads.len(),
        transfer_replies.len(),
        secs(fallback.elapsed)
    ));
    app.shutdown().await;
    Ok(())
}

/// Runs `sql` on `cluster` as the superuser, statement by statement.
async fn admin_exec(cluster: &PgCluster, statements: &[&str]) -> Result<(), CaseError> {
    let admin = cluster.admin().await?;
    for sql in statements {
        admin.batch_execute(sql).await?;
    }
    Ok(())
}

const FENCE: &[&str] = &[
    "ALTER SYSTEM SET default_transaction_read_only = on",
    "SELECT pg_reload_conf()",
];
const UNFENCE: &[&str] = &[
    "ALTER SYSTEM RESET default_transaction_read_only",
    "SELECT pg_reload_conf()",
];

/// Terminates the gateway's connections to `cluster`, so that it opens new ones (and
/// chooses a server again).
async fn force_reconnect(cluster: &PgCluster, application_name: &str) -> Result<u64, CaseError> {
    Ok(cluster.terminate_backends(application_name).await?)
}

/// How FO-03 cuts the old primary off from the gateway while it is a second primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Its proxy resets new connections (a host with nothing listening, a firewall that
    /// rejects): the connect to it fails at once and the next host is tried.
    Refuse,
    /// Its proxy accepts connections and forwards nothing (a silent network): the
    /// connect to it never completes.
    Blackhole,
}

/// FO-03.
pub(crate) async fn split_brain(rec: &Recorder, isolation: Isolation) -> CaseResult {
    rec.step("starting primary A, its streaming replica B, and a proxy in front of A");
    let a = start_cluster().await?;
    let b = a.create_replica().await?;
    let proxy_a = FaultProxy::start(a.socket_addr()).await?;
    // A first: new connections try the old primary before the new one, every time.
    let url = multi_host_url(&a, &[proxy_a.port(), b.port()]);
    let mut settings = config(&url, "gw-fo03");
    settings.deadline = Duration::from_secs(15);
    settings.retries = 60;
    let app_name = settings.application_name.clone();
    let app = App::start(rec, settings).await?;
    app.wait_ready(Duration::from_secs(30)).await?;

    rec.step("writing continuously: keyed creates, repeated with the same key after a 503");
    let writer = Writer::start(app.http.clone(), "fo03", true, 30);
    // Ten more acknowledged writes than so far.
    let more = |writer: &Writer| writer.acked() + 10;
    if !writer.wait_acked(10, Duration::from_secs(30)).await {
        return Err(stop("no writes got through to A"));
    }

    // 1. Switchover, fence first: A turns read-only under the gateway's live
    //    connections, so their next write fails with 25006.
    rec.step("fencing A read-only under the gateway's live connections");
    rec.fault_begins("A fenced read-only, stopped; B promoted");
    admin_exec(&a, FENCE).await?;
    let fenced_at = Instant::now();
    let read_only_before = app.metrics().retries_read_only;
    let saw_25006 = poll(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async { app.metrics().retries_read_only > read_only_before },
    )
    .await;
    rec.step("stopping A, promoting B");
    a.stop_fast().await?;
    b.promote().await?;
    rec.fault_ends();
    let promoted_at = Instant::now();
    let n = more(&writer);
    let switched = writer.wait_acked(n, Duration::from_secs(60)).await;
    rec.check(
        saw_25006.is_some(),
        format!(
            "a write on fenced A failed with 25006 and the runtime reconnected \
             ({} read-only retries)",
            app.metrics().retries_read_only
        ),
    );
    rec.check(switched, "writes continue on B after the switchover");

    // 2. The old primary comes back demoted: a standby of B.
    rec.step("A comes back demoted, as a standby of B; the gateway reconnects");
    rec.fault_begins("A back as a standby of B");
    a.demote_to_standby_of(&b).await?;
    let standby = a.is_in_recovery().await?;
    let killing = Instant::now();
    let killed = force_reconnect(&b, &app_name).await?;
    rec.fault_at(killing, format!("{killed} connections terminated"));
    let n = more(&writer);
    let continued = writer.wait_acked(n, Duration::from_secs(60)).await;
    a.wait_replay_catch_up(&b).await?;
    rec.check(
        standby && continued && killed > 0,
        format!(
            "with A back as a standby (listed first) and {killed} connections reopened, writes \
             continue on B: A is skipped as read-only"
        ),
    );

    // 3. The old primary comes back as a primary, isolated from the gateway: a real
    //    split brain, two writable primaries.
    rec.fault_ends();
    rec.fault_begins(match isolation {
        Isolation::Refuse => "A cut off (refused) and promoted: two primaries",
        Isolation::Blackhole => "A cut off (silent) and promoted: two primaries",
    });
    match isolation {
        Isolation::Refuse => {
            rec.step(
                "A is cut off from the gateway (its proxy refuses) and promoted: two primaries",
            );
            proxy_a.refuse();
        }
        Isolation::Blackhole => {
            rec.step(
                "A is cut off from the gateway (its proxy goes silent) and promoted: two primaries",
            );
            proxy_a.blackhole();
        }
    }
    a.promote().await?;
    admin_exec(&a, UNFENCE).await?;
    let a_promoted_at = Instant::now();
    a.admin()
        .await?
        .batch_execute(
            "INSERT INTO servers (name, url) VALUES ('fo03-stray-on-old-primary', 'http://stray')",
        )
        .await?;
    let killing = Instant::now();
    let killed = force_reconnect(&b, &app_name).await?;
    rec.fault_at(killing, format!("{killed} connections terminated"));
    let n = more(&writer);
    let continued = writer.wait_acked(n, Duration::from_secs(60)).await;
    rec.check(
        continued && killed > 0,
        format!(
            "with A a writable primary but unreachable, {killed} connections reopened and \
             writes continue on B"
        ),
    );

    // 4. The partition heals; A was fenced first, as a returning old primary must be.
    rec.step("A is fenced read-only, then reachable again");
    admin_exec(&a, FENCE).await?;
    proxy_a.pass();
    rec.fault_ends();
    let healed_at = Instant::now();
    let killed = force_reconnect(&b, &app_name).await?;
    rec.fault_at(
        healed_at,
        format!("A fenced and reachable; {killed} connections terminated"),
    );
    let n = more(&writer);
    let continued = writer.wait_acked(n, Duration::from_secs(60)).await;
    // Behind a blackhole the gateway had no connection left to kill: it could not open
    // any while A's proxy was silent, and opens its first ones now.
    rec.check(
        continued && (killed > 0 || isolation == Isolation::Blackhole),
        format!(
            "with A reachable (a primary, fenced read-only, listed first), {killed} \
             connections reopened and writes continue on B"
        ),
    );
    let records = writer.stop().await?;

    // Verdicts.
    let (acked, _, unknown) = check_writes(rec, &b, &records, true).await?;
    rec.check(
        unknown == 0,
        format!(
            "every write the client made was acknowledged in the end ({acked} acknowledged, \
             {unknown} not)"
        ),
    );
    let on_a = registry(&a).await?;
    let on_b = registry(&b).await?;
    let only_on_a: Vec<&String> = on_a.keys().filter(|n| !on_b.contains_key(*n)).collect();
    rec.check(
        only_on_a == [&"fo03-stray-on-old-primary".to_owned()],
        format!(
            "no write of the gateway landed on A after it stopped being the primary: the only \
             row B lacks is the stray one written to A directly ({only_on_a:?})"
        ),
    );
    let late: Vec<&str> = records
        .iter()
        .filter(|r| r.acked() && r.started > a_promoted_at && on_a.contains_key(&r.name))
        .map(|r| r.name.as_str())
        .collect();
    rec.check(
        late.is_empty(),
        format!("writes after A's promotion are on B only (also on A: {late:?})"),
    );
    let during_switchover: Vec<&Reply> = records
        .iter()
        .filter(|r| r.finished >= fenced_at && r.started <= promoted_at + Duration::from_secs(1))
        .flat_map(|r| &r.replies)
        .collect();
    rec.check(
        during_switchover.iter().all(|r| r.status == 201),
        format!(
            "25006 caused a reconnect, not an error: every answer from the fence to the \
             promotion was 201 ({})",
            tally(during_switchover.iter().copied())
        ),
    );
    let client_retries: usize = records.iter().map(|r| r.replies.len() - 1).sum();
    let m = app.metrics();
    if let Some(first) = first_ack_after(&records, promoted_at) {
        rec.recovery(promoted_at, first);
        rec.figure(
            "switchover: first write on B after its promotion",
            secs(first),
        );
    }
    rec.figure(
        "longest time without an acknowledged write",
        secs(longest_gap(&records, fenced_at)),
    );
    rec.figure(
        "after the heal: first write",
        first_ack_after(&records, healed_at)
            .map(secs)
            .unwrap_or_else(|| "-".to_owned()),
    );
    rec.summary(format!(
        "{acked} keyed writes, all on B exactly once; 25006 → reconnect ({} read-only \
         retries), no client error; A as standby, isolated primary, fenced primary: no write \
         landed on it; {client_retries} client retries",
        m.retries_read_only
    ));
    rec.note(format!(
        "runtime: {} read-only retries, {} connection retries, {} ambiguous commits resolved \
         by key, {} stale connections replaced",
        m.retries_read_only,
        m.retries_connection,
        m.ambiguous_checked_by_key,
        m.stale_connections_replaced
    ));
    rec.note(
        "not automated, and not passable by any client: an old primary that comes back \
         writable, unfenced and reachable while listed in the URL. target_session_attrs=read-write \
         takes the first writable host, and nothing in a libpq host list tells two writable \
         primaries apart; fencing (read-only or demotion) or taking it out of the list is the \
         operator's part, which this case performs before the old primary becomes reachable.",
    );
    app.shutdown().await;
    Ok(())
}

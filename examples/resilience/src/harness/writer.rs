//! A client that writes in the background while a case injects faults, and the check
//! of its writes against what the database holds afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use resilient_tx_testkit::PgCluster;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::http::Http;
use super::inspect::registry;
use super::recorder::Recorder;
use super::reply::{Reply, tally};
use super::{CaseError, poll, stop};

/// One logical write of a [`Writer`].
#[derive(Debug, Clone)]
pub(crate) struct WriteRecord {
    pub(crate) name: String,
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
    /// Every answer, in order (several when the client retried with the same key).
    pub(crate) replies: Vec<Reply>,
}

impl WriteRecord {
    /// The last answer.
    pub(crate) fn last(&self) -> &Reply {
        self.replies
            .last()
            .expect("a write has at least one answer")
    }

    /// The gateway acknowledged it (201).
    pub(crate) fn acked(&self) -> bool {
        self.last().status == 201
    }

    /// The id the gateway acknowledged.
    pub(crate) fn id(&self) -> Option<i64> {
        self.acked()
            .then(|| self.last().body["id"].as_i64())
            .flatten()
    }
}

/// Creates servers one after the other in the background, as a client would: with
/// `keyed`, each under its own `Idempotency-Key`, repeated with the same key after a
/// retryable error (up to `client_retries` times); without, once each.
#[derive(Debug)]
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    task: JoinHandle<Vec<WriteRecord>>,
}

/// Where a [`Writer`] creates its servers: `POST /api/servers`.
pub(crate) const SERVERS: &str = "/api/servers";

/// How long a [`Writer`] pauses after each write, unless told otherwise.
pub(crate) const PAUSE: Duration = Duration::from_millis(20);

impl Writer {
    pub(crate) fn start(http: Http, prefix: &str, keyed: bool, client_retries: u32) -> Writer {
        Writer::start_at(http, SERVERS, prefix, keyed, client_retries, PAUSE)
    }

    /// A writer that POSTs its creates to `path` (the registry's route, or a test
    /// route that creates servers the same way), pausing `pause` after each.
    pub(crate) fn start_at(
        http: Http,
        path: &'static str,
        prefix: &str,
        keyed: bool,
        client_retries: u32,
        pause: Duration,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let prefix = prefix.to_owned();
        let task = {
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut records = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let name = format!("{prefix}-{n:04}");
                    let started = Instant::now();
                    let mut replies = Vec::new();
                    loop {
                        let reply = if keyed {
                            http.create_keyed_at(path, &name, &name).await
                        } else {
                            http.create(&name).await
                        };
                        let again =
                            keyed && reply.retryable() && replies.len() < client_retries as usize;
                        replies.push(reply);
                        if !again {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let record = WriteRecord {
                        name,
                        started,
                        finished: Instant::now(),
                        replies,
                    };
                    if record.acked() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    records.push(record);
                    tokio::time::sleep(pause).await;
                }
                records
            })
        };
        Writer { stop, acked, task }
    }

    /// Writes acknowledged so far.
    pub(crate) fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` writes in all were acknowledged.
    pub(crate) async fn wait_acked(&self, n: usize, limit: Duration) -> bool {
        poll(limit, Duration::from_millis(20), || async {
            self.acked() >= n
        })
        .await
        .is_some()
    }

    /// Stops after the write in progress; every write's record.
    pub(crate) async fn stop(self) -> Result<Vec<WriteRecord>, CaseError> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| stop(format!("the writer failed: {e}")))
    }
}

/// Writes set against a registry read afterwards.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    /// Writes acknowledged (201 in the end).
    pub(crate) acked: usize,
    /// Acknowledged writes the registry lacks.
    pub(crate) lost: Vec<String>,
    /// Acknowledged writes stored under another id than the one acknowledged: the
    /// name is unique, so this is what a write applied twice leaves.
    pub(crate) wrong_id: Vec<String>,
    /// Writes refused with `database_unavailable` (without a key).
    pub(crate) refused: usize,
    /// Refused writes the registry holds anyway.
    pub(crate) phantom: Vec<String>,
    /// Writes that ended unacknowledged otherwise.
    pub(crate) unknown: usize,
}

/// Sets `records` against `registry` (rows by name: id).
pub(crate) fn audit(
    records: &[WriteRecord],
    registry: &HashMap<String, i64>,
    keyed: bool,
) -> Audit {
    let mut audit = Audit::default();
    for record in records {
        match record.id() {
            Some(id) => {
                audit.acked += 1;
                match registry.get(&record.name) {
                    None => audit.lost.push(record.name.clone()),
                    Some(&stored) if stored != id => audit.wrong_id.push(record.name.clone()),
                    Some(_) => {}
                }
            }
            None if !keyed && record.last().is(503, "database_unavailable") => {
                audit.refused += 1;
                if registry.contains_key(&record.name) {
                    audit.phantom.push(record.name.clone());
                }
            }
            None => audit.unknown += 1,
        }
    }
    audit
}

/// Checks a writer's records against the registry on `cluster`: every acknowledged
/// write is there once under the acknowledged id, every write refused with
/// `database_unavailable` (without a key) is absent; no answer was outside the
/// documented codes. Returns (acknowledged, refused, unknown) counts.
pub(crate) async fn check_writes(
    rec: &Recorder,
    cluster: &PgCluster,
    records: &[WriteRecord],
    keyed: bool,
) -> Result<(usize, usize, usize), CaseError> {
    let registry = registry(cluster).await?;
    let Audit {
        acked,
        lost,
        wrong_id,
        refused,
        phantom,
        unknown,
    } = audit(records, &registry, keyed);
    let all: Vec<&Reply> = records.iter().flat_map(|r| &r.replies).collect();
    let unacceptable: Vec<String> = all
        .iter()
        .filter(|r| !r.acceptable())
        .map(|r| r.brief())
        .collect();
    rec.check(
        lost.is_empty(),
        format!(
            "every acknowledged write is on the primary ({acked} acknowledged, lost: {lost:?})"
        ),
    );
    rec.check(
        wrong_id.is_empty(),
        format!(
            "each once, under the id the client was given (the name is unique; \
             mismatched: {wrong_id:?})"
        ),
    );
    if !keyed {
        rec.check(
            phantom.is_empty(),
            format!(
                "no write answered 503 database_unavailable was applied ({refused} refused, \
                 applied anyway: {phantom:?})"
            ),
        );
    }
    rec.check(
        unacceptable.is_empty(),
        format!(
            "every answer is a success or a documented error code ({}; other: {unacceptable:?})",
            tally(all.iter().copied())
        ),
    );
    Ok((acked, refused, unknown))
}

/// Several [`Writer`]s on one gateway at once, each under a prefix of its own: the
/// concurrent keyed clients of a failover scenario.
#[derive(Debug)]
pub(crate) struct Writers {
    writers: Vec<Writer>,
}

impl Writers {
    /// `n` keyed writers POSTing to `path`, named `<prefix>-<i>-<n>`, each repeating a
    /// write after a retryable answer up to `client_retries` times and pausing `pause`
    /// after each write.
    pub(crate) fn start(
        http: &Http,
        path: &'static str,
        prefix: &str,
        n: usize,
        client_retries: u32,
        pause: Duration,
    ) -> Writers {
        let writers = (1..=n)
            .map(|i| {
                Writer::start_at(
                    http.clone(),
                    path,
                    &format!("{prefix}-{i}"),
                    true,
                    client_retries,
                    pause,
                )
            })
            .collect();
        Writers { writers }
    }

    /// Writes acknowledged so far, by all of them.
    pub(crate) fn acked(&self) -> usize {
        self.writers.iter().map(Writer::acked).sum()
    }

    /// Waits until `n` writes in all were acknowledged.
    pub(crate) async fn wait_acked(&self, n: usize, limit: Duration) -> bool {
        poll(limit, Duration::from_millis(20), || async {
            self.acked() >= n
        })
        .await
        .is_some()
    }

    /// Stops them all after their writes in progress; every write's record.
    pub(crate) async fn stop(self) -> Result<Vec<WriteRecord>, CaseError> {
        for writer in &self.writers {
            writer.stop.store(true, Ordering::Relaxed);
        }
        let mut records = Vec::new();
        for writer in self.writers {
            records.extend(writer.stop().await?);
        }
        Ok(records)
    }
}

/// The first write acknowledged after `after`: how long after it.
pub(crate) fn first_ack_after(records: &[WriteRecord], after: Instant) -> Option<Duration> {
    records
        .iter()
        .filter(|r| r.acked() && r.finished >= after)
        .map(|r| r.finished - after)
        .min()
}

/// The longest time without an acknowledged write, from `from` on.
pub(crate) fn longest_gap(records: &[WriteRecord], from: Instant) -> Duration {
    let mut acks: Vec<Instant> = records
        .iter()
        .filter(|r| r.acked() && r.finished >= from)
        .map(|r| r.finished)
        .collect();
    acks.sort();
    let mut previous = from;
    let mut gap = Duration::ZERO;
    for at in acks {
        gap = gap.max(at - previous);
        previous = at;
    }
    gap
}

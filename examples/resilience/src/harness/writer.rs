//! A client that writes in the background while a case injects faults, and the check
//! of its writes against what the database holds afterwards.

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

impl Writer {
    pub(crate) fn start(http: Http, prefix: &str, keyed: bool, client_retries: u32) -> Writer {
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
                            http.create_keyed(&name, &name).await
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
                    tokio::time::sleep(Duration::from_millis(20)).await;
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
    let mut acked = 0;
    let mut refused = 0;
    let mut unknown = 0;
    let mut lost = Vec::new();
    let mut wrong_id = Vec::new();
    let mut phantom = Vec::new();
    for record in records {
        match record.id() {
            Some(id) => {
                acked += 1;
                match registry.get(&record.name) {
                    None => lost.push(record.name.clone()),
                    Some(&stored) if stored != id => wrong_id.push(record.name.clone()),
                    Some(_) => {}
                }
            }
            None if !keyed && record.last().is(503, "database_unavailable") => {
                refused += 1;
                if registry.contains_key(&record.name) {
                    phantom.push(record.name.clone());
                }
            }
            None => unknown += 1,
        }
    }
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

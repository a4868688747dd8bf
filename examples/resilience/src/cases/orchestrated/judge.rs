//! One gateway's writes around one event, held to the targets: the time to its first
//! write, its answers (nothing but 201 in a switchover; 503 with `Retry-After` while
//! there is no primary), and every acknowledged write against the registry read
//! afterwards.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::measure::non_2xx;
use super::{FIRST_WRITE_TARGET, none_if_empty};
use crate::harness::{Audit, Recorder, Reply, WriteRecord, audit, tally};
use crate::harness::{first_ack_after, longest_gap};
use crate::text::secs;
use crate::topology::{Event, Route};

/// One gateway's writes around one event, and what they are held to.
pub(super) struct Around<'a> {
    pub(super) route: Route,
    pub(super) event: Event,
    /// Every acknowledged write must survive the event.
    pub(super) lossless: bool,
    /// The writes wait for a standby (`replicated`): after a switchover none can be
    /// acknowledged until the old primary streams from the new one.
    pub(super) waited: bool,
    /// The event.
    pub(super) at: Instant,
    /// The new primary took a side write.
    pub(super) node_writable: Instant,
    /// A side write through the route did.
    pub(super) route_writable: Instant,
    /// Writes that wait for a standby, after a failover that left none: the old primary
    /// was started again (to be one) at this instant, and no write could be
    /// acknowledged before.
    pub(super) standby_back: Option<Instant>,
    pub(super) records: &'a [WriteRecord],
    /// The registry on the primary, read afterwards.
    pub(super) registry: &'a HashMap<String, i64>,
}

/// The figures and checks of one gateway's writes around one event: time to the new
/// primary and to the gateway's first write, the answers, and the writes set against
/// the registry read afterwards. Returns the first write's delay after the side write
/// through the route (zero when the gateway wrote on the new primary before it).
pub(super) fn judge_event(rec: &Recorder, around: &Around<'_>) -> Option<Duration> {
    let &Around {
        route,
        event,
        lossless,
        waited,
        at,
        node_writable,
        route_writable,
        standby_back,
        records,
        registry,
    } = around;
    let r = route.label();
    rec.figure(
        format!("{r}: writable after the event"),
        format!(
            "{} through {r}, {} on the new primary itself",
            secs(route_writable - at),
            secs(node_writable.saturating_duration_since(at))
        ),
    );
    let first = first_ack_after(records, route_writable);
    let first_after_node = first_ack_after(records, node_writable);
    let none = || "none".to_owned();
    rec.figure(
        format!("{r}: first gateway write after that"),
        format!(
            "{} after the side write through {r}, {} after the one on the new primary itself",
            first.map(secs).unwrap_or_else(none),
            first_after_node.map(secs).unwrap_or_else(none)
        ),
    );
    rec.figure(
        format!("{r}: longest time without an acknowledged write"),
        secs(longest_gap(records, at)),
    );
    let all: Vec<&Reply> = records.iter().flat_map(|r| &r.replies).collect();
    let bad = non_2xx(records);
    rec.figure(format!("{r}: answers"), tally(all.iter().copied()));
    let Audit {
        acked,
        lost,
        wrong_id,
        unknown,
        ..
    } = audit(records, registry, true);
    // The gateway may beat the side write through its route (a probe connects afresh,
    // the gateway's pool may already be there): its first write on the new primary
    // then came before that side write, which meets the target too.
    let first_on_new = first_after_node.map(|t| node_writable + t);
    let in_time = first_on_new.is_some_and(|at| at <= route_writable + FIRST_WRITE_TARGET);
    match standby_back {
        // Figures only: the wait for a standby, not the gateway, sets the time.
        None if waited && event == Event::Switchover => true,
        None => rec.check(
            in_time,
            format!(
                "{r}: the gateway's first write on the new primary came within {} of a side \
                 write through {r} ({})",
                secs(FIRST_WRITE_TARGET),
                match (first, first_on_new) {
                    (_, Some(at)) if at < route_writable =>
                        format!("{} before it", secs(route_writable - at)),
                    (Some(first), _) => format!("{} after it", secs(first)),
                    _ => "none at all".to_owned(),
                }
            ),
        ),
        Some(back) => {
            let early: Vec<&str> = records
                .iter()
                .filter(|w| w.acked() && w.finished > at && w.finished < back)
                .map(|w| w.name.as_str())
                .collect();
            rec.figure(
                format!("{r}: first gateway write after the old primary was started again"),
                first_ack_after(records, back)
                    .map(secs)
                    .unwrap_or_else(none),
            );
            rec.check(
                early.is_empty(),
                format!(
                    "{r}: with no standby left, no write was acknowledged until the old \
                     primary came back to be one (acknowledged before: {early:?})"
                ),
            )
        }
    };
    match event {
        Event::Switchover if waited => rec.check(
            bad.iter()
                .all(|r| r.status == 503 && r.acceptable() && r.retry_after.is_some()),
            format!(
                "{r}: every answer during the switchover was a success or, while the new \
                 primary had no standby to confirm a write, a 503 with Retry-After ({})",
                none_if_empty(tally(bad.iter().copied()))
            ),
        ),
        Event::Switchover => rec.check(
            bad.is_empty(),
            format!(
                "{r}: every answer during the switchover was a success, none a 5xx ({})",
                tally(bad.iter().copied())
            ),
        ),
        Event::Kill => {
            // Answers that came back before a side write through the route committed
            // came while there was no primary: each must be a 503 with Retry-After.
            // Later ones answer calls that spent their deadline in the outage.
            let answers = || bad.iter().copied();
            let unavailable =
                |r: &Reply| r.status == 503 && r.retry_after.is_some() && r.acceptable();
            let during: Vec<String> = answers()
                .filter(|r| r.ended < route_writable && !unavailable(r))
                .map(|r| describe(r, at))
                .collect();
            rec.check(
                during.is_empty(),
                format!(
                    "{r}: every answer that came back while there was no primary was a 503 \
                     with Retry-After (not 2xx: {}; other: {during:?})",
                    tally(bad.iter().copied())
                ),
            );
            let after: Vec<String> = answers()
                .filter(|r| r.ended >= route_writable && !unavailable(r))
                .map(|r| describe(r, at))
                .collect();
            rec.check(
                bad.iter()
                    .all(|r| r.acceptable() && r.retry_after.is_some()),
                format!(
                    "{r}: no answer was a 500: every one not 2xx was a documented retryable \
                     error with Retry-After"
                ),
            );
            if !after.is_empty() {
                rec.figure(
                    format!("{r}: answers other than 503 just after the primary returned"),
                    format!(
                        "{} (calls whose deadline ran out in the attempt that followed the \
                         outage: {after:?})",
                        after.len()
                    ),
                );
            }
            true
        }
    };
    if lossless {
        rec.check(
            lost.is_empty(),
            format!(
                "{r}: every acknowledged write is on the new primary ({acked} acknowledged, \
                 lost: {lost:?})"
            ),
        );
    } else {
        rec.figure(
            format!("{r}: acknowledged writes lost (asynchronous replication)"),
            format!("{} of {acked}", lost.len()),
        );
        if !lost.is_empty() {
            rec.note(format!(
                "{r}: {} acknowledged write(s) lost: committed on the old primary, not yet \
                 on the standby when it died ({lost:?})",
                lost.len()
            ));
        }
    }
    rec.check(
        wrong_id.is_empty() && !bad.iter().any(|b| b.status == 409),
        format!(
            "{r}: none applied twice: each under the id its client was given, no 409 \
             (mismatched: {wrong_id:?})"
        ),
    );
    rec.check(
        unknown == 0,
        format!("{r}: every write was acknowledged in the end ({unknown} were not)"),
    );
    // A gateway that wrote before the side write through its route took no time after it.
    first.or(first_on_new
        .filter(|&at| at < route_writable)
        .map(|_| Duration::ZERO))
}

/// An answer with when it came, after `at`, and its message.
fn describe(reply: &Reply, at: Instant) -> String {
    format!(
        "{} at +{:.2} s: {}",
        reply.brief(),
        reply.ended.saturating_duration_since(at).as_secs_f64(),
        reply.body["error"]["message"]
    )
}

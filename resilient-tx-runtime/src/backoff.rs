//! Exponential backoff with full jitter, bounded by the call's deadline.

use std::time::Duration;

/// Connection failures wait at least this long before the first retry: reconnecting
/// at once to a server that just went away mostly finds it still gone.
pub(crate) const CONNECTION_BACKOFF_FLOOR: Duration = Duration::from_millis(100);

/// The delay before retry number `retry` (1 for the first retry): a uniformly random
/// duration in `[0, min(max, base * 2^(retry-1))]` ("full jitter"), which spreads
/// competing clients apart better than any fixed schedule.
pub(crate) fn full_jitter(retry: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = exponential_ceiling(retry, base, max);
    if ceiling.is_zero() {
        return ceiling;
    }
    let nanos: u64 = rand::random_range(0..=ceiling.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

/// The upper bound of the jittered delay for retry number `retry`.
pub(crate) fn exponential_ceiling(retry: u32, base: Duration, max: Duration) -> Duration {
    let shift = retry.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let base = Duration::from_millis(20);
        let max = Duration::from_secs(2);
        let ceilings: Vec<u128> = (1..=9)
            .map(|r| exponential_ceiling(r, base, max).as_millis())
            .collect();
        assert_eq!(ceilings, [20, 40, 80, 160, 320, 640, 1280, 2000, 2000]);
        assert_eq!(exponential_ceiling(1000, base, max), max);
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_varies() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let delays: Vec<Duration> = (0..200).map(|_| full_jitter(3, base, max)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter should spread delays");
    }

    #[test]
    fn zero_base_means_no_wait() {
        assert_eq!(
            full_jitter(5, Duration::ZERO, Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}

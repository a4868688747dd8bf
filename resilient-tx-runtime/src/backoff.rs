//! Exponential backoff with full jitter, bounded by the call's deadline.

use std::time::Duration;

/// Connection failures wait at least this long before the first retry: reconnecting
/// at once to a server that just went away mostly finds it still gone.
pub(crate) const CONNECTION_BACKOFF_FLOOR: Duration = Duration::from_millis(100);

/// The delay before retry number `retry` (1 for the first retry): `draw` (uniform in
/// `[0, 1]`) of the way into `[0, min(max, base * 2^(retry-1))]` ("full jitter"),
/// which spreads competing clients apart better than any fixed schedule. The draw is a
/// parameter so that the decision around it stays a pure function.
pub(crate) fn full_jitter(retry: u32, base: Duration, max: Duration, draw: f64) -> Duration {
    exponential_ceiling(retry, base, max).mul_f64(draw.clamp(0.0, 1.0))
}

/// A uniform draw in `[0, 1]` for [`full_jitter`].
pub(crate) fn draw() -> f64 {
    rand::random::<f64>()
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
        let delays: Vec<Duration> = (0..200)
            .map(|_| full_jitter(3, base, max, draw()))
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter should spread delays");
        assert_eq!(full_jitter(3, base, max, 1.0), Duration::from_millis(400));
        assert_eq!(full_jitter(3, base, max, 0.0), Duration::ZERO);
    }

    #[test]
    fn zero_base_means_no_wait() {
        assert_eq!(
            full_jitter(5, Duration::ZERO, Duration::from_secs(1), 1.0),
            Duration::ZERO
        );
    }
}

//! How long to wait before the next call to upstream.

use std::time::Duration;

/// Doubling waits from `first` up to `max`; a `Retry-After` the upstream sent wins when longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `n` (0-based), at least `retry_after`.
    pub fn wait(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let doubled = self.first.saturating_mul(1u32 << n.min(16));
        doubled.min(self.max).max(retry_after.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_honour_retry_after() {
        let b = Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(5),
        };
        let waits: Vec<u128> = (0..6).map(|n| b.wait(n, None).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(
            b.wait(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(b.wait(40, None), Duration::from_secs(5));
    }
}

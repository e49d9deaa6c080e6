//! A token bucket, with time passed in.

use std::time::Instant;

use crate::endpoint::RateLimit;

/// Two token buckets (messages and bytes) that refill continuously and hold
/// at most one second's worth.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    messages: f64,
    bytes: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            messages: limit.messages_per_second,
            bytes: limit.bytes_per_second,
            last: now,
        }
    }

    /// Takes one message of `len` bytes; false when either bucket is short.
    pub(crate) fn take(&mut self, len: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.messages = (self.messages + elapsed * self.limit.messages_per_second)
            .min(self.limit.messages_per_second);
        self.bytes =
            (self.bytes + elapsed * self.limit.bytes_per_second).min(self.limit.bytes_per_second);
        let len = len as f64;
        if self.messages >= 1.0 && self.bytes >= len {
            self.messages -= 1.0;
            self.bytes -= len;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::endpoint::RateLimitAction;

    #[test]
    fn allows_a_burst_then_refills_with_time() {
        let limit = RateLimit {
            messages_per_second: 10.0,
            bytes_per_second: 1000.0,
            action: RateLimitAction::Close,
        };
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit, t0);
        for _ in 0..10 {
            assert!(bucket.take(10, t0));
        }
        assert!(
            !bucket.take(10, t0),
            "the eleventh message in the same instant"
        );
        assert!(
            bucket.take(10, t0 + Duration::from_millis(100)),
            "one token after 100 ms"
        );
        assert!(
            !bucket.take(2000, t0 + Duration::from_secs(10)),
            "bigger than a second's bytes"
        );
    }
}

//! How long to wait before each reconnect attempt: exponential growth, a
//! cap, optional full jitter, and a seedable generator so a test can replay
//! the exact sequence.

use std::time::Duration;

/// Exponential backoff between reconnect attempts.
///
/// Retry `n` (counted from 1 since the last stable connection) waits
/// `min(max, initial × factor^(n-1))`, scaled by a uniform random number in
/// `[0, 1)` under [`Jitter::Full`]. [`Backoff::delay`] is the whole formula,
/// with the random number as an argument, so it can be checked without a
/// generator.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry. Default 1 s: long enough that a
    /// server restarting under load is not hit at once by every client, short
    /// enough that a blip is barely noticed.
    pub initial: Duration,
    /// How much each further retry multiplies the delay. Default 1.5: slower
    /// growth than doubling, so the delay reaches `max` after about nine
    /// retries rather than five. Values below 1 count as 1.
    pub factor: f64,
    /// The longest delay. Default 30 s: a client comes back within half a
    /// minute of a long outage ending.
    pub max: Duration,
    /// Default [`Jitter::Full`]: after a server restart, clients spread over
    /// the whole delay instead of returning in synchronized waves.
    pub jitter: Jitter,
    /// Reconnect attempts allowed after a drop or a failed first connection
    /// before the client gives up; the count restarts after a stable
    /// connection. Default `None`: never give up.
    pub max_attempts: Option<u32>,
    /// The seed of the jitter generator. Default `None`: a fresh seed per
    /// client, so clients started together do not jitter alike. Tests set it
    /// to replay a sequence.
    pub seed: Option<u64>,
}

/// How the computed delay is randomized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// The exact exponential delay.
    None,
    /// Uniform in `[0, delay)` ("full jitter").
    Full,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 1.5,
            max: Duration::from_secs(30),
            jitter: Jitter::Full,
            max_attempts: None,
            seed: None,
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (1-based) without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(i32::MAX as u32) as i32;
        let factor = if self.factor >= 1.0 { self.factor } else { 1.0 };
        let secs = self.initial.as_secs_f64() * factor.powi(exponent);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before retry `attempt` (1-based), with `unit` (in `[0, 1)`)
    /// as the random draw [`Jitter::Full`] scales by.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base(attempt);
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(unit.clamp(0.0, 1.0)),
        }
    }

    /// Sets the initial delay, the factor and the cap.
    pub fn exponential(mut self, initial: Duration, factor: f64, max: Duration) -> Self {
        self.initial = initial;
        self.factor = factor;
        self.max = max;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Gives up after this many reconnect attempts in a row.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Seeds the jitter generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// SplitMix64: a small, fast generator that is plenty for spreading
/// reconnects, and that a seed makes reproducible.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`, or a fresh seed (the standard library's
    /// per-process random hash keys mixed with the clock) when `None`.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        Rng(seed.unwrap_or_else(fresh_seed))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub(crate) fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let b = Backoff::default();
        assert_eq!(b.initial, Duration::from_secs(1));
        assert_eq!(b.factor, 1.5);
        assert_eq!(b.max, Duration::from_secs(30));
        assert_eq!(b.jitter, Jitter::Full);
        assert_eq!(b.max_attempts, None);
    }

    #[test]
    fn without_jitter_the_delay_grows_by_the_factor_up_to_the_cap() {
        let b = Backoff::default().jitter(Jitter::None);
        let delays: Vec<_> = (1..=12).map(|n| b.delay(n, 0.5).as_millis()).collect();
        assert_eq!(
            delays,
            [1000, 1500, 2250, 3375, 5062, 7593, 11390, 17085, 25628, 30000, 30000, 30000]
        );
    }

    #[test]
    fn doubling_from_100ms_capped_at_1s() {
        let b = Backoff::default()
            .exponential(ms(100), 2.0, ms(1000))
            .jitter(Jitter::None);
        let delays: Vec<_> = (1..=6).map(|n| b.base(n)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
    }

    #[test]
    fn full_jitter_scales_the_base_by_the_draw() {
        let b = Backoff::default().exponential(ms(100), 2.0, ms(1000));
        assert_eq!(b.delay(1, 0.0), Duration::ZERO);
        assert_eq!(b.delay(1, 0.5), ms(50));
        assert_eq!(b.delay(3, 0.25), ms(100));
        assert_eq!(b.delay(9, 0.5), ms(500), "the cap is jittered too");
    }

    #[test]
    fn full_jitter_with_a_seed_is_reproducible_and_within_bounds() {
        let b = Backoff::default().seed(7);
        let run = |seed| {
            let mut rng = Rng::new(Some(seed));
            (1..=20)
                .map(|n| b.delay(n, rng.next_unit()))
                .collect::<Vec<_>>()
        };
        let first = run(7);
        assert_eq!(first, run(7), "same seed, same delays");
        assert_ne!(first, run(8), "another seed, other delays");
        for (n, delay) in (1..).zip(&first) {
            assert!(
                *delay < b.base(n),
                "retry {n}: {delay:?} >= {:?}",
                b.base(n)
            );
        }
        // Not all bunched at one end: the draws spread over the interval.
        let halves = first
            .iter()
            .zip(1..)
            .filter(|(d, n)| **d < b.base(*n) / 2)
            .count();
        assert!(
            (3..=17).contains(&halves),
            "{halves} of 20 in the lower half"
        );
    }

    #[test]
    fn extreme_settings_do_not_panic() {
        let b = Backoff::default()
            .exponential(ms(1), 1e300, Duration::from_secs(60))
            .jitter(Jitter::None);
        assert_eq!(b.base(u32::MAX), Duration::from_secs(60));
        assert_eq!(b.base(0), ms(1), "attempt 0 counts as the first");
        let shrinking = Backoff::default()
            .exponential(ms(10), 0.5, ms(100))
            .jitter(Jitter::None);
        assert_eq!(shrinking.base(5), ms(10), "a factor below 1 counts as 1");
        let nan = Backoff::default()
            .exponential(ms(10), f64::NAN, ms(100))
            .jitter(Jitter::None);
        assert_eq!(nan.base(3), ms(10));
        assert_eq!(Backoff::default().delay(1, 7.0), Duration::from_secs(1));
    }

    #[test]
    fn unit_draws_are_in_range() {
        let mut rng = Rng::new(Some(0));
        for _ in 0..10_000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}

//! Retrying transient connector failures inside the invocation, so a short burst of 5xx,
//! 429 or timeouts costs no SQS receive.
//!
//! Rules (AWS's "exponential backoff and jitter", full-jitter variant):
//! - attempt `n` (1-based) failed transiently → wait `U(0, min(cap, base × 2ⁿ⁻¹))`;
//!   a `Retry-After` hint (429) raises the wait to at least the hint;
//! - the jitter is drawn from a hash of the event's idempotency key, the command and the
//!   attempt: spread across messages, reproducible for one message (no hidden randomness;
//!   time and waiting come from the `Clock` port);
//! - give up, and hand the message back to its queue, after `max_attempts`, or when the
//!   next attempt could not finish before the invocation's deadline minus a safety margin
//!   (`wait + attempt_timeout + margin` must fit in what is left — checked before the
//!   first attempt of every command too; the margin covers the commit and the publish);
//! - a `Retry-After` hint is honoured up to 12 h (larger ones are capped, never overflow);
//! - permanent failures (4xx) are never retried: they are results, not errors.

use std::time::Duration;

use chrono::{DateTime, Utc};
use o2c_domain::workflow::Refusal;
use tracing::debug;

use crate::error::O2cError;
use crate::ports::{Clock, ConnectorError};

/// Tunables of the in-invocation retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per command per invocation (first call included).
    pub max_attempts: u32,
    /// First backoff ceiling.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Longest one connector attempt can take (the connector's request timeout).
    pub attempt_timeout: Duration,
    /// Left free before the deadline for the commit and the publish that follow.
    pub margin: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
            // The commit and the publish that follow: the SDK's operation timeout (10 s).
            margin: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempt`-th failure (see module docs); `seed` spreads it.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, seed: u64) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.cap);
        let fraction = (mix(seed, attempt) >> 11) as f64 / (1u64 << 53) as f64;
        let jittered = ceiling.mul_f64(fraction);
        retry_after.map_or(jittered, |hint| hint.min(MAX_HINT).max(jittered))
    }

    /// True when an attempt started now could finish, with the commit and publish after
    /// it, before `deadline` (`wait` first).
    pub fn fits(&self, now: DateTime<Utc>, wait: Duration, deadline: DateTime<Utc>) -> bool {
        let needed = wait.saturating_add(self.attempt_timeout).saturating_add(self.margin);
        chrono::Duration::from_std(needed).ok().and_then(|d| now.checked_add_signed(d)).is_some_and(|end| end <= deadline)
    }
}

/// The longest `Retry-After` honoured (SQS's maximum visibility timeout, 12 h): a
/// larger hint is a defect of the sender, not a reason to overflow.
pub const MAX_HINT: Duration = Duration::from_secs(12 * 3600);

/// A 64-bit hash of text (FNV-1a), the seed of a message's jitter.
pub fn seed_of(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// SplitMix64 finaliser of `seed + attempt`: uniform bits from a sequential input.
fn mix(seed: u64, attempt: u32) -> u64 {
    let mut z = seed.wrapping_add(u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Retries one connector call under a policy, a clock and a deadline.
pub struct Retrier<'a> {
    /// Policy.
    pub policy: &'a RetryPolicy,
    /// Time source and sleeper.
    pub clock: &'a dyn Clock,
    /// The invocation's deadline.
    pub deadline: DateTime<Utc>,
    /// Jitter seed (event key + command).
    pub seed: u64,
}

impl Retrier<'_> {
    /// Runs `op` until it succeeds, is refused, or the budget runs out (`Err`: hand the
    /// message back; a `Retry-After` hint is kept on the error).
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<Result<T, Refusal>, O2cError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ConnectorError>>,
    {
        if !self.policy.fits(self.clock.now(), Duration::ZERO, self.deadline) {
            return Err(O2cError::dependency("lambda", "too little of the invocation is left to start this command; retried later"));
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match op().await {
                Ok(v) => return Ok(Ok(v)),
                Err(e) => e,
            };
            let retry_after = match &err {
                ConnectorError::Permanent { .. } => return Ok(Err(err.refusal())),
                ConnectorError::Transient { retry_after, .. } => *retry_after,
            };
            let wait = self.policy.delay(attempt, retry_after, self.seed);
            if attempt >= self.policy.max_attempts || !self.policy.fits(self.clock.now(), wait, self.deadline) {
                debug!(attempt, error = %err, "giving up inside the invocation; the message goes back to its queue");
                return Err(err.into());
            }
            debug!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "transient failure; retrying inside the invocation");
            self.clock.sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_attempts_grow_should_stay_under_the_capped_exponential_ceiling() {
        let p = RetryPolicy { base: Duration::from_millis(100), cap: Duration::from_secs(1), ..RetryPolicy::default() };
        for seed in 0..200u64 {
            for attempt in 1..10 {
                let d = p.delay(attempt, None, seed);
                let ceiling = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn when_jitter_is_drawn_should_spread_over_the_whole_window_and_repeat_per_seed() {
        let p = RetryPolicy { base: Duration::from_secs(1), cap: Duration::from_secs(1), ..RetryPolicy::default() };
        let draws: Vec<Duration> = (0..1000u64).map(|s| p.delay(1, None, seed_of(&["key", &s.to_string()]))).collect();
        let low = draws.iter().filter(|d| **d < Duration::from_millis(250)).count();
        let high = draws.iter().filter(|d| **d > Duration::from_millis(750)).count();
        assert!(low > 150 && high > 150, "full jitter covers the window: {low} low, {high} high of 1000");
        assert_eq!(p.delay(3, None, 42), p.delay(3, None, 42), "reproducible for one message");
    }

    #[test]
    fn when_the_system_says_retry_after_should_wait_at_least_that() {
        let p = RetryPolicy::default();
        assert!(p.delay(1, Some(Duration::from_secs(3)), 7) >= Duration::from_secs(3));
    }

    #[test]
    fn when_a_retry_after_is_absurdly_large_should_cap_it_and_not_overflow() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, Some(Duration::from_secs(u64::MAX)), 7), MAX_HINT);
        let now = chrono::Utc::now();
        assert!(!p.fits(now, Duration::MAX, now + chrono::Duration::hours(1)));
        assert!(!p.fits(DateTime::<Utc>::MAX_UTC, Duration::ZERO, DateTime::<Utc>::MAX_UTC));
    }

    #[test]
    fn when_too_little_time_is_left_should_not_start_the_first_attempt() {
        let p = RetryPolicy::default();
        let now = chrono::Utc::now();
        assert!(p.fits(now, Duration::ZERO, now + chrono::Duration::seconds(25)));
        assert!(!p.fits(now, Duration::ZERO, now + chrono::Duration::seconds(15)), "10 s attempt + 10 s margin");
    }
}

//! The only sources of time and ids in o2c: the [`Clock`] and [`IdGenerator`] ports and
//! their implementations. Nothing else in the domain, the app or the embedded runtime reads
//! the wall clock or draws a random id, so a run with [`SimClock`] and [`SeededIds`] is
//! reproducible bit for bit.
//!
//! | implementation | time / ids | used by |
//! |---|---|---|
//! | [`SystemClock`] | wall clock; `sleep` waits | Lambda, `o2c serve`, `o2c run` |
//! | [`SimClock`] | virtual: starts at a given instant, `sleep` advances it, the scheduler jumps it to the next due message | `o2c demo --seed`, deterministic simulation |
//! | [`RandomIds`] | UUID v7 (time-ordered) | everywhere by default |
//! | [`SeededIds`] | UUID v5 of (seed, counter) | with `SimClock` |

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A boxed future that waits (the clock's `sleep`).
pub type Sleep = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Time, behind a port so runs are reproducible: reading it and waiting on it.
pub trait Clock: Send + Sync {
    /// Current time.
    fn now(&self) -> DateTime<Utc>;
    /// Waits `d` (retry backoff). A simulated clock advances instead of waiting.
    fn sleep(&self, d: Duration) -> Sleep;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A virtual clock: `now` is whatever it was set to, `sleep` moves it forward at once.
#[derive(Debug)]
pub struct SimClock {
    now: Mutex<DateTime<Utc>>,
}

impl SimClock {
    /// A clock reading `start`.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(start) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
        }
    }

    /// Moves the clock to `t` (never backwards).
    pub fn advance_to(&self, t: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock()
            && t > *now
        {
            *now = t;
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.lock().map(|t| *t).unwrap_or_default()
    }
    fn sleep(&self, d: Duration) -> Sleep {
        self.advance(d);
        Box::pin(std::future::ready(()))
    }
}

/// Id generation, behind a port so runs are reproducible.
pub trait IdGenerator: Send + Sync {
    /// A new unique id.
    fn new_id(&self) -> String;
}

/// Time-ordered UUID v7 ids: a millisecond timestamp, then a counter seeded at random each
/// millisecond and random bits (the `uuid` crate's `now_v7`: ordered within this process).
/// Ordered ids keep the embedded store's indexes on them (message, event and FIFO
/// deduplication ids) appended at their right edge, not written at random pages: fewer pages
/// per commit, and a hot set that does not grow with the history. Ids are unique, not secret
/// (access keys and console links draw their own random bits).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn new_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

/// Reproducible ids: the n-th id of seed `s` is the UUID v5 of `s` and `n`.
#[derive(Debug)]
pub struct SeededIds {
    namespace: uuid::Uuid,
    next: AtomicU64,
}

impl SeededIds {
    /// Ids for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { namespace: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("o2c-seed-{seed}").as_bytes()), next: AtomicU64::new(0) }
    }
}

impl IdGenerator for SeededIds {
    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        uuid::Uuid::new_v5(&self.namespace, &n.to_be_bytes()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_seeded_should_repeat_the_same_ids_in_order() {
        let (a, b) = (SeededIds::new(7), SeededIds::new(7));
        let xs: Vec<String> = (0..5).map(|_| a.new_id()).collect();
        let ys: Vec<String> = (0..5).map(|_| b.new_id()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SeededIds::new(8).new_id(), xs[0]);
    }

    #[test]
    fn when_a_sim_clock_sleeps_should_advance_without_waiting() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let c = SimClock::starting_at(start);
        let begun = std::time::Instant::now();
        futures_lite_block_on(c.sleep(Duration::from_secs(3600)));
        assert!(begun.elapsed() < Duration::from_secs(1));
        assert_eq!(c.now(), start + chrono::Duration::hours(1));
        c.advance_to(start);
        assert_eq!(c.now(), start + chrono::Duration::hours(1), "never backwards");
    }

    fn futures_lite_block_on(f: Sleep) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(f);
    }
}

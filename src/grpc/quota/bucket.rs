//! One client's allowance of bytes a second for one kind of traffic: a token bucket,
//! as a state machine without I/O or clock (each call is told the time and the rate),
//! so that its arithmetic is tested exactly.
//!
//! The bucket holds up to one second's worth (`BURST`) and fills at the rate. Bytes are
//! charged when they are known: a produce message's once it is let in, a fetch's
//! allowance before the read (settled after it). A charge may take the bucket below
//! zero, however far (one message may be larger than a second's worth); what comes
//! after waits until it is back above zero. So a client gets `rate` bytes a second over
//! time, and one second's worth at once after a pause.
//!
//! The level is kept in bytes, not as a time, and the rate is given at each call: a
//! rate changed by a reload applies at once to the debt already there. It is counted in
//! billionths of a byte, so that filling at any rate over any interval loses nothing.
//! (The `governor` crate's GCRA checks a cost before it is spent, against a rate fixed
//! when the limiter is made, and refuses a cost larger than the burst: a fetch's size is
//! known only after the read, a message may be larger than a second's worth, and rates
//! change on reload.)

use std::time::Duration;

use tokio::time::Instant;

/// How much a bucket holds when full: this long at its rate.
pub const BURST: Duration = Duration::from_secs(1);

/// Billionths of a byte in a byte: a byte's share of a rate's nanosecond.
const UNIT: i128 = 1_000_000_000;

/// The deepest debt a bucket keeps, in seconds at its rate: far past any wait that
/// matters, and far from overflow.
const DEEPEST_SECONDS: i128 = 365 * 24 * 3600;

/// A client's allowance for one kind of traffic.
#[derive(Clone, Debug, Default)]
pub struct Bucket {
    /// Billionths of a byte the client may still take (below zero: owes); at `at`.
    level: i128,
    /// When `level` was last brought up to date; None: never used, full.
    at: Option<Instant>,
}

impl Bucket {
    /// Brings the level up to `now` at `rate` bytes a second (at least 1).
    fn fill(&mut self, now: Instant, rate: u64) {
        let rate = i128::from(rate.max(1));
        let full = rate * UNIT;
        self.level = match self.at {
            None => full,
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_nanos() as i128;
                // Elapsed nanoseconds times bytes a second is billionths of a byte.
                self.level
                    .saturating_add(elapsed.saturating_mul(rate))
                    .min(full)
            }
        };
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// How long until the bucket holds `want` bytes (at most a full bucket's), at
    /// `rate` bytes a second; zero if it does now.
    pub fn wait(&mut self, now: Instant, rate: u64, want: u64) -> Duration {
        self.fill(now, rate);
        let rate = i128::from(rate.max(1));
        let want = (i128::from(want) * UNIT).min(rate * UNIT);
        let short = want - self.level;
        if short <= 0 {
            return Duration::ZERO;
        }
        // Billionths of a byte over bytes a second is nanoseconds; rounded up.
        let nanos = (short + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Bytes the client may take now without a debt: at most a second's worth.
    pub fn available(&mut self, now: Instant, rate: u64) -> u64 {
        self.fill(now, rate);
        u64::try_from(self.level.max(0) / UNIT).unwrap_or(u64::MAX)
    }

    /// `bytes` went (or are about to) at `now`.
    pub fn charge(&mut self, now: Instant, bytes: u64, rate: u64) {
        self.fill(now, rate);
        let deepest = -(i128::from(rate.max(1)) * UNIT * DEEPEST_SECONDS);
        self.level = (self.level - i128::from(bytes) * UNIT).max(deepest);
    }

    /// Gives back `bytes` charged and not taken (a fetch that read less than its
    /// allowance, or none), never beyond a full bucket.
    pub fn refund(&mut self, now: Instant, bytes: u64, rate: u64) {
        self.fill(now, rate);
        let full = i128::from(rate.max(1)) * UNIT;
        self.level = self
            .level
            .saturating_add(i128::from(bytes) * UNIT)
            .min(full);
    }

    /// Whether the bucket is full at `now`: then it is no different from a new one.
    pub fn full(&mut self, now: Instant, rate: u64) -> bool {
        self.fill(now, rate);
        self.level >= i128::from(rate.max(1)) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_new_bucket_holds_one_second() {
        let now = Instant::now();
        let mut bucket = Bucket::default();
        assert_eq!(bucket.wait(now, 1000, 0), Duration::ZERO);
        assert_eq!(
            bucket.wait(now, 1000, 5000),
            Duration::ZERO,
            "want is at most full"
        );
        assert_eq!(bucket.available(now, 1000), 1000);
        assert!(bucket.full(now, 1000));
    }

    #[test]
    fn charges_within_the_burst_wait_for_nothing_and_beyond_it_wait_for_the_debt() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        // 1000 B/s: 600 bytes leave 400; 400 more empty it.
        bucket.charge(t0, 600, 1000);
        assert_eq!(bucket.available(t0, 1000), 400);
        bucket.charge(t0, 400, 1000);
        assert_eq!(bucket.available(t0, 1000), 0);
        assert_eq!(
            bucket.wait(t0, 1000, 0),
            Duration::ZERO,
            "empty, not in debt"
        );
        assert_eq!(bucket.wait(t0, 1000, 100), 100 * MS);
        // 500 more: half a second of debt, which the next request waits out.
        bucket.charge(t0, 500, 1000);
        assert_eq!(bucket.wait(t0, 1000, 0), 500 * MS);
        assert_eq!(bucket.wait(t0 + 200 * MS, 1000, 0), 300 * MS);
        // It fills at the rate once the debt is paid, never past a second's worth.
        assert_eq!(bucket.available(t0 + 750 * MS, 1000), 250);
        assert!(!bucket.full(t0 + 1499 * MS, 1000));
        assert!(bucket.full(t0 + 1500 * MS, 1000));
        assert_eq!(bucket.available(t0 + 5000 * MS, 1000), 1000);
    }

    #[test]
    fn filling_loses_nothing_however_often_it_is_asked() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 2000, 3);
        // A million looks a microsecond apart: a second at 3 B/s is 3 bytes.
        for i in 1..=1_000_000u32 {
            bucket.available(t0 + Duration::from_micros(i.into()), 3);
        }
        // 2000 - 3 (the full bucket) - 3 (a second's filling) bytes owed, at 3 B/s.
        assert_eq!(
            bucket.wait(t0 + BURST, 3, 0),
            Duration::from_nanos(664_666_666_667)
        );
    }

    #[test]
    fn one_charge_larger_than_the_burst_is_taken_and_paid_for_afterwards() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 10_000, 1000);
        assert_eq!(bucket.wait(t0, 1000, 0), 9000 * MS);
        // Requests that each wait their turn get the rate, however they come.
        let mut bucket = Bucket::default();
        let mut at = t0;
        for _ in 0..100 {
            at += bucket.wait(at, 1000, 0);
            bucket.charge(at, 100, 1000);
        }
        // The first 10 from the full bucket, the 11th at zero, then one every 0.1 s:
        // the 100th 8.9 s in.
        assert_eq!(at, t0 + 8900 * MS);
    }

    #[test]
    fn a_new_rate_applies_at_once_to_the_debt_already_there() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 3_601_000, 1000);
        assert_eq!(bucket.wait(t0, 1000, 0), Duration::from_secs(3600));
        // Read again at 1 GB/s: the same debt is 3.6 ms.
        assert_eq!(
            bucket.wait(t0, 1_000_000_000, 0),
            Duration::from_micros(3600)
        );
    }

    #[test]
    fn a_refund_gives_back_what_was_not_taken_never_past_full() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 3000, 1000);
        bucket.refund(t0, 1500, 1000);
        assert_eq!(bucket.wait(t0, 1000, 0), 500 * MS);
        bucket.refund(t0, 1_000_000, 1000);
        assert!(bucket.full(t0, 1000));
        assert_eq!(bucket.available(t0, 1000), 1000);
    }

    #[test]
    fn idle_time_is_not_saved_past_the_burst() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 1000, 1000);
        let later = t0 + Duration::from_secs(10);
        bucket.charge(later, 3000, 1000);
        assert_eq!(bucket.wait(later, 1000, 0), 2000 * MS);
    }

    #[test]
    fn extremes_neither_overflow_nor_divide_by_zero() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        for _ in 0..10 {
            bucket.charge(t0, u64::MAX, 1);
        }
        let year = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(bucket.wait(t0, 1, 0), year, "the debt stops at a year");
        assert_eq!(bucket.available(t0, u64::MAX), 0);
        let mut fast = Bucket::default();
        fast.charge(t0, u64::MAX, u64::MAX);
        assert_eq!(fast.available(t0 + BURST, u64::MAX), u64::MAX);
        let mut zero = Bucket::default();
        zero.charge(t0, 5, 0);
        assert_eq!(
            zero.wait(t0, 0, 0),
            Duration::from_secs(4),
            "a rate of 0 counts as 1"
        );
        // A clock read before the last one (another thread's) neither panics nor
        // takes time back.
        let mut bucket = Bucket::default();
        bucket.charge(t0 + BURST, 2000, 1000);
        assert_eq!(bucket.wait(t0, 1000, 0), BURST);
    }
}

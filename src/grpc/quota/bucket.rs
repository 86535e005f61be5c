//! One client's allowance of bytes a second for one kind of traffic: a state machine
//! without I/O or clock (each call is told the time), so that its arithmetic is tested
//! to the nanosecond.
//!
//! It is a token bucket written as the time its debt is paid (`paid_at`, what GCRA
//! calls the theoretical arrival time). Bytes are charged when they are known: a
//! produce message's from its length prefix, a fetch's once it has been read. A charge
//! may take the bucket into debt, however large (one message may be larger than a
//! second of the rate); what comes after waits until the debt is paid, less the burst.
//! So a client gets `rate` bytes a second over time, and up to one second's worth at
//! once after a pause. (The `governor` crate's GCRA checks a cost before it is spent
//! and refuses one larger than the burst: a fetch's size is known only after the read,
//! and a message may be larger than a second's worth.)

use std::time::Duration;

use tokio::time::Instant;

/// How much a bucket holds when full: this long at its rate.
pub const BURST: Duration = Duration::from_secs(1);

/// A client's allowance for one kind of traffic.
#[derive(Clone, Debug, Default)]
pub struct Bucket {
    /// When everything charged so far is paid for at the rate; None before any charge.
    paid_at: Option<Instant>,
}

impl Bucket {
    /// When the next request may go: now, unless the debt ends more than `BURST` from now.
    pub fn allowed_at(&self, now: Instant) -> Instant {
        match self.paid_at {
            Some(paid) if paid > now + BURST => paid - BURST,
            _ => now,
        }
    }

    /// Bytes that may go now without debt: the bucket's fill, at most `BURST` of `rate`.
    pub fn available(&self, now: Instant, rate: u64) -> u64 {
        let owed = self
            .paid_at
            .map_or(Duration::ZERO, |paid| paid.saturating_duration_since(now));
        bytes_in(BURST.saturating_sub(owed), rate)
    }

    /// `bytes` went (or will go) at `now`, at `rate` bytes a second (at least 1).
    pub fn charge(&mut self, now: Instant, bytes: u64, rate: u64) {
        let from = match self.paid_at {
            Some(paid) if paid > now => paid,
            // Unused time is not saved beyond the burst: from now, less what the bucket holds.
            _ => now,
        };
        self.paid_at = Some(from + time_of(bytes, rate));
    }

    /// Takes back a charge of `bytes` whose request went away before its turn came (a
    /// client that gave up would otherwise pay for what it never sent, and its retries
    /// wait behind their own ghosts). Never below `now`: what was not owed is not given.
    pub fn refund(&mut self, now: Instant, bytes: u64, rate: u64) {
        if let Some(paid) = self.paid_at {
            let back = paid.checked_sub(time_of(bytes, rate)).unwrap_or(now);
            self.paid_at = Some(back.max(now));
        }
    }

    /// Whether the bucket is full at `now`: then it is no different from a new one.
    pub fn full(&self, now: Instant) -> bool {
        self.paid_at.is_none_or(|paid| paid <= now)
    }
}

/// How long `bytes` take at `rate` bytes a second (at least 1), rounded up to the
/// nanosecond; a debt too long to count is a year (the next request waits that long).
fn time_of(bytes: u64, rate: u64) -> Duration {
    let nanos = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(rate.max(1)));
    let year = Duration::from_secs(365 * 24 * 3600);
    u64::try_from(nanos)
        .map_or(year, Duration::from_nanos)
        .min(year)
}

/// How many bytes `rate` bytes a second allow in `time`, rounded down.
fn bytes_in(time: Duration, rate: u64) -> u64 {
    let bytes = time.as_nanos() * u128::from(rate) / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_new_bucket_holds_one_second_and_lets_anything_go() {
        let now = Instant::now();
        let bucket = Bucket::default();
        assert_eq!(bucket.allowed_at(now), now);
        assert_eq!(bucket.available(now, 1000), 1000);
        assert!(bucket.full(now));
    }

    #[test]
    fn charges_within_the_burst_wait_for_nothing_and_beyond_it_wait_for_the_debt() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        // 1000 B/s: 600 bytes leave 400 of the burst; 400 more empty it.
        bucket.charge(t0, 600, 1000);
        assert_eq!(bucket.available(t0, 1000), 400);
        assert_eq!(bucket.allowed_at(t0), t0);
        bucket.charge(t0, 400, 1000);
        assert_eq!(bucket.available(t0, 1000), 0);
        assert_eq!(bucket.allowed_at(t0), t0, "empty, not in debt");
        // 500 more: 0.5 s of debt, which the next request waits out.
        bucket.charge(t0, 500, 1000);
        assert_eq!(bucket.allowed_at(t0), t0 + 500 * MS);
        assert!(!bucket.full(t0 + 1499 * MS));
        // It refills at the rate once the debt is paid.
        assert_eq!(bucket.available(t0 + 500 * MS, 1000), 0);
        assert_eq!(bucket.available(t0 + 750 * MS, 1000), 250);
        assert!(bucket.full(t0 + 1500 * MS));
        assert_eq!(
            bucket.available(t0 + 5000 * MS, 1000),
            1000,
            "never more than the burst"
        );
    }

    #[test]
    fn one_charge_larger_than_the_burst_is_taken_and_paid_for_afterwards() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 10_000, 1000);
        assert_eq!(bucket.allowed_at(t0), t0 + 9000 * MS);
        assert_eq!(bucket.allowed_at(t0 + 9500 * MS), t0 + 9500 * MS);
        // Charges queue behind each other: the rate holds however they come.
        let mut bucket = Bucket::default();
        let mut at = t0;
        for _ in 0..100 {
            at = bucket.allowed_at(at);
            bucket.charge(at, 100, 1000);
        }
        // 10,000 bytes at 1000 B/s, the first 1000 of them from the burst.
        assert_eq!(at, t0 + 8900 * MS);
    }

    #[test]
    fn a_refund_takes_back_the_wait_a_charge_set_but_never_below_now() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 3000, 1000);
        bucket.charge(bucket.allowed_at(t0), 2000, 1000);
        assert_eq!(bucket.allowed_at(t0), t0 + 4000 * MS);
        bucket.refund(t0, 2000, 1000);
        assert_eq!(bucket.allowed_at(t0), t0 + 2000 * MS);
        bucket.refund(t0 + 2500 * MS, 3000, 1000);
        assert!(bucket.full(t0 + 2500 * MS));
        assert_eq!(bucket.available(t0 + 2500 * MS, 1000), 1000);
        Bucket::default().refund(t0, 5, 1);
    }

    #[test]
    fn time_runs_on_while_idle_but_is_not_saved_past_the_burst() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, 1000, 1000);
        // Ten idle seconds later the bucket holds one second, not ten.
        let later = t0 + Duration::from_secs(10);
        bucket.charge(later, 3000, 1000);
        assert_eq!(bucket.allowed_at(later), later + 2000 * MS);
    }

    #[test]
    fn extremes_neither_overflow_nor_divide_by_zero() {
        let t0 = Instant::now();
        let mut bucket = Bucket::default();
        bucket.charge(t0, u64::MAX, 1);
        let year = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(bucket.allowed_at(t0), t0 + year - BURST);
        assert_eq!(bucket.available(t0, u64::MAX), 0);
        let mut fast = Bucket::default();
        fast.charge(t0, u64::MAX, u64::MAX);
        assert_eq!(fast.available(t0 + BURST, u64::MAX), u64::MAX);
        assert_eq!(
            time_of(5, 0),
            Duration::from_secs(5),
            "a rate of 0 counts as 1"
        );
    }
}

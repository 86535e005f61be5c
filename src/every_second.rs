//! A log line that a flood (of clients, or of failures under a busy group) could
//! multiply, held to once a second with a count of what was held back: used by the
//! Kafka listener, the metrics endpoint and the saving of groups' members.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of line: when it was last logged, and how many were held back since.
#[derive(Default)]
pub struct EverySecond(Mutex<(Option<Instant>, u64)>);

impl EverySecond {
    /// Some(how many were held back) if a line may be logged now; None if not (this
    /// one is counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (logged_at, held) = &mut *last;
        if logged_at.is_some_and(|at| now - at < Duration::from_secs(1)) {
            *held += 1;
            return None;
        }
        let before = *held;
        (*logged_at, *held) = (Some(now), 0);
        Some(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counting_the_rest() {
        let every = EverySecond::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(every.allow_at(at(0)), Some(0));
        assert_eq!(every.allow_at(at(10)), None);
        assert_eq!(every.allow_at(at(999)), None);
        assert_eq!(every.allow_at(at(1001)), Some(2));
        assert_eq!(every.allow_at(at(1500)), None);
    }
}

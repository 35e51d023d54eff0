use super::lock;
use bandsync::ports::Clock;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Mutex;

/// The fixed "now" every test starts at (2026-03-01T12:00:00Z).
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_366_400, 0).expect("a valid timestamp")
}

/// A clock that stands still until set or advanced.
#[derive(Debug)]
pub struct FixedClock {
    now: Mutex<DateTime<Utc>>,
}

impl FixedClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *lock(&self.now) = now;
    }

    pub fn advance(&self, by: TimeDelta) {
        *lock(&self.now) += by;
    }
}

impl Default for FixedClock {
    fn default() -> Self {
        Self::new(t0())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let c = FixedClock::default();
        assert_eq!(c.now(), t0());
        c.advance(TimeDelta::seconds(5));
        assert_eq!(c.now(), t0() + TimeDelta::seconds(5));
        c.set(t0());
        assert_eq!(c.now(), t0());
    }
}

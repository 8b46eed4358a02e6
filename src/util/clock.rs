//! Time as the coordinators see it: a `Clock` they are given instead of reading the system's.
//!
//! `SystemClock` is the broker's. `ManualClock` stands still until a test moves it, so the
//! deadlines of the group and transaction state machines (session and rebalance timeouts, the
//! initial rebalance delay, transaction timeouts, offset retention) are crossed exactly when a
//! test says, without sleeping. Invariant: neither reading goes backwards.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A source of the two times the coordinators use.
pub trait Clock {
    /// Monotonic time, for deadlines.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch, for timestamps written into records.
    fn now_ms(&self) -> i64;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn now_ms(&self) -> i64 {
        super::now_ms()
    }
}

/// A clock that moves only when `advance` is called: a fixed base plus an offset.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    base_ms: i64,
    offset: Cell<Duration>,
}

impl ManualClock {
    /// A clock reading `base_ms` on the wall clock until it is advanced.
    pub fn new(base_ms: i64) -> ManualClock {
        ManualClock {
            base: Instant::now(),
            base_ms,
            offset: Cell::new(Duration::ZERO),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset.set(self.offset.get() + by);
    }
}

impl Default for ManualClock {
    /// Starts at 2023-11-14T22:13:20Z: any fixed time well after the epoch does.
    fn default() -> Self {
        ManualClock::new(1_700_000_000_000)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.offset.get()
    }

    fn now_ms(&self) -> i64 {
        self.base_ms + self.offset.get().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(1000);
        let (t0, ms0) = (c.now(), c.now_ms());
        assert_eq!(ms0, 1000);
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
        assert_eq!(c.now_ms(), 2500);
        let s = SystemClock;
        assert!(s.now_ms() > 0 && s.now() <= Instant::now());
    }
}

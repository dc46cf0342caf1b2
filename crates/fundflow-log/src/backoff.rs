//! Exponential backoff between retries: one type for every retry loop that talks to the log
//! (connecting, re-publishing, reopening a reader), so that each loop's timing is a named value
//! instead of a `Duration` doubled by hand.

use std::time::Duration;

/// Delays that start at `start` and double on every wait up to `max`; [`Backoff::reset`] after
/// a success starts again at `start`. `Copy`, so a named constant is a fresh schedule:
/// `let mut backoff = READ_REOPEN_BACKOFF;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay, and the delay after a reset.
    start: Duration,
    /// The longest delay: a retry loop that waits long still tries at this pace.
    max: Duration,
    /// What the next wait sleeps.
    next: Duration,
}

impl Backoff {
    /// A schedule from `start` doubling up to `max` (`start` when `max` is smaller).
    pub const fn new(start: Duration, max: Duration) -> Backoff {
        let max = if max.as_nanos() < start.as_nanos() {
            start
        } else {
            max
        };
        Backoff {
            start,
            max,
            next: start,
        }
    }

    /// The delay the next wait will sleep.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// Takes the next delay and doubles the one after it (up to `max`), for loops that sleep
    /// themselves.
    pub fn advance(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Sleeps the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.advance()).await;
    }

    /// Starts again at `start` (after a success).
    pub fn reset(&mut self) {
        self.next = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.advance().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.delay(), Duration::from_millis(100));
        let mut inverted = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        inverted.advance();
        assert_eq!(inverted.delay(), Duration::from_secs(2));
    }
}

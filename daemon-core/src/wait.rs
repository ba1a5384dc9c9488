//! Waiting for a condition without fixed polling delays.
//!
//! Upstream sleeps 100 ms plus up to 100 ms of jitter between attempts, so every wait costs
//! at least a tenth of a second after the condition holds. Here the gap starts at 100 µs
//! and doubles up to a small cap, so a change is seen within about the cap (2 ms by
//! default) while an idle wait costs a few hundred wake-ups per second at most.

use std::time::Duration;

use tokio::time::Instant;

/// Deadlines and backoff used by daemon waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long to wait for the API socket to accept connections (upstream: 100 × 100 ms).
    pub socket: Duration,
    /// How long to wait for a daemon state (upstream: 20 × 100 ms).
    pub state: Duration,
    /// How long one API request may take (upstream: 30 s).
    pub request: Duration,
    /// How long to wait for a process to exit after SIGTERM before reporting it.
    pub exit: Duration,
    /// How long a supervisor transfer may take (upstream: 10 s to offer, no limit to fetch).
    pub supervisor: Duration,
    /// First gap between attempts.
    pub backoff_initial: Duration,
    /// Largest gap between attempts.
    pub backoff_cap: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            socket: Duration::from_secs(10),
            state: Duration::from_secs(2),
            request: Duration::from_secs(30),
            exit: Duration::from_secs(10),
            supervisor: Duration::from_secs(10),
            backoff_initial: Duration::from_micros(100),
            backoff_cap: Duration::from_millis(2),
        }
    }
}

/// A capped exponential backoff bounded by a deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
    deadline: Instant,
}

impl Backoff {
    /// A backoff that gives up `within` from now.
    pub fn new(timeouts: &Timeouts, within: Duration) -> Self {
        Self { next: timeouts.backoff_initial, cap: timeouts.backoff_cap, deadline: Instant::now() + within }
    }

    /// Sleeps until the next attempt; `false` once the deadline has passed (no sleep then).
    pub async fn wait(&mut self) -> bool {
        match self.next_gap() {
            Some(gap) => {
                tokio::time::sleep(gap).await;
                true
            }
            None => false,
        }
    }

    /// The next gap to sleep (clipped to the deadline), or `None` past the deadline.
    /// Note that tokio's timer wheel rounds sleeps up to whole milliseconds.
    pub fn next_gap(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let gap = self.next.min(self.deadline - now);
        self.next = (self.next * 2).min(self.cap);
        Some(gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_and_stops_at_the_deadline() {
        let timeouts = Timeouts::default();
        let mut backoff = Backoff::new(&timeouts, Duration::from_millis(10));
        assert_eq!(backoff.next_gap(), Some(Duration::from_micros(100)));
        assert_eq!(backoff.next_gap(), Some(Duration::from_micros(200)));
        assert_eq!(backoff.next_gap(), Some(Duration::from_micros(400)));
        assert_eq!(backoff.next_gap(), Some(Duration::from_micros(800)));
        assert_eq!(backoff.next_gap(), Some(Duration::from_micros(1600)));
        assert_eq!(backoff.next_gap(), Some(timeouts.backoff_cap));
        assert_eq!(backoff.next_gap(), Some(timeouts.backoff_cap));
        // Paused time only moves when we sleep, so this lands exactly on the deadline.
        let mut waits = 0;
        while backoff.wait().await {
            waits += 1;
            assert!(waits < 100, "the deadline must end the backoff");
        }
        assert!(tokio::time::Instant::now() >= backoff.deadline);
    }
}

//! Reconnect delays: exponential growth with full jitter.
//!
//! Attempt `a` (0 for the first retry) waits a delay drawn uniformly from `[0, window(a))`,
//! `window(a) = min(max, initial * 2^a)`. Drawing from the whole window, not a fixed delay
//! with a little noise, is what spreads the clients of a server that went away over the
//! window instead of sending them back in the same instant.

use std::time::Duration;

/// Reconnect delays with full jitter (see the module's docs).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Windows from `initial`, doubling up to `max` (`max` is raised to `initial` if below it).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The window the next delay is drawn from.
    pub fn window(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay; each call widens the window until it reaches `max`.
    pub fn next_delay(&mut self) -> Duration {
        let window = self.window();
        self.attempt = self.attempt.saturating_add(1);
        window.mul_f64(unit_random())
    }

    /// Starts the next delays from a window of at least `spread` (a server that went away
    /// sends all its clients back at once: they need a wide window from the first try).
    pub fn start_at(&mut self, spread: Duration) {
        self.attempt = 0;
        while self.window() < spread.min(self.max) {
            self.attempt += 1;
        }
    }

    /// A connection succeeded: the next loss starts from the smallest window again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Retries so far since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A uniform draw from `[0, 1)`, from the OS's random source (a reconnect is rare enough).
fn unit_random() -> f64 {
    let bits = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    // The top 53 bits as the fraction of a double.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut windows = Vec::new();
        for _ in 0..6 {
            windows.push(b.window().as_millis());
            b.next_delay();
        }
        assert_eq!(windows, [100, 200, 400, 800, 1000, 1000]);
        b.attempt = 1000;
        assert_eq!(b.window(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.window(), Duration::from_millis(100));
        b.start_at(Duration::from_millis(300));
        assert_eq!(b.window(), Duration::from_millis(400));
    }

    #[test]
    fn delays_spread_over_the_whole_window() {
        let draws = 20_000;
        let window = Duration::from_millis(1000);
        let mut tenths = [0u32; 10];
        let mut sum = 0.0;
        for _ in 0..draws {
            let mut b = Backoff::new(window, Duration::from_secs(20));
            let d = b.next_delay();
            assert!(d < window, "{d:?}");
            sum += d.as_secs_f64();
            tenths[(d.as_secs_f64() * 10.0) as usize] += 1;
        }
        let mean = sum / draws as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        for (i, n) in tenths.iter().enumerate() {
            let share = f64::from(*n) / draws as f64;
            assert!((0.085..0.115).contains(&share), "tenth {i}: {share}");
        }
    }
}

//! At most one log line a second for an event that can repeat once per message (a flood of
//! refused pushes), and that line says how many it stands for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A once-a-second gate for one log line, usable as a `static`.
#[derive(Debug)]
pub struct Throttle {
    /// When a line was last let through, and the events held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A gate that lets the first event through, then one a second.
    pub const fn new() -> Throttle {
        Throttle {
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held_back)` when this event gets its line; `None` when it is only counted.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counts_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        *t.state.lock().unwrap() = (Some(Instant::now() - Duration::from_secs(2)), 2);
        assert_eq!(t.allow(), Some(2));
    }
}

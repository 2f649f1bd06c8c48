//! Exponential retry delays per object, so a broken object is retried quickly at first and then
//! left alone, without holding up the others.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

const FIRST: Duration = Duration::from_secs(1);
const CEILING: Duration = Duration::from_secs(300);

/// Consecutive failures per object key.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock();
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        delay_after(*count)
    }

    /// Forgets the failures of `key` after a successful pass.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().remove(key);
    }
}

/// 1 s, 2 s, 4 s, … capped at five minutes.
fn delay_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(CEILING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_stop_at_the_ceiling() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| backoff.failed("ns/a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn success_resets_only_that_object() {
        let backoff = Backoff::default();
        backoff.failed("ns/a");
        backoff.failed("ns/a");
        backoff.failed("ns/b");
        backoff.succeeded("ns/a");
        assert_eq!(backoff.failed("ns/a"), Duration::from_secs(1));
        assert_eq!(backoff.failed("ns/b"), Duration::from_secs(2));
    }
}

//! Waiting on conditions with a deadline, never on a fixed sleep.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::error::{Error, Result};

/// Polls `check` until it yields `Some(value)`, failing with [`Error::Timeout`] once `timeout`
/// has passed. An `Err` from `check` aborts the wait at once: it means the condition can no
/// longer become true (a process died, a request was malformed), not "not yet".
///
/// The poll interval starts short (conditions are often met quickly) and backs off to 500 ms.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let mut interval = Duration::from_millis(20);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited: now - started,
            });
        }
        sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let value = wait_for("third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((n == 3).then_some(n))
        })
        .await;
        assert!(matches!(value, Ok(3)), "{value:?}");
    }

    #[tokio::test]
    async fn times_out_when_the_condition_never_holds() {
        let result: Result<()> = wait_for("nothing", Duration::from_millis(100), || async { Ok(None) }).await;
        assert!(
            matches!(&result, Err(Error::Timeout { what, .. }) if what == "nothing"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn stops_at_the_first_error() {
        let calls = AtomicU32::new(0);
        let result: Result<()> = wait_for("error", Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Invalid {
                what: "state".to_owned(),
                reason: "broken".to_owned(),
            })
        })
        .await;
        assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

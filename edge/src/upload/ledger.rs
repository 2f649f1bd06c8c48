//! The size of each multipart upload in progress on this edge, so the object size limit holds
//! for the sum of the parts, not only for each part. Each part is reserved before it is sent, so
//! parts sent at the same time cannot pass the limit together.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// Uploads neither completed nor aborted are forgotten after this long (the client gave up).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Past this many uploads, forgotten ones are swept on the next start of an upload.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
pub(crate) struct Ledger {
    uploads: Mutex<HashMap<String, Upload>>,
}

struct Upload {
    parts: HashMap<u16, u64>,
    touched: Instant,
}

impl Upload {
    fn new() -> Self {
        Self {
            parts: HashMap::new(),
            touched: Instant::now(),
        }
    }
}

/// The reservation would pass the limit: the upload's total with this part.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OverLimit(pub(crate) u64);

impl Ledger {
    pub(crate) fn start(&self, upload_id: &str) {
        let mut uploads = self.uploads.lock();
        if uploads.len() > SWEEP_ABOVE {
            uploads.retain(|_, u| u.touched.elapsed() < FORGET_AFTER);
        }
        uploads.insert(upload_id.to_owned(), Upload::new());
    }

    /// Reserves `size` bytes for part `number` (replacing an earlier upload of that part).
    /// Returns the size the part had before, to restore when the part fails.
    pub(crate) fn reserve(
        &self,
        upload_id: &str,
        number: u16,
        size: u64,
        limit: u64,
    ) -> Result<Option<u64>, OverLimit> {
        let mut uploads = self.uploads.lock();
        // An upload started through another edge is counted from its first part seen here.
        let upload = uploads.entry(upload_id.to_owned()).or_insert_with(Upload::new);
        let others: u64 = upload
            .parts
            .iter()
            .filter(|(n, _)| **n != number)
            .map(|(_, s)| *s)
            .sum();
        let total = others.saturating_add(size);
        if total > limit {
            return Err(OverLimit(total));
        }
        upload.touched = Instant::now();
        Ok(upload.parts.insert(number, size))
    }

    /// Undoes a reservation whose part did not reach the origin.
    pub(crate) fn release(&self, upload_id: &str, number: u16, previous: Option<u64>) {
        if let Some(upload) = self.uploads.lock().get_mut(upload_id) {
            match previous {
                Some(size) => upload.parts.insert(number, size),
                None => upload.parts.remove(&number),
            };
        }
    }

    /// The upload was completed or aborted.
    pub(crate) fn finish(&self, upload_id: &str) {
        self.uploads.lock().remove(upload_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_of_parts_is_limited_and_a_retried_part_counts_once() {
        let ledger = Ledger::default();
        ledger.start("u");
        assert_eq!(ledger.reserve("u", 1, 40, 100), Ok(None));
        assert_eq!(ledger.reserve("u", 2, 40, 100), Ok(None));
        // Part 2 again (a retry) replaces the first attempt.
        assert_eq!(ledger.reserve("u", 2, 50, 100), Ok(Some(40)));
        assert_eq!(ledger.reserve("u", 3, 11, 100), Err(OverLimit(101)));
        ledger.release("u", 2, Some(40));
        assert_eq!(ledger.reserve("u", 3, 20, 100), Ok(None));
        ledger.finish("u");
        assert_eq!(
            ledger.reserve("u", 1, 100, 100),
            Ok(None),
            "a finished upload starts over"
        );
    }
}

//! Calendar-month buckets kept beside a customer's ring: count, sum and failures for each of
//! the last 13 months, so that monthly trends outlive a ring of a few dozen events.
//!
//! Months are numbered `year × 12 + month − 1` in the rules' time zone (the caller computes the
//! number). Bucket `m % 13` holds month `m`; a newer month takes its slot over, an older one
//! than the slot holds is too old to keep and is dropped.

/// Months kept: the current one and the twelve before it.
pub const MONTHS: usize = 13;

/// One month's totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonthBucket {
    /// The month number, or `i32::MIN` for an empty bucket.
    pub month: i32,
    /// Transactions (saturating).
    pub count: u16,
    /// Transactions reported failed (saturating).
    pub failed: u16,
    /// Sum of amounts, minor units.
    pub sum: i64,
}

const EMPTY: MonthBucket = MonthBucket {
    month: i32::MIN,
    count: 0,
    failed: 0,
    sum: 0,
};

/// The last 13 months of one customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonthBuckets {
    buckets: [MonthBucket; MONTHS],
}

impl Default for MonthBuckets {
    fn default() -> MonthBuckets {
        MonthBuckets {
            buckets: [EMPTY; MONTHS],
        }
    }
}

impl MonthBuckets {
    fn slot(month: i32) -> usize {
        month.rem_euclid(MONTHS as i32) as usize
    }

    /// The bucket of `month`, taking the slot over if it holds an older month. `None` when
    /// the slot holds a newer month (this one is too old to keep).
    fn bucket_mut(&mut self, month: i32) -> Option<&mut MonthBucket> {
        let bucket = &mut self.buckets[Self::slot(month)];
        if bucket.month == month {
            return Some(bucket);
        }
        if bucket.month < month {
            *bucket = MonthBucket { month, ..EMPTY };
            return Some(bucket);
        }
        None
    }

    /// Counts a transaction of `amount` minor units in `month`.
    pub fn add(&mut self, month: i32, amount: i64) {
        if let Some(b) = self.bucket_mut(month) {
            b.count = b.count.saturating_add(1);
            b.sum = b.sum.saturating_add(amount);
        }
    }

    /// Counts a failure reported for a transaction of `month`.
    pub fn fail(&mut self, month: i32) {
        let bucket = &mut self.buckets[Self::slot(month)];
        if bucket.month == month {
            bucket.failed = bucket.failed.saturating_add(1);
        }
    }

    /// The totals of `month`, zero when nothing was recorded for it.
    pub fn get(&self, month: i32) -> MonthBucket {
        let bucket = self.buckets[Self::slot(month)];
        if bucket.month == month {
            bucket
        } else {
            MonthBucket { month, ..EMPTY }
        }
    }

    /// The buckets as stored, for snapshots.
    pub fn raw(&self) -> &[MonthBucket; MONTHS] {
        &self.buckets
    }

    /// Buckets read back from a snapshot.
    pub fn from_raw(buckets: [MonthBucket; MONTHS]) -> MonthBuckets {
        MonthBuckets { buckets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_thirteen_months_and_drops_older_ones() {
        let mut m = MonthBuckets::default();
        m.add(100, 5);
        m.add(100, 7);
        m.add(112, 1);
        assert_eq!((m.get(100).count, m.get(100).sum), (2, 12));
        m.add(113, 3); // same slot as 100: month 100 is now out of range
        assert_eq!(m.get(100).count, 0);
        assert_eq!(m.get(113).count, 1);
        m.add(100, 9); // too old for its slot now
        assert_eq!(m.get(100).count, 0);
        assert_eq!(m.get(113).sum, 3);
        m.fail(112);
        m.fail(99);
        assert_eq!(m.get(112).failed, 1);
    }
}

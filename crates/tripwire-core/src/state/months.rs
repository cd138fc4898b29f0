//! Calendar-month buckets kept beside a customer's ring: count, sum and failures for each of
//! the last 13 months, so that monthly trends outlive a ring of a few dozen events.
//!
//! Months are numbered `year × 12 + month − 1` in the rules' time zone (the caller computes the
//! number). Only months with data are kept, the 13 ending at the newest one: a newer month
//! drops those that fall out of that span, and an older one than the span is too old to keep.

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

/// The last 13 months of one customer: only the months that hold data, in a boxed slice
/// sorted by month (16 bytes a month; a customer who transacted in one month costs 16 bytes
/// plus the slice's pointer, not thirteen buckets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonthBuckets {
    buckets: Box<[MonthBucket]>,
}

impl MonthBuckets {
    /// The bucket of `month`, created if it is within the 13 months ending at the newest one
    /// held (older ones are dropped as a newer month arrives). `None` when it is too old.
    fn bucket_mut(&mut self, month: i32) -> Option<&mut MonthBucket> {
        let newest = self.buckets.last().map_or(month, |b| b.month.max(month));
        let oldest_kept = newest.saturating_sub(MONTHS as i32 - 1);
        if month < oldest_kept {
            return None;
        }
        match self.buckets.binary_search_by_key(&month, |b| b.month) {
            Ok(i) => Some(&mut self.buckets[i]),
            Err(i) => {
                let mut v: Vec<MonthBucket> = std::mem::take(&mut self.buckets).into_vec();
                v.insert(i, MonthBucket { month, ..EMPTY });
                v.retain(|b| b.month >= oldest_kept);
                let at = v.iter().position(|b| b.month == month).expect("inserted");
                self.buckets = v.into_boxed_slice();
                Some(&mut self.buckets[at])
            }
        }
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
        if let Ok(i) = self.buckets.binary_search_by_key(&month, |b| b.month) {
            let b = &mut self.buckets[i];
            b.failed = b.failed.saturating_add(1);
        }
    }

    /// The months with data, oldest first.
    pub fn held(&self) -> &[MonthBucket] {
        &self.buckets
    }

    /// The totals of `month`, zero when nothing was recorded for it.
    pub fn get(&self, month: i32) -> MonthBucket {
        match self.buckets.binary_search_by_key(&month, |b| b.month) {
            Ok(i) => self.buckets[i],
            Err(_) => MonthBucket { month, ..EMPTY },
        }
    }

    /// The buckets as the snapshot format stores them: 13 slots, bucket `m % 13` holding month
    /// `m`, empty slots marked `i32::MIN`.
    pub fn raw(&self) -> [MonthBucket; MONTHS] {
        let mut out = [EMPTY; MONTHS];
        for b in self.buckets.iter() {
            out[b.month.rem_euclid(MONTHS as i32) as usize] = *b;
        }
        out
    }

    /// Buckets read back from a snapshot's 13 slots.
    pub fn from_raw(buckets: [MonthBucket; MONTHS]) -> MonthBuckets {
        let mut held: Vec<MonthBucket> = buckets
            .into_iter()
            .filter(|b| b.month != i32::MIN)
            .collect();
        held.sort_by_key(|b| b.month);
        held.dedup_by_key(|b| b.month);
        if let Some(newest) = held.last().map(|b| b.month) {
            held.retain(|b| b.month >= newest.saturating_sub(MONTHS as i32 - 1));
        }
        MonthBuckets {
            buckets: held.into_boxed_slice(),
        }
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

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn the_snapshot_slots_round_trip_and_only_months_with_data_cost_memory() {
        let mut m = MonthBuckets::default();
        for (month, amount) in [(200, 5), (195, 7), (207, 1), (200, 2)] {
            m.add(month, amount);
        }
        m.fail(195);
        assert_eq!(m.buckets.len(), 3);
        let back = MonthBuckets::from_raw(m.raw());
        assert_eq!(back, m);
        assert_eq!((back.get(200).count, back.get(200).sum), (2, 7));
        assert_eq!(back.get(195).failed, 1);
        // Month 208 makes 195 fall out of the 13 months ending at 208... (195 < 196).
        m.add(208, 1);
        assert_eq!(m.get(195).count, 0);
        assert_eq!(m.buckets.len(), 3);
    }
}

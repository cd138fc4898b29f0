//! A fixed-capacity ring of [`Event`]s in arrival order. It grows its allocation only up to the
//! capacity, so a customer with two transactions costs two events, not a full ring.

use super::event::Event;

/// Events of one customer, oldest overwritten first once `capacity` is reached.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    events: Vec<Event>,
    /// Index of the oldest event once the ring is full (the next one to overwrite).
    oldest: u32,
    /// Some event arrived stamped earlier than one before it. Until the ring is cleared,
    /// readers cannot stop scanning at the first event older than their window.
    unordered: bool,
}

impl Ring {
    /// Appends an event, overwriting the oldest when `capacity` events are held.
    pub fn push(&mut self, event: Event, capacity: usize) {
        if let Some(newest) = self.newest()
            && event.at < newest.at
        {
            self.unordered = true;
        }
        if self.events.len() < capacity {
            if self.events.len() == self.events.capacity() {
                // Grow geometrically but never past the capacity, so a full ring is exact.
                let target = (self.events.len() * 2).max(4).min(capacity);
                self.events.reserve_exact(target - self.events.len());
            }
            self.events.push(event);
        } else if capacity > 0 {
            let i = self.oldest as usize % self.events.len();
            self.events[i] = event;
            self.oldest = ((i + 1) % self.events.len()) as u32;
        }
    }

    /// Events in arrival order, as two slices (older part first).
    #[inline]
    pub fn as_slices(&self) -> (&[Event], &[Event]) {
        let (newer, older) = self.events.split_at(self.oldest as usize);
        (older, newer)
    }

    /// The most recently arrived event.
    #[inline]
    pub fn newest(&self) -> Option<&Event> {
        if self.oldest == 0 {
            self.events.last()
        } else {
            self.events.get(self.oldest as usize - 1)
        }
    }

    /// Whether every event arrived in time order (each stamped no earlier than the one before).
    #[inline]
    pub fn in_time_order(&self) -> bool {
        !self.unordered
    }

    /// Events in arrival order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        let (a, b) = self.as_slices();
        a.iter().chain(b)
    }

    /// The event with this transaction hash, if held.
    pub fn find_mut(&mut self, txn_hash: u64) -> Option<&mut Event> {
        self.events.iter_mut().find(|e| e.is_txn(txn_hash))
    }

    /// The event with this transaction hash, if held.
    pub fn find(&self, txn_hash: u64) -> Option<&Event> {
        self.events.iter().find(|e| e.is_txn(txn_hash))
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drops every event and frees the allocation.
    pub fn clear(&mut self) {
        self.events = Vec::new();
        self.oldest = 0;
        self.unordered = false;
    }

    /// Bytes allocated for events.
    pub fn allocated_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<Event>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Action;
    use crate::txn::Amount;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn ev(i: i64) -> Event {
        Event::new(
            i,
            i as u64,
            Amount::from_minor(i.rem_euclid(1000)).unwrap(),
            None,
            Action::Allow,
        )
    }

    proptest! {
        #[test]
        fn ring_keeps_the_last_capacity_events_in_order(capacity in 1usize..70, n in 0i64..300) {
            let mut ring = Ring::default();
            let mut model = VecDeque::new();
            for i in 0..n {
                ring.push(ev(i), capacity);
                model.push_back(ev(i));
                if model.len() > capacity {
                    model.pop_front();
                }
            }
            let got: Vec<Event> = ring.iter().copied().collect();
            let want: Vec<Event> = model.into_iter().collect();
            prop_assert_eq!(ring.newest().copied(), want.last().copied());
            prop_assert_eq!(got, want);
            prop_assert!(ring.in_time_order());
            prop_assert!(ring.allocated_bytes() <= capacity.max(4) * 32);
        }
    }
}

//! A fixed-capacity ring of [`Event`]s in arrival order. It grows its allocation only up to the
//! capacity, so a customer with two transactions costs two events, not a full ring.
//!
//! The ring keeps what its events add up to ([`RingTotals`]) as they arrive, are overwritten
//! and change, so that a decision reads the aggregates of a window holding the whole ring
//! instead of visiting every event: with 30- and 90-day windows and a customer who transacts
//! daily, that is nearly every decision. Events change only through the ring
//! ([`Ring::update`]), which keeps the totals true.

use super::event::{Event, Outcome};
use crate::txn::EventTime;

/// What the events of a ring add up to: a window's aggregates for a window holding them all,
/// but for the count (the ring's length) and the count of one amount (which depends on the
/// amount decided).
///
/// The counts wrap at 2^16, so that the totals fit in half a cache line beside the ring: they
/// are exact for a ring of at most `u16::MAX` events (see [`RingTotals::exact_for`]), which any
/// configured ring is, and a reader checks that before using them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingTotals {
    /// Sum of amounts, minor units.
    pub sum: i64,
    /// Sum of the amounts reported failed.
    pub failed_sum: i64,
    /// Sum of the amounts reported settled.
    pub settled_sum: i64,
    /// Events reported failed (wrapping).
    pub failed: u16,
    /// Events reported settled (wrapping).
    pub settled: u16,
    /// Events decided review or deny (wrapping).
    pub flagged: u16,
}

impl RingTotals {
    /// The totals of some events, added one by one.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> RingTotals {
        let mut totals = RingTotals::default();
        for ev in events {
            totals.add(ev);
        }
        totals
    }

    /// Whether totals of `events` events hold exact counts.
    #[inline]
    pub fn exact_for(events: usize) -> bool {
        events <= usize::from(u16::MAX)
    }

    #[inline]
    fn add(&mut self, ev: &Event) {
        self.apply(ev, 1);
    }

    #[inline]
    fn remove(&mut self, ev: &Event) {
        self.apply(ev, -1);
    }

    /// Adds an event's share (`sign` 1) or takes it away (−1).
    #[inline(always)]
    fn apply(&mut self, ev: &Event, sign: i16) {
        let a = ev.amount_minor();
        let (signed, step) = (i64::from(sign) * a, sign as u16);
        self.sum += signed;
        // Most events are pending and allowed, and add nothing more.
        if ev.pending_and_allowed() {
            return;
        }
        let counted = ev.counted();
        if counted.failed {
            self.failed = self.failed.wrapping_add(step);
            self.failed_sum += signed;
        }
        if counted.settled {
            self.settled = self.settled.wrapping_add(step);
            self.settled_sum += signed;
        }
        if counted.flagged {
            self.flagged = self.flagged.wrapping_add(step);
        }
    }
}

/// What [`Ring::set_outcome`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeSet {
    /// The event's time.
    pub at: EventTime,
    /// Whether the event is failed now and was not before (months count failures).
    pub newly_failed: bool,
}

/// Events of one customer, oldest overwritten first once `capacity` is reached.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    events: Vec<Event>,
    /// What the events add up to.
    totals: RingTotals,
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
            self.totals.add(&event);
        } else if capacity > 0 {
            let i = self.oldest as usize % self.events.len();
            self.totals.remove(&self.events[i]);
            self.events[i] = event;
            self.totals.add(&event);
            self.oldest = ((i + 1) % self.events.len()) as u32;
        }
    }

    /// What the events held add up to.
    #[inline]
    pub fn totals(&self) -> RingTotals {
        self.totals
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

    /// Records what the gateway reported on the event with this transaction hash, if held.
    pub fn set_outcome(&mut self, txn_hash: u64, outcome: Outcome) -> Option<OutcomeSet> {
        self.update(txn_hash, |event| {
            let newly_failed = outcome == Outcome::Failed && event.outcome() != Outcome::Failed;
            event.set_outcome(outcome);
            OutcomeSet {
                at: event.at,
                newly_failed,
            }
        })
    }

    /// Changes the event with this transaction hash, if held, and returns what `change` did;
    /// the ring's totals follow the change.
    pub fn update<R>(&mut self, txn_hash: u64, change: impl FnOnce(&mut Event) -> R) -> Option<R> {
        let event = self.events.iter_mut().find(|e| e.is_txn(txn_hash))?;
        self.totals.remove(event);
        let changed = change(event);
        self.totals.add(event);
        Some(changed)
    }

    /// The event with this transaction hash, if held.
    pub fn find(&self, txn_hash: u64) -> Option<&Event> {
        Event::position_of_txn(&self.events, txn_hash).map(|i| &self.events[i])
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
        self.totals = RingTotals::default();
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
            prop_assert_eq!(ring.totals(), RingTotals::of(ring.iter()));
        }

        #[test]
        fn the_totals_are_what_the_events_held_add_up_to(
            capacity in 1usize..20,
            steps in prop::collection::vec((0u8..4, 0u8..3, 0i64..5_000, 0u8..4, any::<bool>()), 0..120),
        ) {
            // Events of random amounts, decisions and outcomes, each step either a push (which
            // may overwrite the oldest) or a change to the outcome of an event held or not.
            let mut ring = Ring::default();
            for (i, &(kind, decision, amount, outcome, push)) in steps.iter().enumerate() {
                let outcome = [Outcome::Pending, Outcome::Settled, Outcome::Failed, Outcome::Reversed]
                    [usize::from(outcome)];
                if push || kind == 0 {
                    let decision = [Action::Allow, Action::Review, Action::Deny][usize::from(decision)];
                    let mut e = Event::new(i as i64, i as u64, Amount::from_minor(amount).unwrap(), None, decision);
                    e.set_outcome(outcome);
                    ring.push(e, capacity);
                } else {
                    let target = (i as u64).saturating_sub(u64::from(kind) * 3);
                    let held = ring.find(target).is_some();
                    let changed = ring.update(target, |e| e.set_outcome(outcome));
                    prop_assert_eq!(changed.is_some(), held);
                }
                prop_assert_eq!(ring.totals(), RingTotals::of(ring.iter()));
            }
            ring.clear();
            prop_assert_eq!(ring.totals(), RingTotals::default());
        }
    }

    #[test]
    fn the_totals_of_a_failed_review_and_a_settled_allow() {
        let mut failed = Event::new(1, 1, Amount::from_minor(500).unwrap(), None, Action::Review);
        failed.set_outcome(Outcome::Failed);
        let mut settled = Event::new(2, 2, Amount::from_minor(70).unwrap(), None, Action::Allow);
        settled.set_outcome(Outcome::Settled);
        let plain = Event::new(3, 3, Amount::from_minor(9).unwrap(), None, Action::Deny);
        let totals = RingTotals::of([&failed, &settled, &plain]);
        assert_eq!(
            totals,
            RingTotals {
                sum: 579,
                failed_sum: 500,
                settled_sum: 70,
                failed: 1,
                settled: 1,
                flagged: 2,
            }
        );
    }
}

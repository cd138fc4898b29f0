//! The compact record of one decided transaction kept in a customer's ring: 28 bytes, plain
//! integers, no pointers — so a ring is one allocation and a scan over it stays in cache.
//!
//! The transaction's keyed hash is kept to 43 bits (spread over the packed word's spare bits
//! and a 32-bit word), which is what brings an event from 32 to 28 bytes. It tells a retried
//! transaction from a new one within one customer's ring: two different transactions of one
//! customer share 43 bits with odds of 1 in 8.8 × 10¹², so a 64-event ring mistakes a new
//! transaction for a duplicate about once in 1.4 × 10¹¹ decisions (ten million decisions a day
//! for some forty years), and the secret hash keys leave nobody able to aim for it.

use crate::rules::Action;
use crate::txn::{Amount, EventTime, GeoPoint, OutcomeStatus};

/// What the gateway has reported about a recorded transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// Nothing reported yet.
    Pending = 0,
    /// Settled.
    Settled = 1,
    /// Failed.
    Failed = 2,
    /// Reversed.
    Reversed = 3,
}

impl From<OutcomeStatus> for Outcome {
    fn from(status: OutcomeStatus) -> Outcome {
        match status {
            OutcomeStatus::Settled => Outcome::Settled,
            OutcomeStatus::Failed => Outcome::Failed,
            OutcomeStatus::Reversed => Outcome::Reversed,
        }
    }
}

const AMOUNT_BITS: u32 = 48;
const AMOUNT_MASK: u64 = (1 << AMOUNT_BITS) - 1;
const OUTCOME_SHIFT: u32 = AMOUNT_BITS;
const DECISION_SHIFT: u32 = AMOUNT_BITS + 2;
/// Set when the transaction was reported as confirmed fraud.
const FRAUD_BIT: u64 = 1 << (DECISION_SHIFT + 2);
/// The bits of the packed word that describe the transaction (amount, outcome, decision,
/// fraud); those above hold part of the transaction hash.
const FIELD_BITS: u32 = DECISION_SHIFT + 3;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
/// Bits of the transaction hash kept in the packed word, above its fields.
const HASH_LOW_BITS: u32 = 64 - FIELD_BITS;
/// Bits of the transaction hash kept: the packed word's spare bits and a 32-bit word.
pub const TXN_HASH_BITS: u32 = HASH_LOW_BITS + 32;
const TXN_HASH_MASK: u64 = (1 << TXN_HASH_BITS) - 1;
/// Latitude marking an event without a location.
const NO_GEO: i32 = i32::MIN;
/// Degrees are kept in units of 1e-7 (about a centimetre).
const GEO_SCALE: f64 = 1e7;

/// Which of a window's counts an event adds to, beside its count and sum (see
/// [`Event::counted`]): failed or settled as reported (a reversed or pending one to neither),
/// flagged when it was decided review or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// Reported failed.
    pub failed: bool,
    /// Reported settled.
    pub settled: bool,
    /// Decided review or deny.
    pub flagged: bool,
}

/// One recorded transaction.
///
/// Packed to 4-byte alignment, so that 28 bytes are 28 bytes in a ring: fields are read by
/// value (a reference to `at` would be unaligned, and the compiler refuses one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Event {
    /// Event time, microseconds.
    pub at: EventTime,
    /// Amount in minor units (low 48 bits), outcome (2 bits), decision (2 bits), fraud (1 bit);
    /// the low 11 bits of the transaction hash above them.
    packed: u64,
    /// The transaction hash's next 32 bits.
    hash_high: u32,
    lat_e7: i32,
    lon_e7: i32,
}

const _: () = assert!(std::mem::size_of::<Event>() == 28);
const _: () = assert!(TXN_HASH_BITS == 43);
// Amounts are capped so that they always fit the bits an event keeps for them.
const _: () = assert!(crate::txn::MAX_AMOUNT_MINOR as u64 <= AMOUNT_MASK);

/// The 32-bit word of a transaction hash an event keeps beside its packed word.
#[inline]
fn hash_high_word(txn_hash: u64) -> u32 {
    ((txn_hash >> HASH_LOW_BITS) & 0xffff_ffff) as u32
}

/// The part of a transaction hash an event keeps, as [`Event::txn_hash`] returns it.
#[inline]
pub fn kept_hash(txn_hash: u64) -> u64 {
    txn_hash & TXN_HASH_MASK
}

impl Event {
    /// A new event with outcome pending.
    pub fn new(
        at: EventTime,
        txn_hash: u64,
        amount: Amount,
        geo: Option<GeoPoint>,
        decision: Action,
    ) -> Event {
        let (lat_e7, lon_e7) = match geo {
            // In range by validation (|lat| ≤ 90, |lon| ≤ 180), so the casts cannot saturate.
            Some(p) => (
                (p.lat * GEO_SCALE).round() as i32,
                (p.lon * GEO_SCALE).round() as i32,
            ),
            None => (NO_GEO, 0),
        };
        let amount_bits = (amount.minor() as u64) & AMOUNT_MASK;
        Event::from_parts(
            at,
            txn_hash,
            amount_bits | ((decision as u64) << DECISION_SHIFT),
            lat_e7,
            lon_e7,
        )
    }

    fn from_parts(at: EventTime, txn_hash: u64, fields: u64, lat_e7: i32, lon_e7: i32) -> Event {
        Event {
            at,
            packed: (fields & FIELD_MASK) | (txn_hash << FIELD_BITS),
            hash_high: hash_high_word(txn_hash),
            lat_e7,
            lon_e7,
        }
    }

    /// The transaction's keyed hash, its low [`TXN_HASH_BITS`] bits (see [`kept_hash`]).
    #[inline]
    pub fn txn_hash(&self) -> u64 {
        let packed = self.packed;
        (packed >> FIELD_BITS) | (u64::from(self.hash_high) << HASH_LOW_BITS)
    }

    /// The same event for another transaction hash.
    pub fn with_txn_hash(self, txn_hash: u64) -> Event {
        let (at, packed, lat_e7, lon_e7) = (self.at, self.packed, self.lat_e7, self.lon_e7);
        Event::from_parts(at, txn_hash, packed, lat_e7, lon_e7)
    }

    /// Whether this is the transaction with keyed hash `txn_hash` (compared on the bits kept).
    #[inline]
    pub fn is_txn(&self, txn_hash: u64) -> bool {
        // The 32-bit word first: a ring is scanned for a retry on every decision, and nearly
        // every event differs there already.
        let (packed, high) = (self.packed, self.hash_high);
        high == hash_high_word(txn_hash)
            && packed >> FIELD_BITS == txn_hash & ((1 << HASH_LOW_BITS) - 1)
    }

    /// The index of the first of `events` that is the transaction `txn_hash`, as
    /// `events.iter().position(|e| e.is_txn(txn_hash))` answers. Every decision scans its
    /// customer's ring for a retry and nearly always finds none: the events' 32-bit hash words
    /// are compared four at a time (`state::position_by_fours`).
    #[inline]
    pub fn position_of_txn(events: &[Event], txn_hash: u64) -> Option<usize> {
        let high = hash_high_word(txn_hash);
        super::position_by_fours(events, |e| e.hash_high == high, |e| e.is_txn(txn_hash))
    }

    /// Amount in minor units.
    #[inline]
    pub fn amount_minor(&self) -> i64 {
        (self.packed & AMOUNT_MASK) as i64
    }

    /// What the gateway reported.
    #[inline]
    pub fn outcome(&self) -> Outcome {
        match (self.packed >> OUTCOME_SHIFT) & 0b11 {
            0 => Outcome::Pending,
            1 => Outcome::Settled,
            2 => Outcome::Failed,
            _ => Outcome::Reversed,
        }
    }

    /// Records what the gateway reported.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.packed =
            (self.packed & !(0b11 << OUTCOME_SHIFT)) | ((outcome as u64) << OUTCOME_SHIFT);
    }

    /// Whether the transaction was reported as confirmed fraud.
    #[inline]
    pub fn is_fraud(&self) -> bool {
        self.packed & FRAUD_BIT != 0
    }

    /// Marks the transaction as confirmed fraud; returns whether it was not marked yet.
    pub fn set_fraud(&mut self) -> bool {
        let new = !self.is_fraud();
        self.packed |= FRAUD_BIT;
        new
    }

    /// Whether nothing has been reported on it and it was allowed: outcome pending and
    /// decision allow, the usual event, tested with one mask.
    #[inline]
    pub fn pending_and_allowed(&self) -> bool {
        self.packed & (0b1111 << OUTCOME_SHIFT) == 0
    }

    /// Which of a window's counts of reported and flagged transactions this event adds to:
    /// one place for what the window scan and a ring's totals both count.
    #[inline(always)]
    pub fn counted(&self) -> Counted {
        let outcome = self.outcome();
        Counted {
            failed: outcome == Outcome::Failed,
            settled: outcome == Outcome::Settled,
            flagged: self.decision() != Action::Allow,
        }
    }

    /// The decision given when the transaction was first seen.
    #[inline]
    pub fn decision(&self) -> Action {
        match (self.packed >> DECISION_SHIFT) & 0b11 {
            0 => Action::Allow,
            1 => Action::Review,
            _ => Action::Deny,
        }
    }

    /// Whether the event has a location.
    #[inline]
    pub fn has_geo(&self) -> bool {
        let lat = self.lat_e7;
        lat != NO_GEO
    }

    /// Where it happened, when known.
    #[inline]
    pub fn geo(&self) -> Option<GeoPoint> {
        let (lat, lon) = (self.lat_e7, self.lon_e7);
        (lat != NO_GEO).then(|| GeoPoint {
            lat: f64::from(lat) / GEO_SCALE,
            lon: f64::from(lon) / GEO_SCALE,
        })
    }

    /// The event as 32 little-endian bytes, for snapshots and the journal: time, the kept
    /// transaction hash, amount and flags, latitude, longitude (the layout of the 32-byte
    /// events before, so that their snapshots and journals still load).
    pub fn to_bytes(&self) -> [u8; 32] {
        let (at, packed, lat_e7, lon_e7) = (self.at, self.packed, self.lat_e7, self.lon_e7);
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&at.to_le_bytes());
        out[8..16].copy_from_slice(&self.txn_hash().to_le_bytes());
        out[16..24].copy_from_slice(&(packed & FIELD_MASK).to_le_bytes());
        out[24..28].copy_from_slice(&lat_e7.to_le_bytes());
        out[28..32].copy_from_slice(&lon_e7.to_le_bytes());
        out
    }

    /// Reads [`Event::to_bytes`] back; `None` unless exactly 32 bytes holding a valid event.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        let bytes: &[u8; 32] = bytes.try_into().ok()?;
        let word =
            |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().expect("8 bytes"));
        let half =
            |r: std::ops::Range<usize>| i32::from_le_bytes(bytes[r].try_into().expect("4 bytes"));
        let fields = word(16..24);
        let (lat_e7, lon_e7) = (half(24..28), half(28..32));
        let valid_amount = ((fields & AMOUNT_MASK) as i64) <= crate::txn::MAX_AMOUNT_MINOR;
        let valid_bits = fields >> FIELD_BITS == 0 && (fields >> DECISION_SHIFT) & 0b11 != 0b11;
        let valid_geo = lat_e7 == NO_GEO
            || (lat_e7.unsigned_abs() <= 900_000_000 && lon_e7.unsigned_abs() <= 1_800_000_000);
        (valid_amount && valid_bits && valid_geo).then(|| {
            // Hashes written in full (by 32-byte events) keep the bits this one keeps.
            Event::from_parts(word(0..8) as i64, word(8..16), fields, lat_e7, lon_e7)
        })
    }

    /// The location as stored (rounded to 1e-7 degrees), so that a decision uses the same
    /// coordinates whether the point came from the request or from history.
    pub fn quantize(p: GeoPoint) -> GeoPoint {
        GeoPoint {
            lat: (p.lat * GEO_SCALE).round() / GEO_SCALE,
            lon: (p.lon * GEO_SCALE).round() / GEO_SCALE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The retry scan answers what a plain scan answers, with hashes that often share
        /// their 32-bit word (or their low bits) with another event's.
        #[test]
        fn a_transaction_is_found_as_a_plain_scan_finds_it(
            hashes in prop::collection::vec((0u64..3, 0u64..3), 0..=70),
            wanted in (0u64..3, 0u64..3),
        ) {
            let kept = |(high, low): (u64, u64)| (high << HASH_LOW_BITS) | low;
            let events: Vec<Event> = hashes
                .iter()
                .enumerate()
                .map(|(i, &h)| {
                    Event::new(i as i64, kept(h), Amount::from_minor(100).unwrap(), None, Action::Allow)
                })
                .collect();
            let h = kept(wanted);
            prop_assert_eq!(
                Event::position_of_txn(&events, h),
                events.iter().position(|e| e.is_txn(h))
            );
        }
    }

    #[test]
    fn packs_and_unpacks_every_field() {
        let amount = Amount::from_minor(crate::txn::MAX_AMOUNT_MINOR).unwrap();
        let geo = GeoPoint {
            lat: -33.8688,
            lon: 151.2093,
        };
        let mut e = Event::new(-5, 42, amount, Some(geo), Action::Review);
        assert_eq!(e.amount_minor(), amount.minor());
        assert_eq!(e.decision(), Action::Review);
        assert_eq!(e.outcome(), Outcome::Pending);
        e.set_outcome(Outcome::Failed);
        assert_eq!(e.outcome(), Outcome::Failed);
        assert_eq!(e.amount_minor(), amount.minor());
        assert_eq!(e.decision(), Action::Review);
        let back = e.geo().unwrap();
        assert!((back.lat - geo.lat).abs() < 1e-7 && (back.lon - geo.lon).abs() < 1e-7);
        let none = Event::new(0, 0, amount, None, Action::Deny);
        assert_eq!(none.geo(), None);
        assert_eq!(none.decision(), Action::Deny);
        assert_eq!(Event::from_bytes(&e.to_bytes()), Some(e));
        assert_eq!(Event::from_bytes(&none.to_bytes()), Some(none));
        let mut bad = e.to_bytes();
        bad[23] = 0xff;
        assert_eq!(Event::from_bytes(&bad), None);
        assert_eq!(Event::from_bytes(&bad[..31]), None);
    }

    #[test]
    fn the_transaction_hash_keeps_its_low_43_bits_beside_every_other_field() {
        let amount = Amount::from_minor(crate::txn::MAX_AMOUNT_MINOR).unwrap();
        for hash in [0, 1, u64::MAX, 0x8000_0000_0000_0001, 0x0123_4567_89ab_cdef] {
            let mut e = Event::new(7, hash, amount, None, Action::Deny);
            e.set_outcome(Outcome::Reversed);
            assert!(e.set_fraud());
            assert_eq!(e.txn_hash(), hash & ((1 << 43) - 1));
            assert!(e.is_txn(hash) && !e.is_txn(hash ^ 1) && !e.is_txn(hash ^ (1 << 42)));
            assert!(
                e.is_txn(hash ^ (1 << 43)),
                "bits past the 43rd are not kept"
            );
            assert_eq!(
                (e.amount_minor(), e.outcome(), e.decision(), e.is_fraud()),
                (amount.minor(), Outcome::Reversed, Action::Deny, true)
            );
            // A 32-byte event of a snapshot written before holds the hash in full.
            let mut old = e.to_bytes();
            old[8..16].copy_from_slice(&hash.to_le_bytes());
            let loaded = Event::from_bytes(&old).unwrap();
            assert_eq!(loaded, e);
            assert!(loaded.is_txn(hash));
        }
    }
}

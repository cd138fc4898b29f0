//! The compact record of one decided transaction kept in a customer's ring: 32 bytes, plain
//! integers, no pointers — so a ring is one allocation and a scan over it stays in cache.

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
/// Latitude marking an event without a location.
const NO_GEO: i32 = i32::MIN;
/// Degrees are kept in units of 1e-7 (about a centimetre).
const GEO_SCALE: f64 = 1e7;

/// One recorded transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Event {
    /// Event time, microseconds.
    pub at: EventTime,
    /// Keyed hash of the transaction id, for duplicate detection and outcome reports.
    pub txn_hash: u64,
    /// Amount in minor units (low 48 bits), outcome (2 bits), decision (2 bits).
    packed: u64,
    lat_e7: i32,
    lon_e7: i32,
}

const _: () = assert!(std::mem::size_of::<Event>() == 32);
// Amounts are capped so that they always fit the bits an event keeps for them.
const _: () = assert!(crate::txn::MAX_AMOUNT_MINOR as u64 <= AMOUNT_MASK);

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
        Event {
            at,
            txn_hash,
            packed: amount_bits | ((decision as u64) << DECISION_SHIFT),
            lat_e7,
            lon_e7,
        }
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

    /// The decision given when the transaction was first seen.
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
        self.lat_e7 != NO_GEO
    }

    /// Where it happened, when known.
    #[inline]
    pub fn geo(&self) -> Option<GeoPoint> {
        (self.lat_e7 != NO_GEO).then(|| GeoPoint {
            lat: f64::from(self.lat_e7) / GEO_SCALE,
            lon: f64::from(self.lon_e7) / GEO_SCALE,
        })
    }

    /// The event as 32 little-endian bytes, for snapshots and the journal.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&self.at.to_le_bytes());
        out[8..16].copy_from_slice(&self.txn_hash.to_le_bytes());
        out[16..24].copy_from_slice(&self.packed.to_le_bytes());
        out[24..28].copy_from_slice(&self.lat_e7.to_le_bytes());
        out[28..32].copy_from_slice(&self.lon_e7.to_le_bytes());
        out
    }

    /// Reads [`Event::to_bytes`] back; `None` unless exactly 32 bytes holding a valid event.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        let bytes: &[u8; 32] = bytes.try_into().ok()?;
        let word =
            |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().expect("8 bytes"));
        let half =
            |r: std::ops::Range<usize>| i32::from_le_bytes(bytes[r].try_into().expect("4 bytes"));
        let event = Event {
            at: word(0..8) as i64,
            txn_hash: word(8..16),
            packed: word(16..24),
            lat_e7: half(24..28),
            lon_e7: half(28..32),
        };
        let valid_amount = event.amount_minor() <= crate::txn::MAX_AMOUNT_MINOR;
        let valid_bits = event.packed >> (DECISION_SHIFT + 3) == 0
            && (event.packed >> DECISION_SHIFT) & 0b11 != 0b11;
        let valid_geo = event.lat_e7 == NO_GEO
            || (event.lat_e7.unsigned_abs() <= 900_000_000
                && event.lon_e7.unsigned_abs() <= 1_800_000_000);
        (valid_amount && valid_bits && valid_geo).then_some(event)
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
}

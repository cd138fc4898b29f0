//! The rule set's time zone, compiled for the hot path.
//!
//! A decision needs the zone's UTC offset (local time of day, night activity) and the calendar
//! month (monthly trends) of the current transaction, and with hour ranges the offset of every
//! event in the window. Asking the zone database each time costs more than the rest of the
//! feature work, so compilation lists the zone's offset changes from 1970 to 2100 once; inside
//! that span an offset is a binary search over a few hundred entries and the month is integer
//! arithmetic on the local day. Outside it the zone itself answers, so every instant gets the
//! same answer it would get from jiff (the tests check both agree).

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::txn::{EventTime, MICROS_PER_SECOND};

/// 1970-01-01T00:00:00Z, seconds.
const SPAN_START_SECS: i64 = 0;
/// 2100-01-01T00:00:00Z, seconds.
const SPAN_END_SECS: i64 = 4_102_444_800;

/// A zone's offsets over 1970–2100, precomputed.
#[derive(Clone, Debug)]
pub struct ZoneTable {
    zone: TimeZone,
    /// Offset in force at the span's start, seconds east of UTC.
    initial_offset: i32,
    /// Every change of offset inside the span: (instant in seconds, offset from then on),
    /// in time order.
    changes: Box<[(i64, i32)]>,
}

impl ZoneTable {
    /// Lists the zone's offset changes over the span.
    pub fn new(zone: &TimeZone) -> ZoneTable {
        let start = Timestamp::from_second(SPAN_START_SECS).expect("1970 is a valid timestamp");
        let initial_offset = zone.to_offset(start).seconds();
        let mut changes: Vec<(i64, i32)> = Vec::new();
        let mut current = initial_offset;
        for transition in zone.following(start) {
            let at = transition.timestamp().as_second();
            if at >= SPAN_END_SECS {
                break;
            }
            let offset = transition.offset().seconds();
            // Transitions that change only the abbreviation or the DST flag are not kept.
            if offset != current && at > SPAN_START_SECS {
                changes.push((at, offset));
                current = offset;
            }
        }
        ZoneTable {
            zone: zone.clone(),
            initial_offset,
            changes: changes.into_boxed_slice(),
        }
    }

    fn in_span(secs: i64) -> bool {
        (SPAN_START_SECS..SPAN_END_SECS).contains(&secs)
    }

    /// How many offset changes fall at or before second `secs`. Most zones stopped changing
    /// decades ago (no daylight saving), so an instant after the last change is answered
    /// without a search: a few decisions' worth of binary searches each time otherwise.
    #[inline]
    fn changes_up_to(&self, secs: i64) -> usize {
        match self.changes.last() {
            Some(&(at, _)) if at <= secs => self.changes.len(),
            _ => self.changes.partition_point(|&(at, _)| at <= secs),
        }
    }

    /// The offset in force at `secs` (seconds since the epoch), inside the span.
    #[inline]
    fn table_offset(&self, secs: i64) -> i32 {
        let i = self.changes_up_to(secs);
        if i == 0 {
            self.initial_offset
        } else {
            self.changes[i - 1].1
        }
    }

    /// The zone's offset from UTC at event time `at`, seconds.
    #[inline]
    pub fn offset_at(&self, at: EventTime) -> i32 {
        let secs = at.div_euclid(MICROS_PER_SECOND);
        if Self::in_span(secs) {
            self.table_offset(secs)
        } else {
            Timestamp::from_second(secs)
                .map(|ts| self.zone.to_offset(ts).seconds())
                .unwrap_or(0)
        }
    }

    /// The offset at `t` if it holds over the whole of (t − `within`, t]; `None` when the
    /// offset changed in that stretch (or it reaches outside the span), so that the caller
    /// looks each instant up.
    #[inline]
    pub fn fixed_offset(&self, t: EventTime, within: i64) -> Option<i32> {
        let secs = t.div_euclid(MICROS_PER_SECOND);
        let from = t.saturating_sub(within).div_euclid(MICROS_PER_SECOND);
        if !Self::in_span(secs) || !Self::in_span(from) {
            return None;
        }
        let i = self.changes_up_to(secs);
        match i.checked_sub(1).map(|k| self.changes[k]) {
            // A change at second `at` applies from that second on; an instant earlier in the
            // same second (or before) had the old offset.
            Some((at, _)) if at > from => None,
            Some((_, offset)) => Some(offset),
            None => Some(self.initial_offset),
        }
    }

    /// Local seconds since midnight of event time `at`.
    #[inline]
    pub fn local_seconds(&self, at: EventTime) -> u32 {
        let secs = at.div_euclid(MICROS_PER_SECOND);
        (secs + i64::from(self.offset_at(at))).rem_euclid(86_400) as u32
    }

    /// The calendar month (`year × 12 + month − 1`) of event time `at` in the zone.
    #[inline]
    pub fn month_of(&self, at: EventTime) -> i32 {
        let secs = at.div_euclid(MICROS_PER_SECOND);
        if !Self::in_span(secs) {
            return crate::engine::features::month_of(&self.zone, at);
        }
        // Zones' offsets are within a day (real ones within 14 hours), so inside the span the
        // local time is at most a day before 1970: the day count is then found by unsigned
        // division (a multiply, without the signed one's corrections).
        let local = secs + i64::from(self.table_offset(secs));
        if !(-86_400..SPAN_END_SECS + 86_400).contains(&local) {
            return crate::engine::features::month_of(&self.zone, at);
        }
        let local_day = ((local + 86_400) as u64 / 86_400) as i64 - 1;
        let (year, month) = civil_year_month_in_span(local_day);
        (year * 12 + month - 1) as i32
    }
}

/// The proleptic Gregorian (year, month) of a day count from 1970-01-01 (H. Hinnant's
/// `civil_from_days`), for the days of the span (and a day either side), in unsigned 32-bit
/// arithmetic: every division is by a constant, and unsigned ones compile to a multiply and
/// a shift. It runs for every decision (twice when the rules read months).
#[inline]
fn civil_year_month_in_span(days: i64) -> (i64, i64) {
    debug_assert!((-1..=SPAN_END_SECS / 86_400 + 1).contains(&days));
    let z = (days + 719_468) as u32;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u32::from(month <= 2);
    (i64::from(year), i64::from(month))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offsets_of_more_than_a_day_take_the_general_path() {
        for hours in [-25, -24, 24, 25] {
            let zone = TimeZone::fixed(jiff::tz::Offset::constant(hours));
            let table = ZoneTable::new(&zone);
            for secs in [0, 3_600, 86_400, SPAN_END_SECS - 86_401, SPAN_END_SECS - 1] {
                let at = secs * MICROS_PER_SECOND;
                assert_eq!(
                    table.month_of(at),
                    crate::engine::features::month_of(&zone, at),
                    "{hours} h at {secs}"
                );
            }
        }
    }

    #[test]
    fn months_in_span_match_the_general_calendar_on_every_day() {
        let epoch = jiff::civil::date(1970, 1, 1);
        for days in -1..=SPAN_END_SECS / 86_400 + 1 {
            let date = epoch.checked_add(jiff::Span::new().days(days)).unwrap();
            assert_eq!(
                civil_year_month_in_span(days),
                (i64::from(date.year()), i64::from(date.month())),
                "day {days}"
            );
        }
    }

    fn zones() -> Vec<TimeZone> {
        [
            "UTC",
            "Asia/Shanghai",
            "Europe/London",
            "America/Sao_Paulo",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "America/New_York",
        ]
        .iter()
        .map(|name| TimeZone::get(name).expect("a bundled zone"))
        .collect()
    }

    fn jiff_offset(zone: &TimeZone, at: EventTime) -> i32 {
        let secs = at.div_euclid(MICROS_PER_SECOND);
        Timestamp::from_second(secs)
            .map(|ts| zone.to_offset(ts).seconds())
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn table_agrees_with_the_zone_database(
            secs in -1_000_000_000i64..5_000_000_000,
            micros in 0i64..1_000_000,
            within in 0i64..(400 * 86_400 * MICROS_PER_SECOND),
        ) {
            let at = secs * MICROS_PER_SECOND + micros;
            for zone in zones() {
                let table = ZoneTable::new(&zone);
                prop_assert_eq!(table.offset_at(at), jiff_offset(&zone, at));
                prop_assert_eq!(table.month_of(at), crate::engine::features::month_of(&zone, at));
                if let Some(offset) = table.fixed_offset(at, within) {
                    // The offset claimed fixed holds at both ends of the stretch and at
                    // every change jiff knows of in between.
                    prop_assert_eq!(offset, jiff_offset(&zone, at));
                    prop_assert_eq!(offset, jiff_offset(&zone, at - within));
                    let after = Timestamp::from_microsecond(at + 1).unwrap();
                    if let Some(change) = zone.preceding(after).next() {
                        let change_at = change.timestamp().as_microsecond();
                        if change_at > at - within {
                            prop_assert_eq!(change.offset().seconds(), offset);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn months_turn_at_local_midnight_around_changes() {
        for zone in zones() {
            let table = ZoneTable::new(&zone);
            let start = Timestamp::from_second(SPAN_START_SECS).unwrap();
            for transition in zone.following(start).take(40) {
                let t = transition.timestamp().as_microsecond();
                for delta in [-3_600_000_001, -1, 0, 1, 3_600_000_000, 86_400_000_000] {
                    let at = t + delta;
                    assert_eq!(
                        table.month_of(at),
                        crate::engine::features::month_of(&zone, at)
                    );
                    assert_eq!(table.offset_at(at), jiff_offset(&zone, at));
                }
            }
        }
    }
}

//! Feature extraction: one pass over a customer's history fills the aggregates of every window
//! the rule set uses, plus the per-transaction features (local time, travel, credit line).
//!
//! Windows are (t − w, t] in event time, t being the current transaction's time, and include
//! the current transaction. Events later than t (out-of-order arrivals) are outside every
//! window. Everything is integers in fixed units, on the stack.

use geo::{Distance, Haversine, Point};

use crate::rules::compile::RuleSet;
use crate::rules::{MAX_DISTINCT_WINDOWS, MAX_LIST_WINDOWS};
use crate::state::{CustomerHistory, Event, Outcome};
use crate::txn::{EventTime, GeoPoint, MICROS_PER_SECOND, Txn};

/// Aggregates over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowAgg {
    /// Transactions, current included.
    pub count: u32,
    /// Transactions of exactly the current amount, current included.
    pub same_amount: u32,
    /// Transactions reported failed.
    pub failed: u32,
    /// Sum of amounts, minor units, current included.
    pub sum: i64,
}

/// Where the customer was last seen, and how fast they would have had to travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Travel {
    /// Great-circle distance, metres.
    pub distance_m: i64,
    /// Time since the previous geotagged transaction, microseconds (≥ 0).
    pub elapsed: i64,
    /// Speed, metres per hour (`i64::MAX` when no time passed but the place changed).
    pub speed_m_per_h: i64,
}

/// Every feature value one decision may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Per window of [`RuleSet::windows`].
    pub windows: [WindowAgg; MAX_DISTINCT_WINDOWS],
    /// Per (window, list) pair of [`RuleSet::list_windows`].
    pub list_counts: [u32; MAX_LIST_WINDOWS],
    /// Current amount, minor units.
    pub amount: i64,
    /// Local seconds since midnight (0 unless a rule reads local time).
    pub local_secs: u32,
    /// Travel from the previous geotagged transaction, when both have a location.
    pub travel: Option<Travel>,
    /// Microseconds since the credit grant, when known and not in the future.
    pub since_grant: Option<i64>,
    /// Credit limit, minor units, when known.
    pub credit_limit: Option<i64>,
}

/// Great-circle distance in whole metres (haversine on the mean earth radius).
pub fn distance_m(a: GeoPoint, b: GeoPoint) -> i64 {
    let d = Haversine.distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat));
    d.round() as i64
}

/// Travel between two located events, from distance and elapsed time, in exact integers.
pub fn travel(from: GeoPoint, from_at: EventTime, to: GeoPoint, to_at: EventTime) -> Travel {
    let distance_m = distance_m(from, to);
    let elapsed = to_at - from_at;
    let speed_m_per_h = if elapsed <= 0 {
        if distance_m > 0 { i64::MAX } else { 0 }
    } else {
        let num = i128::from(distance_m) * i128::from(3_600 * MICROS_PER_SECOND);
        let den = i128::from(elapsed);
        i64::try_from((num + den / 2) / den).unwrap_or(i64::MAX)
    };
    Travel {
        distance_m,
        elapsed,
        speed_m_per_h,
    }
}

/// Local seconds since midnight of an event time in the rule set's zone.
pub fn local_seconds(set: &RuleSet, at: EventTime) -> u32 {
    let secs = at.div_euclid(MICROS_PER_SECOND);
    let offset = jiff::Timestamp::from_second(secs)
        .map(|ts| set.timezone.to_offset(ts).seconds())
        .unwrap_or(0);
    (secs + i64::from(offset)).rem_euclid(86_400) as u32
}

#[inline]
pub(crate) fn in_sorted(list: &[i64], amount: i64) -> bool {
    // Lists are a handful of entries; a linear scan beats a binary search there.
    if list.len() <= 16 {
        list.contains(&amount)
    } else {
        list.binary_search(&amount).is_ok()
    }
}

/// Adds one event to the aggregate of the shortest window that holds it (prefix sums in
/// [`extract`] carry it into the longer ones).
#[inline(always)]
fn visit(set: &RuleSet, f: &mut Features, ev: &Event, t: EventTime, amount: i64) {
    let windows = &set.windows;
    let age = t - ev.at;
    let Some(first) = windows.iter().position(|w| age < w.micros) else {
        return;
    };
    let ev_amount = ev.amount_minor();
    let agg = &mut f.windows[first];
    agg.count += 1;
    agg.sum += ev_amount;
    agg.same_amount += u32::from(ev_amount == amount);
    agg.failed += u32::from(ev.outcome() == Outcome::Failed);
    for (k, &(wi, list)) in set.list_windows.iter().enumerate() {
        if usize::from(wi) >= first && in_sorted(&set.amount_lists[list], ev_amount) {
            f.list_counts[k] += 1;
        }
    }
}

/// Computes every feature the rule set reads, touching each event at most once.
///
/// Each in-window event is added to the aggregate of the *shortest* window holding it; prefix
/// sums then carry it into every longer window, so the work per event does not grow with the
/// number of windows. When the history arrived in time order, the scan runs from the newest
/// event and stops at the first one older than the longest window (continuing, if a rule reads
/// travel, only until the previous located event is found) — a customer who transacts a few
/// times a day costs a handful of steps, not the whole ring.
pub fn extract(set: &RuleSet, history: &CustomerHistory<'_>, txn: &Txn<'_>) -> Features {
    let t = txn.at;
    let amount = txn.amount.minor();
    let nw = set.windows.len();
    let mut f = Features {
        windows: [WindowAgg::default(); MAX_DISTINCT_WINDOWS],
        list_counts: [0; MAX_LIST_WINDOWS],
        amount,
        local_secs: 0,
        travel: None,
        since_grant: None,
        credit_limit: None,
    };
    let here = txn.geo.map(Event::quantize);
    let want_geo = set.needs.geo && here.is_some();
    let horizon = set.horizon;
    let mut previous_geo: Option<&Event> = None;

    let (older, newer) = history.events;
    if history.in_time_order {
        // Newest first: the first located event at or before t is the previous location
        // (ties in time go to the later arrival, as in the full scan).
        for ev in newer.iter().rev().chain(older.iter().rev()) {
            if ev.at > t {
                continue;
            }
            let in_horizon = t - ev.at < horizon;
            if want_geo && previous_geo.is_none() && ev.has_geo() {
                previous_geo = Some(ev);
            }
            if in_horizon {
                visit(set, &mut f, ev, t, amount);
            } else if !want_geo || previous_geo.is_some() {
                break;
            }
        }
    } else {
        for ev in older.iter().chain(newer) {
            if ev.at > t {
                continue;
            }
            if want_geo && ev.has_geo() && previous_geo.is_none_or(|p| ev.at >= p.at) {
                previous_geo = Some(ev);
            }
            visit(set, &mut f, ev, t, amount);
        }
    }
    // Carry each window's events into every longer window.
    for i in 1..nw {
        let shorter = f.windows[i - 1];
        let agg = &mut f.windows[i];
        agg.count += shorter.count;
        agg.sum += shorter.sum;
        agg.same_amount += shorter.same_amount;
        agg.failed += shorter.failed;
    }

    // The current transaction is in every window.
    for agg in &mut f.windows[..nw] {
        agg.count += 1;
        agg.sum += amount;
        agg.same_amount += 1;
    }
    for (k, &(_, list)) in set.list_windows.iter().enumerate() {
        if in_sorted(&set.amount_lists[list], amount) {
            f.list_counts[k] += 1;
        }
    }

    if set.needs.local_time {
        f.local_secs = local_seconds(set, t);
    }
    if let (Some(here), Some(there)) = (here, previous_geo.and_then(|e| e.geo().map(|g| (e.at, g))))
    {
        f.travel = Some(travel(there.1, there.0, here, t));
    }
    if let Some(line) = history.credit_line {
        f.credit_limit = Some(line.limit.minor());
        let since = t - line.granted_at;
        f.since_grant = (since >= 0).then_some(since);
    }
    f
}

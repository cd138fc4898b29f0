//! Feature extraction: one pass over a customer's history fills the aggregates of every window
//! the rule set uses, plus the per-transaction features (local time, travel, credit line), the
//! amount statistics, streaks and the monthly trends.
//!
//! Windows are (t − w, t] in event time, t being the current transaction's time, and include
//! the current transaction. Events later than t (out-of-order arrivals) are outside every
//! window. Everything is integers in fixed units, on the stack (amount statistics sort in a
//! `SmallVec` that only spills to the heap for rings over 72 events).

use geo::{Distance, Haversine, Point};
use smallvec::SmallVec;

use crate::rules::compile::{
    MAX_ENTITY_FEATURES, MAX_HOUR_WINDOWS, MAX_STAT_WINDOWS, PriorNeeds, RuleSet,
};
use crate::rules::ir::Window;
use crate::rules::zone::ZoneTable;
use crate::rules::{MAX_DISTINCT_WINDOWS, MAX_LIST_WINDOWS};
use crate::state::entity::EntityValue;
use crate::state::months::MonthBuckets;
use crate::state::{CustomerHistory, Event, RingTotals};
use crate::txn::{EventTime, GeoPoint, MICROS_PER_SECOND, Txn};

/// Aggregates over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowAgg {
    /// Transactions, current included.
    pub count: u32,
    /// Transactions of exactly the current amount, current included; 0 in a window longer than
    /// any whose count a rule reads (see `Needs::same_amount_windows`).
    pub same_amount: u32,
    /// Transactions reported failed.
    pub failed: u32,
    /// Transactions reported settled.
    pub settled: u32,
    /// Transactions decided review or deny.
    pub flagged: u32,
    /// Sum of amounts, minor units, current included.
    pub sum: i64,
    /// Sum of failed amounts.
    pub failed_sum: i64,
    /// Sum of settled amounts.
    pub settled_sum: i64,
}

/// Statistics of the amounts in one window, current included. Quantiles are kept times four
/// so that linear interpolation between ranks stays exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AmountStats {
    /// Number of amounts.
    pub n: u32,
    /// Their sum.
    pub sum: i64,
    /// Sum of squares.
    pub sum_sq: i128,
    /// 4 × 25th percentile.
    pub q25_x4: i64,
    /// 4 × median.
    pub q50_x4: i64,
    /// 4 × 75th percentile.
    pub q75_x4: i64,
    /// Most frequent amount (smallest on ties).
    pub mode: i64,
    /// Largest amount.
    pub max: i64,
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

/// Counts and sums of the last 12 full calendar months (index 0 is month 1, the last full
/// month before the current transaction's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Months {
    /// Transactions per month.
    pub counts: [i64; 12],
    /// Sums per month, minor units.
    pub sums: [i64; 12],
    /// The calendar month they count back from (`year × 12 + month − 1`), the month of the
    /// evaluation's time: for a decision, the transaction's own, which the interceptor then
    /// records it in without working out the calendar again.
    pub current: i32,
}

/// Every feature value one decision may read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Per window of [`RuleSet::windows`].
    pub windows: [WindowAgg; MAX_DISTINCT_WINDOWS],
    /// Per (window, list) pair of [`RuleSet::list_windows`].
    pub list_counts: [u32; MAX_LIST_WINDOWS],
    /// Count and sum per entry of [`RuleSet::hour_windows`].
    pub hour_aggs: [(u32, i64); MAX_HOUR_WINDOWS],
    /// Per entry of [`RuleSet::stat_windows`].
    pub stats: [AmountStats; MAX_STAT_WINDOWS],
    /// Per entry of [`RuleSet::prior_windows`]: the earlier transactions only.
    pub prior: [AmountStats; MAX_STAT_WINDOWS],
    /// Per entry of [`RuleSet::entity_features`].
    pub entity: [EntityValue; MAX_ENTITY_FEATURES],
    /// Current amount, minor units; `None` when evaluating without a transaction (a scan).
    pub amount: Option<i64>,
    /// Local seconds since midnight (0 unless a rule reads local time).
    pub local_secs: u32,
    /// Travel from the previous geotagged transaction, when both have a location.
    pub travel: Option<Travel>,
    /// Microseconds since the credit grant, when known and not in the future.
    pub since_grant: Option<i64>,
    /// Credit limit, minor units, when known.
    pub credit_limit: Option<i64>,
    /// Microseconds since the previous transaction, when there is one.
    pub since_last: Option<i64>,
    /// Consecutive increases in amount ending at the current transaction.
    pub increasing_streak: u32,
    /// Consecutive decreases in amount ending at the current transaction.
    pub decreasing_streak: u32,
    /// Monthly totals, when the customer's months are kept.
    pub months: Option<Months>,
    /// The scorecard's score, when the rule set has one.
    pub score: Option<i64>,
}

/// Great-circle distance in whole metres (haversine on the mean earth radius).
pub fn distance_m(a: GeoPoint, b: GeoPoint) -> i64 {
    // A customer at the place of their last located transaction (home, the same terminal) is
    // common, and the haversine of a point to itself is exactly zero: answered without five
    // calls into the maths library.
    if a == b {
        return 0;
    }
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
        // Rounded to the nearest. In 64 bits whenever they hold it (any distance on earth
        // does): a 128-bit division is a library call, on every decision that has a location.
        match distance_m
            .checked_mul(3_600 * MICROS_PER_SECOND)
            .and_then(|num| num.checked_add(elapsed / 2))
        {
            Some(num) => num / elapsed,
            None => {
                let num = i128::from(distance_m) * i128::from(3_600 * MICROS_PER_SECOND);
                let den = i128::from(elapsed);
                i64::try_from((num + den / 2) / den).unwrap_or(i64::MAX)
            }
        }
    };
    Travel {
        distance_m,
        elapsed,
        speed_m_per_h,
    }
}

/// Local seconds since midnight of an event time in the rule set's zone.
#[inline]
pub fn local_seconds(set: &RuleSet, at: EventTime) -> u32 {
    set.zone.local_seconds(at)
}

/// The calendar month (`year × 12 + month − 1`) of an event time in a time zone.
pub fn month_of(tz: &jiff::tz::TimeZone, at: EventTime) -> i32 {
    match jiff::Timestamp::from_microsecond(at) {
        Ok(ts) => {
            let d = tz.to_datetime(ts);
            i32::from(d.year()) * 12 + i32::from(d.month()) - 1
        }
        Err(_) => i32::MIN,
    }
}

/// Whether a time of day `s` falls in [from, to), wrapping past midnight when from > to (in
/// any one unit: local seconds, or microseconds into the day).
#[inline]
pub fn in_hours<T: PartialOrd>(s: T, from: T, to: T) -> bool {
    if from < to {
        from <= s && s < to
    } else {
        s >= from || s < to
    }
}

/// Statistics of a set of amounts (sorted here).
pub fn amount_stats(amounts: &mut [i64]) -> AmountStats {
    let n = amounts.len();
    if n == 0 {
        return AmountStats::default();
    }
    amounts.sort_unstable();
    let quantile_x4 = |k: usize| -> i64 {
        // Linear interpolation at h = k(n−1)/4 between the closest ranks.
        let h = k * (n - 1);
        let (i, r) = (h / 4, (h % 4) as i64);
        let lo = amounts[i];
        let hi = amounts[(i + 1).min(n - 1)];
        4 * lo + r * (hi - lo)
    };
    let (mut mode, mut best, mut run) = (amounts[0], 0usize, 0usize);
    for (i, &a) in amounts.iter().enumerate() {
        run = if i > 0 && amounts[i - 1] == a {
            run + 1
        } else {
            1
        };
        if run > best {
            best = run;
            mode = a;
        }
    }
    AmountStats {
        n: n as u32,
        sum: amounts.iter().sum(),
        sum_sq: amounts.iter().map(|&a| i128::from(a) * i128::from(a)).sum(),
        q25_x4: quantile_x4(1),
        q50_x4: quantile_x4(2),
        q75_x4: quantile_x4(3),
        mode,
        max: amounts[n - 1],
    }
}

/// The statistics `amount_to_*` and `amount_zscore` read (count and sum always; median,
/// maximum and sum of squares as `needs` asks), in linear time: the median by up to three
/// counting passes around `median_hint` when it is close, else by selection rather than a sort
/// (see [`median_x4`]). The rest are left at zero.
pub fn prior_stats(amounts: &mut [i64], needs: PriorNeeds, median_hint: i64) -> AmountStats {
    let n = amounts.len();
    if n == 0 {
        return AmountStats::default();
    }
    let sum = amounts.iter().sum();
    let sum_sq = if needs.sum_sq {
        amounts.iter().map(|&a| i128::from(a) * i128::from(a)).sum()
    } else {
        0
    };
    let max = if needs.max {
        amounts.iter().copied().max().unwrap_or(0)
    } else {
        0
    };
    AmountStats {
        n: n as u32,
        sum,
        sum_sq,
        q50_x4: if needs.median {
            median_x4(amounts, median_hint)
        } else {
            0
        },
        max,
        ..AmountStats::default()
    }
}

/// 4 × the median of `amounts` (not empty), interpolated as [`amount_stats`] does, with
/// `guess` as a guess at it. A customer's median moves little from one transaction to the next
/// (one amount joins the window, a few leave), so with the previous median as the guess, one
/// pass counting the amounts below and equal to it (and, when a rank needs it, finding the
/// nearest amount on that side) usually places both middle ranks: each is below, at, or next
/// to the guess. When it does not, the guess steps to that nearest amount towards the median
/// and the pass runs again, up to three passes in all (`MEDIAN_PASSES`); a guess still further
/// off (or none) leaves the median to selection. Either way the result is the same: the guess
/// only decides the cost.
pub fn median_x4(amounts: &mut [i64], guess: i64) -> i64 {
    let n = amounts.len();
    // Amounts are minor units and nearly always under 2^31 (21 million in a two-decimal
    // currency): counted as 32-bit lanes, four compare at once (the machine's baseline vector
    // width), where 64-bit compares are one at a time. The OR of all of them tells whether
    // every amount is in 0..2^31 in one vectorised pass.
    if n <= NARROW_AMOUNTS
        && amounts.iter().fold(0u64, |bits, &a| bits | a as u64) <= i32::MAX as u64
    {
        let mut lanes = [0i32; NARROW_AMOUNTS];
        for (lane, &a) in lanes.iter_mut().zip(amounts.iter()) {
            *lane = a as i32;
        }
        return median_x4_of(&mut lanes[..n], guess);
    }
    median_x4_of(amounts, guess)
}

/// [`median_x4`] of amounts in lanes of either width.
fn median_x4_of<T: Lane>(amounts: &mut [T], guess: i64) -> i64 {
    let n = amounts.len();
    // Linear interpolation at h = 2(n−1)/4 between the closest ranks, as `amount_stats`.
    let h = 2 * (n - 1);
    let (i, r) = (h / 4, (h % 4) as i64);
    if u32::try_from(n).is_ok()
        && let Some(median_x4) = median_by_passes(amounts, T::pivot(guess), i, r)
    {
        return median_x4;
    }
    let (_, &mut lo, right) = amounts.select_nth_unstable(i);
    let (lo, hi) = if r == 0 {
        (lo.into(), lo.into())
    } else {
        (lo.into(), right.iter().copied().min().unwrap_or(lo).into())
    };
    4 * lo + r * (hi - lo)
}

/// The statistics of the amounts of `parts` (the events of a prior window, in time order) as
/// [`prior_stats`] gives them when no rule reads their maximum or squares; `None` when an
/// amount does not fit a 32-bit lane (or there are too many), for the caller to take that way.
/// The amounts go from the events straight into lanes, summed on the way: no 64-bit copy
/// and second pass to narrow it.
fn prior_stats_narrow(parts: [&[Event]; 2], median: bool, median_hint: i64) -> Option<AmountStats> {
    let n = parts[0].len() + parts[1].len();
    if n == 0 {
        return Some(AmountStats::default());
    }
    if n > NARROW_AMOUNTS {
        return None;
    }
    let mut lanes = [0i32; NARROW_AMOUNTS];
    let (mut sum, mut bits) = (0i64, 0u64);
    let (first, second) = lanes.split_at_mut(parts[0].len());
    for (lanes, events) in [(first, parts[0]), (second, parts[1])] {
        for (lane, ev) in lanes.iter_mut().zip(events) {
            let a = ev.amount_minor();
            sum += a;
            bits |= a as u64;
            *lane = a as i32;
        }
    }
    if bits > i32::MAX as u64 {
        return None;
    }
    Some(AmountStats {
        n: n as u32,
        sum,
        q50_x4: if median {
            median_x4_of(&mut lanes[..n], median_hint)
        } else {
            0
        },
        ..AmountStats::default()
    })
}

/// Amounts [`median_x4`] counts as 32-bit lanes at most (on its stack): what a window of the
/// default 64-event ring holds; a larger ring's longer windows take 64-bit lanes.
const NARROW_AMOUNTS: usize = 64;

/// 4 × the median of `amounts` interpolated at rank `i` and `r` quarters towards `i + 1`, by up
/// to [`MEDIAN_PASSES`] counting passes from `pivot`, or `None` when they do not place both
/// ranks (see [`median_x4`]).
///
/// A pass counts the amounts below and equal to the pivot; the nearest amount below it, or
/// above, is looked for only when a rank needs it (a rank next to the pivot's run, or the
/// next pivot): a pass of compares and adds alone is the cheapest there is, and with a
/// customer's median moving little, the two ranks often both fall in the pivot's run.
#[inline(always)]
fn median_by_passes<T: Lane>(amounts: &[T], mut pivot: T, i: usize, r: i64) -> Option<i64> {
    let top = if r == 0 { i } else { i + 1 };
    for _ in 0..MEDIAN_PASSES {
        let (below, equal) = T::count_around(amounts, pivot);
        let (below, equal) = (below as usize, equal as usize);
        // Read only when an amount is below (above) the pivot, and then that extreme.
        let below_max = if i < below {
            T::max_below(amounts, pivot)
        } else {
            pivot
        };
        let above_min = if top >= below + equal {
            T::min_above(amounts, pivot)
        } else {
            pivot
        };
        // The amount of rank k (0-based, ascending), when the pass places it.
        let at_rank = |k: usize| -> Option<i64> {
            if k < below {
                (k + 1 == below).then_some(below_max.into())
            } else if k < below + equal {
                Some(pivot.into())
            } else {
                (k == below + equal).then_some(above_min.into())
            }
        };
        let placed = match at_rank(i) {
            Some(lo) if r == 0 => Some((lo, lo)),
            Some(lo) => at_rank(i + 1).map(|hi| (lo, hi)),
            None => None,
        };
        if let Some((lo, hi)) = placed {
            return Some(4 * lo + r * (hi - lo));
        }
        // A rank left unplaced lies beyond the nearest amount on its side: step there.
        pivot = if i < below { below_max } else { above_min };
    }
    None
}

/// An amount as [`median_by_passes`] counts it: 64 bits, or 32 when every amount fits.
///
/// Each pass is kept out of line: on its own a loop vectorises for 32-bit lanes (four a
/// compare with the baseline SSE2), where inlined into the passes around it, it did not.
/// Branch-free, since which side an amount falls on is as unpredictable as the amounts.
trait Lane: Copy + Ord + Into<i64> {
    /// A guess at the median as a pivot: any pivot gives the same median (it only decides the
    /// passes), so a guess beyond the lanes' range is clamped into it.
    fn pivot(guess: i64) -> Self;
    /// The amounts below and equal to `pivot`, counted in 32 bits (the narrow lanes' width,
    /// so that the loop vectorises; a window holds far fewer than 2^32 amounts).
    #[inline(never)]
    fn count_around(amounts: &[Self], pivot: Self) -> (u32, u32) {
        let (mut below, mut equal) = (0u32, 0u32);
        for &a in amounts {
            below += u32::from(a < pivot);
            equal += u32::from(a == pivot);
        }
        (below, equal)
    }
    /// The largest amount below `pivot` (at least one is).
    fn max_below(amounts: &[Self], pivot: Self) -> Self;
    /// The smallest amount above `pivot` (at least one is).
    fn min_above(amounts: &[Self], pivot: Self) -> Self;
}

/// Amounts in 0..2^31 (what [`median_x4`] gives 32-bit lanes). Never negative, which lets an
/// extreme be a masked maximum: the amounts below the pivot, others as 0; `i32::MAX − a` (an
/// XOR) for those above, so that their minimum is `i32::MAX` less the maximum. SSE2 has no
/// 32-bit maximum or minimum, and each select it builds from three instructions.
impl Lane for i32 {
    fn pivot(guess: i64) -> i32 {
        guess.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }

    #[inline(never)]
    fn max_below(amounts: &[i32], pivot: i32) -> i32 {
        let mut max = 0;
        for &a in amounts {
            max = max.max(if a < pivot { a } else { 0 });
        }
        max
    }

    #[inline(never)]
    fn min_above(amounts: &[i32], pivot: i32) -> i32 {
        let mut flipped = 0;
        for &a in amounts {
            flipped = flipped.max(if a > pivot { a ^ i32::MAX } else { 0 });
        }
        flipped ^ i32::MAX
    }
}

impl Lane for i64 {
    fn pivot(guess: i64) -> i64 {
        guess
    }

    fn max_below(amounts: &[i64], pivot: i64) -> i64 {
        amounts.iter().fold(i64::MIN, |m, &a| {
            m.max(if a < pivot { a } else { i64::MIN })
        })
    }

    fn min_above(amounts: &[i64], pivot: i64) -> i64 {
        amounts.iter().fold(i64::MAX, |m, &a| {
            m.min(if a > pivot { a } else { i64::MAX })
        })
    }
}

/// Counting passes [`median_x4`] makes before it falls back to selection: each costs about a
/// third of a selection over the same amounts.
const MEDIAN_PASSES: usize = 3;

/// Monthly totals for months 1–12 before the month of `t`.
pub fn months(zone: &ZoneTable, buckets: &MonthBuckets, t: EventTime) -> Months {
    let current = zone.month_of(t);
    let mut m = Months {
        current,
        ..Months::default()
    };
    // One pass over the few months held, rather than a search for each of the twelve.
    for b in buckets.held() {
        let k = i64::from(current) - 1 - i64::from(b.month);
        if let Ok(k @ 0..12) = usize::try_from(k) {
            m.counts[k] = i64::from(b.count);
            m.sums[k] = b.sum;
        }
    }
    m
}

/// Adds one event to the aggregate of the shortest window that holds it (prefix sums in
/// [`extract`] carry it into the longer ones).
#[inline(always)]
fn visit(set: &RuleSet, f: &mut Features, ev: &Event, t: EventTime, fixed_offset: Option<i32>) {
    let age = t - ev.at;
    let Some(first) = set.windows.iter().position(|w| age < w.micros) else {
        return;
    };
    let ev_amount = ev.amount_minor();
    add_event(&mut f.windows[first], ev, current_or_none(f.amount));
    for (k, &(wi, list)) in set.list_windows.iter().enumerate() {
        if usize::from(wi) >= first && set.amount_lists[list].contains(ev_amount) {
            f.list_counts[k] += 1;
        }
    }
    if !set.hour_windows.is_empty() {
        let s = match fixed_offset {
            Some(offset) => {
                (ev.at.div_euclid(MICROS_PER_SECOND) + i64::from(offset)).rem_euclid(86_400) as u32
            }
            None => local_seconds(set, ev.at),
        };
        for (k, &(wi, from, to)) in set.hour_windows.iter().enumerate() {
            if usize::from(wi) >= first && in_hours(s, from, to) {
                f.hour_aggs[k].0 += 1;
                f.hour_aggs[k].1 += ev_amount;
            }
        }
    }
}

/// What [`scan_in_time_order`] found besides the window aggregates.
struct OrderedScan<'a> {
    /// The events at or before t, in arrival (and so time) order, older part first.
    at_or_before: (&'a [Event], &'a [Event]),
    /// The newest of them.
    latest: Option<EventTime>,
}

impl<'a> OrderedScan<'a> {
    /// The events at or before t, newest first.
    fn newest_first(&self) -> impl Iterator<Item = &'a Event> + use<'a> {
        let (older, newer) = self.at_or_before;
        newer.iter().rev().chain(older.iter().rev())
    }
}

const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The current amount as [`add_event`] compares with it: recorded amounts are never negative,
/// so −1 matches none when there is no transaction.
#[inline(always)]
fn current_or_none(amount: Option<i64>) -> i64 {
    amount.unwrap_or(-1)
}

/// Adds one event to a window's aggregate (`current`: see [`current_or_none`]).
#[inline(always)]
fn add_event(agg: &mut WindowAgg, ev: &Event, current: i64) {
    let a = ev.amount_minor();
    agg.count += 1;
    agg.sum += a;
    agg.same_amount += u32::from(a == current);
    // Most events are pending and allowed, and add nothing more.
    if !ev.pending_and_allowed() {
        add_status(agg, ev, a);
    }
}

/// Adds what was reported on an event, and its decision, to a window's aggregate.
#[inline(always)]
fn add_status(agg: &mut WindowAgg, ev: &Event, a: i64) {
    let counted = ev.counted();
    if counted.failed {
        agg.failed += 1;
        agg.failed_sum += a;
    }
    if counted.settled {
        agg.settled += 1;
        agg.settled_sum += a;
    }
    agg.flagged += u32::from(counted.flagged);
}

/// Adds the aggregate `from` into `into`.
#[inline(always)]
fn add_agg(into: &mut WindowAgg, from: &WindowAgg) {
    into.count += from.count;
    into.sum += from.sum;
    into.same_amount += from.same_amount;
    into.failed += from.failed;
    into.failed_sum += from.failed_sum;
    into.settled += from.settled;
    into.settled_sum += from.settled_sum;
    into.flagged += from.flagged;
}

/// Adds each event of a slice in time order (all at or before t) to the aggregate of the
/// shortest of `walked` (the rule set's windows, or the shortest of them) holding it, walking
/// back from the newest, and sets where each window's events start in the slice (`start` picks
/// the older or the newer slice's entry of `starts`, which come zeroed). The walk stops at the
/// first event older than every window walked.
#[inline(always)]
fn add_to_windows(
    walked: &[Window],
    windows: &mut [WindowAgg; MAX_DISTINCT_WINDOWS],
    events: &[Event],
    t: EventTime,
    current: i64,
    starts: &mut [(usize, usize); MAX_DISTINCT_WINDOWS],
    start: fn(&mut (usize, usize)) -> &mut usize,
) {
    let Some(first) = walked.first() else {
        return;
    };
    // Window (t − w, t] holds the events after t − w.
    let mut wi = 0;
    let mut from = t.saturating_sub(first.micros);
    // The count, sum and same-amount count of the window's events are kept in locals until the
    // window changes (the count as where its events start): adding each event into
    // `windows[wi]` made it wait on the stores of the one before. What was reported on an
    // event, and its decision, goes straight in: most events add nothing there.
    let (mut sum, mut same_amount, mut end) = (0, 0, events.len());
    for (i, ev) in events.iter().enumerate().rev() {
        while ev.at <= from {
            let agg = &mut windows[wi];
            agg.count += (end - (i + 1)) as u32;
            agg.sum += sum;
            agg.same_amount += same_amount;
            (sum, same_amount, end) = (0, 0, i + 1);
            *start(&mut starts[wi]) = i + 1;
            wi += 1;
            match walked.get(wi) {
                Some(w) => from = t.saturating_sub(w.micros),
                None => return,
            }
        }
        let a = ev.amount_minor();
        sum += a;
        same_amount += u32::from(a == current);
        if !ev.pending_and_allowed() {
            add_status(&mut windows[wi], ev, a);
        }
    }
    let agg = &mut windows[wi];
    agg.count += end as u32;
    agg.sum += sum;
    agg.same_amount += same_amount;
}

/// The window features of a history that arrived in time order, without looking at any event
/// twice for its window: events are sorted by time, so the events a window holds are the
/// newest ones of each slice. Each event is added to the aggregate of the shortest window
/// holding it (prefix sums in [`extract_into`] carry it into the longer ones); list counts and
/// hour ranges visit only the events of their own window. `starts` (zeroed by the caller) gets
/// where each window's events start in the returned slices, for the amount statistics.
fn scan_in_time_order<'a>(
    set: &RuleSet,
    f: &mut Features,
    (older, newer): (&'a [Event], &'a [Event]),
    totals: Option<RingTotals>,
    t: EventTime,
    fixed_offset: Option<i32>,
    starts: &mut [(usize, usize); MAX_DISTINCT_WINDOWS],
) -> OrderedScan<'a> {
    // Index of the first event later than `x`, walking back from the newest: a window's
    // boundary costs a step per event it adds, which summing them costs anyway (cheaper, for
    // a few dozen events, than a binary search per window).
    let after = |events: &[Event], x: EventTime| {
        events.len() - events.iter().rev().take_while(|ev| ev.at > x).count()
    };
    let held = older.len() + newer.len();
    // Events later than t (out-of-order arrivals ahead of it) are in no window.
    let (older, newer) = (&older[..after(older, t)], &newer[..after(newer, t)]);
    let current = current_or_none(f.amount);
    // The shortest window holding every event, when the totals of them all are known and
    // none is later than t: its events, and those of every longer window, are the totals less
    // the events of the shorter windows, so the walk stops at the shorter windows' end. Not
    // for a window whose count of the current amount is read, which the totals cannot give.
    let whole = match (totals, older.first().or(newer.first())) {
        (Some(totals), Some(oldest))
            if older.len() + newer.len() == held && RingTotals::exact_for(held) =>
        {
            let oldest = oldest.at;
            (usize::from(set.needs.same_amount_windows)..set.windows.len())
                .find(|&k| oldest > t.saturating_sub(set.windows[k].micros))
                .map(|k| (k, totals))
        }
        _ => None,
    };
    let walked = &set.windows[..whole.map_or(set.windows.len(), |(k, _)| k)];
    add_to_windows(walked, &mut f.windows, older, t, current, starts, |s| {
        &mut s.0
    });
    add_to_windows(walked, &mut f.windows, newer, t, current, starts, |s| {
        &mut s.1
    });
    if let Some((k, totals)) = whole {
        // What the shorter windows hold already (each event in the shortest one holding it).
        let mut shorter = WindowAgg::default();
        for agg in &f.windows[..k] {
            add_agg(&mut shorter, agg);
        }
        f.windows[k] = WindowAgg {
            count: held as u32 - shorter.count,
            same_amount: 0,
            failed: u32::from(totals.failed) - shorter.failed,
            settled: u32::from(totals.settled) - shorter.settled,
            flagged: u32::from(totals.flagged) - shorter.flagged,
            sum: totals.sum - shorter.sum,
            failed_sum: totals.failed_sum - shorter.failed_sum,
            settled_sum: totals.settled_sum - shorter.settled_sum,
        };
    }
    // A window's events, as two slices: a loop over each is cheaper than one over a chain.
    let in_window = |wi: u8| {
        let (older_start, newer_start) = starts[usize::from(wi)];
        [&older[older_start..], &newer[newer_start..]]
    };
    for (k, &(wi, list)) in set.list_windows.iter().enumerate() {
        let list = &set.amount_lists[list];
        for part in in_window(wi) {
            f.list_counts[k] += part
                .iter()
                .filter(|ev| list.contains(ev.amount_minor()))
                .count() as u32;
        }
    }
    for (k, &(wi, from, to)) in set.hour_windows.iter().enumerate() {
        let agg = &mut f.hour_aggs[k];
        let Some(offset) = fixed_offset else {
            for ev in in_window(wi).into_iter().flatten() {
                if in_hours(local_seconds(set, ev.at), from, to) {
                    agg.0 += 1;
                    agg.1 += ev.amount_minor();
                }
            }
            continue;
        };
        // One offset throughout, and events in time order: walk local midnights forward
        // instead of dividing every timestamp. Whole seconds compare alike in microseconds,
        // since `from` and `to` are whole seconds.
        let offset = i64::from(offset) * MICROS_PER_SECOND;
        let (from, to) = (
            i64::from(from) * MICROS_PER_SECOND,
            i64::from(to) * MICROS_PER_SECOND,
        );
        let (mut midnight, mut next_midnight) = (0, i64::MIN);
        for part in in_window(wi) {
            for ev in part {
                // Inside the zone table's span (a fixed offset is only found there): no
                // overflow.
                let local = ev.at + offset;
                if local >= next_midnight {
                    midnight = local - local.rem_euclid(MICROS_PER_DAY);
                    next_midnight = midnight + MICROS_PER_DAY;
                }
                if in_hours(local - midnight, from, to) {
                    agg.0 += 1;
                    agg.1 += ev.amount_minor();
                }
            }
        }
    }
    OrderedScan {
        at_or_before: (older, newer),
        latest: newer.last().or(older.last()).map(|ev| ev.at),
    }
}

/// Computes every feature the rule set reads, touching each event at most once.
///
/// Each in-window event is added to the aggregate of the *shortest* window holding it; prefix
/// sums then carry it into every longer window, so the work per event does not grow with the
/// number of windows. When the history arrived in time order, the scan runs from the newest
/// event and stops at the first one older than the longest window (continuing, if a rule reads
/// travel, only until the previous located event is found) — a customer who transacts a few
/// times a day costs a handful of steps, not the whole ring. With the ring's totals it stops
/// sooner, at the end of the windows shorter than the first one holding the whole ring: that
/// window's aggregates are the totals less theirs. A 30-day window over a 64-event ring of a
/// customer active daily is read without visiting an event (the amounts, hours and lists a
/// rule reads of it still visit its events).
///
/// With `txn` the features describe that transaction in its history; with `None` (a scan of
/// customers at time `t`) the windows hold history only and per-transaction features are
/// missing.
pub fn extract(
    set: &RuleSet,
    history: &CustomerHistory<'_>,
    txn: Option<&Txn<'_>>,
    t: EventTime,
) -> Features {
    let mut f = Features::default();
    extract_into(set, history, txn, t, &mut f);
    f
}

/// [`extract`] into `f`, in place. Only the table entries this rule set uses are reset: the
/// rest (up to the validation caps) are never read, and clearing them would cost more than
/// the features themselves.
pub fn extract_into(
    set: &RuleSet,
    history: &CustomerHistory<'_>,
    txn: Option<&Txn<'_>>,
    t: EventTime,
    f: &mut Features,
) {
    let amount = txn.map(|x| x.amount.minor());
    let nw = set.windows.len();
    f.windows[..nw].fill(WindowAgg::default());
    f.list_counts[..set.list_windows.len()].fill(0);
    f.hour_aggs[..set.hour_windows.len()].fill((0, 0));
    f.stats[..set.stat_windows.len()].fill(AmountStats::default());
    f.prior[..set.prior_windows.len()].fill(AmountStats::default());
    let ne = set.entity_features.len();
    f.entity[..ne].fill(EntityValue::default());
    for (k, e) in set.entity_features.iter().enumerate() {
        match e.by {
            // Read from the entity store by the interceptor, before evaluation.
            Some(_) => {
                if let Some(v) = history.entities.get(k) {
                    f.entity[k] = *v;
                }
            }
            // The customer's own confirmed frauds, from the ring: (t − m − w, t − m].
            None => {
                let (from, to) = (t - e.mature - e.window.micros, t - e.mature);
                let (older, newer) = history.events;
                let v = &mut f.entity[k];
                v.present = true;
                for ev in older
                    .iter()
                    .chain(newer)
                    .filter(|ev| ev.at > from && ev.at <= to)
                {
                    v.count += 1;
                    v.sum += ev.amount_minor();
                    v.fraud += u32::from(ev.is_fraud());
                }
            }
        }
    }
    f.amount = amount;
    f.local_secs = 0;
    f.travel = None;
    f.since_grant = None;
    f.credit_limit = None;
    f.since_last = None;
    f.increasing_streak = 0;
    f.decreasing_streak = 0;
    f.score = None;
    // The month buckets live in their own allocation: read them first, so that their cache
    // misses overlap the scan of the ring instead of following it.
    f.months = match history.months {
        Some(buckets) if set.needs.months => Some(months(&set.zone, buckets, t)),
        _ => None,
    };
    let here = txn.and_then(|x| x.geo).map(Event::quantize);
    let want_geo = set.needs.geo && here.is_some();
    let want_streaks = set.needs.streaks && amount.is_some();
    let want_stats = !set.stat_windows.is_empty() || !set.prior_windows.is_empty();
    let horizon = set.horizon;
    let mut previous_geo: Option<&Event> = None;
    let mut latest: Option<EventTime> = None;
    // When no offset change falls inside the longest window, every event's local time is its
    // UTC time plus one offset: one zone lookup per decision instead of one per event.
    let fixed_offset = if set.hour_windows.is_empty() {
        None
    } else {
        set.zone.fixed_offset(t, set.horizon)
    };
    let (mut inc_alive, mut dec_alive) = (want_streaks, want_streaks);
    let mut next_amount = amount.unwrap_or(0);
    // (age, amount) of every event in the longest window, for amount statistics.
    let mut in_window: SmallVec<[(i64, i64); 72]> = SmallVec::new();
    // (time, amount) of events at or before t in arrival order, for streaks.
    let mut timeline: SmallVec<[(i64, i64); 72]> = SmallVec::new();

    let (older, newer) = history.events;
    // Per window, where its events start in (older, newer), for the statistics; filled by the
    // scan in time order only.
    let mut starts = [(0, 0); MAX_DISTINCT_WINDOWS];
    let mut at_or_before: (&[Event], &[Event]) = (&[], &[]);
    if history.in_time_order {
        let scan = scan_in_time_order(
            set,
            f,
            (older, newer),
            history.totals,
            t,
            fixed_offset,
            &mut starts,
        );
        at_or_before = scan.at_or_before;
        latest = scan.latest;
        if want_geo {
            previous_geo = scan.newest_first().find(|ev| ev.has_geo());
        }
        if want_streaks {
            for ev in scan.newest_first() {
                let a = ev.amount_minor();
                inc_alive &= a < next_amount;
                dec_alive &= a > next_amount;
                if !inc_alive && !dec_alive {
                    break;
                }
                f.increasing_streak += u32::from(inc_alive);
                f.decreasing_streak += u32::from(dec_alive);
                next_amount = a;
            }
        }
    } else {
        for ev in older.iter().chain(newer) {
            if ev.at > t {
                continue;
            }
            if latest.is_none_or(|l| ev.at > l) {
                latest = Some(ev.at);
            }
            if want_geo && ev.has_geo() && previous_geo.is_none_or(|p| ev.at >= p.at) {
                previous_geo = Some(ev);
            }
            if want_streaks {
                timeline.push((ev.at, ev.amount_minor()));
            }
            if t - ev.at < horizon {
                visit(set, f, ev, t, fixed_offset);
                if want_stats {
                    in_window.push((t - ev.at, ev.amount_minor()));
                }
            }
        }
    }
    // Carry each window's events into every longer window.
    for i in 1..nw {
        let shorter = f.windows[i - 1];
        add_agg(&mut f.windows[i], &shorter);
    }

    // The current transaction is in every window.
    if let Some(amount) = amount {
        for agg in &mut f.windows[..nw] {
            agg.count += 1;
            agg.sum += amount;
            agg.same_amount += 1;
        }
        // Counted only up to the longest window it is read of (see `same_amount_windows`).
        let read = usize::from(set.needs.same_amount_windows).min(nw);
        for agg in &mut f.windows[read..nw] {
            agg.same_amount = 0;
        }
        for (k, &(_, list)) in set.list_windows.iter().enumerate() {
            if set.amount_lists[list].contains(amount) {
                f.list_counts[k] += 1;
            }
        }
        if !set.hour_windows.is_empty() {
            let s = local_seconds(set, t);
            for (k, &(_, from, to)) in set.hour_windows.iter().enumerate() {
                if in_hours(s, from, to) {
                    f.hour_aggs[k].0 += 1;
                    f.hour_aggs[k].1 += amount;
                }
            }
        }
    }
    if want_stats {
        let mut amounts: SmallVec<[i64; 72]> = SmallVec::new();
        // The amounts of the earlier events in window `wi`.
        let earlier = |wi: u8, amounts: &mut SmallVec<[i64; 72]>| {
            let wi = usize::from(wi);
            amounts.clear();
            if history.in_time_order {
                let ((older, newer), (older_start, newer_start)) = (at_or_before, starts[wi]);
                let (older, newer) = (&older[older_start..], &newer[newer_start..]);
                // Sized once and written in place: cheaper than pushing one by one.
                amounts.resize(older.len() + newer.len(), 0);
                let (into_older, into_newer) = amounts.split_at_mut(older.len());
                for (slot, ev) in into_older.iter_mut().zip(older) {
                    *slot = ev.amount_minor();
                }
                for (slot, ev) in into_newer.iter_mut().zip(newer) {
                    *slot = ev.amount_minor();
                }
            } else {
                let w = set.windows[wi].micros;
                amounts.extend(
                    in_window
                        .iter()
                        .filter(|(age, _)| *age < w)
                        .map(|&(_, a)| a),
                );
            }
        };
        for (k, &wi) in set.stat_windows.iter().enumerate() {
            earlier(wi, &mut amounts);
            amounts.extend(amount);
            f.stats[k] = amount_stats(&mut amounts);
        }
        let needs = set.needs.prior;
        for (k, &wi) in set.prior_windows.iter().enumerate() {
            if history.in_time_order && !needs.max && !needs.sum_sq {
                let ((older, newer), (older_start, newer_start)) =
                    (at_or_before, starts[usize::from(wi)]);
                if let Some(stats) = prior_stats_narrow(
                    [&older[older_start..], &newer[newer_start..]],
                    needs.median,
                    history.median_hint,
                ) {
                    f.prior[k] = stats;
                    continue;
                }
            }
            earlier(wi, &mut amounts);
            f.prior[k] = prior_stats(&mut amounts, needs, history.median_hint);
        }
    }
    if want_streaks && !history.in_time_order {
        // A stable sort by time keeps arrival order among equal times.
        timeline.sort_by_key(|&(at, _)| at);
        let mut next = next_amount;
        let (mut inc, mut dec) = (true, true);
        for &(_, a) in timeline.iter().rev() {
            inc &= a < next;
            dec &= a > next;
            f.increasing_streak += u32::from(inc);
            f.decreasing_streak += u32::from(dec);
            if !inc && !dec {
                break;
            }
            next = a;
        }
    }

    if set.needs.local_time && amount.is_some() {
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
    f.since_last = latest.map(|l| t - l);
}

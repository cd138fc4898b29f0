//! Evaluation: a compiled [`RuleSet`], a customer's history and the current transaction in, a
//! [`Decision`] out.
//!
//! A pure function: no I/O, no locks, no async, no allocation (hits live in `SmallVec`s sized
//! for the common case). The caller holds the customer's shard lock around it. Reasons are not
//! formatted here; [`explain`] renders them later, outside the lock, from the features kept in
//! the decision.

pub mod explain;
pub mod features;
pub mod reference;

use smallvec::SmallVec;

use crate::rules::compile::{Node, RuleSet, Slot};
use crate::rules::ir::{
    AmountStat, CmpOp, EntityMeasure, HistoryRatio, LeafTest, Measure, TrendKind, WindowMeasure,
};
use crate::rules::{Action, Mode};
use crate::state::CustomerHistory;
use crate::txn::{EventTime, Txn};

pub use features::Features;

/// Matched rules, by index into [`RuleSet::rules`].
pub type Hits = SmallVec<[u16; 8]>;

/// The outcome of evaluating a rule set for one transaction.
#[derive(Clone, Debug)]
pub struct Decision {
    /// allow, review or deny: the strongest action among matching enforced rules.
    pub action: Action,
    /// Enforced rules that matched (tag rules excepted), in file order.
    pub hits: Hits,
    /// Shadow rules that matched, in file order.
    pub shadow: Hits,
    /// Enforced tag rules that matched, in file order.
    pub tags: Hits,
    /// The feature values the rules saw, for explanations (the score among them).
    pub features: Features,
}

impl Decision {
    /// An allow with no hits and no features, to be filled by [`evaluate_into`].
    pub fn empty() -> Decision {
        Decision {
            action: Action::Allow,
            hits: Hits::new(),
            shadow: Hits::new(),
            tags: Hits::new(),
            features: Features::default(),
        }
    }
}

/// The score of a scorecard for these features: the base plus the points of the bin each
/// characteristic falls in (or its missing points).
pub fn score(set: &RuleSet, f: &Features) -> Option<i64> {
    let card = set.scorecard.as_ref()?;
    // What `score_values` gives for the slots' values, with plain integers binned in place.
    Some(
        card.base_score
            + card
                .characteristics
                .iter()
                .map(|c| match plain_value(c.slot, f) {
                    Plain::Int(v) => int_bin_points(c, v),
                    Plain::Missing => c.missing_points,
                    Plain::Derived => bin_points(c, derived_value(c.slot, f)),
                })
                .sum::<i64>(),
    )
}

/// The score from each characteristic's value (`None`: missing), in the card's order: what
/// [`score`] computes, for callers that kept the values rather than the features (the
/// scorecard fit).
pub fn score_values(
    card: &crate::rules::compile::CompiledScorecard,
    values: impl Iterator<Item = Option<Value>>,
) -> i64 {
    card.base_score
        + card
            .characteristics
            .iter()
            .zip(values)
            .map(|(c, value)| bin_points(c, value))
            .sum::<i64>()
}

/// The points a characteristic gives a value (`None`: missing).
pub fn bin_points(c: &crate::rules::compile::CompiledCharacteristic, value: Option<Value>) -> i64 {
    match value {
        None => c.missing_points,
        Some(Value::Int(v)) => int_bin_points(c, v),
        Some(v) => c
            .bins
            .iter()
            .find(|b| {
                b.from.is_none_or(|lo| compare(v, CmpOp::AtLeast, lo))
                    && b.below.is_none_or(|hi| compare(v, CmpOp::LessThan, hi))
            })
            .map_or(0, |b| b.points),
    }
}

/// [`bin_points`] of an integer value: compared as it is, with no [`Value`] built.
fn int_bin_points(c: &crate::rules::compile::CompiledCharacteristic, v: i64) -> i64 {
    c.bins
        .iter()
        .find(|b| b.from.is_none_or(|lo| v >= lo) && b.below.is_none_or(|hi| v < hi))
        .map_or(0, |b| b.points)
}

/// Adverse-action reasons: the characteristics that cost the decision the most points against
/// their best bin, most first, at most `n`, each as (characteristic index, points given, best
/// points). Characteristics at their best are not reasons.
pub fn score_reasons(set: &RuleSet, f: &Features, n: usize) -> Vec<(usize, i64, i64)> {
    let Some(card) = set.scorecard.as_ref() else {
        return Vec::new();
    };
    let mut costs: Vec<(usize, i64, i64)> = card
        .characteristics
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let points = bin_points(c, slot_value(c.slot, f));
            let best = c
                .bins
                .iter()
                .map(|b| b.points)
                .chain([c.missing_points])
                .max()
                .unwrap_or(points);
            (i, points, best)
        })
        .filter(|&(_, points, best)| best > points)
        .collect();
    costs.sort_by_key(|&(i, points, best)| (std::cmp::Reverse(best - points), i));
    costs.truncate(n);
    costs
}

/// Evaluates every rule of `set` against the history and the current transaction.
pub fn evaluate(set: &RuleSet, history: &CustomerHistory<'_>, txn: &Txn<'_>) -> Decision {
    let mut decision = Decision::empty();
    evaluate_into(set, history, Some(txn), txn.at, &mut decision);
    decision
}

/// Evaluates every rule at time `t` without a transaction (a scan of customers): windows hold
/// history only, and per-transaction features are missing.
pub fn evaluate_at(set: &RuleSet, history: &CustomerHistory<'_>, t: EventTime) -> Decision {
    let mut decision = Decision::empty();
    evaluate_into(set, history, None, t, &mut decision);
    decision
}

/// Evaluates every rule into `out`, overwriting what it held: the transaction `txn` at `t`
/// (its time), or none at `t` for a scan.
///
/// The decision is filled in place because its features are a few KiB: returning it by value
/// copied them several times on the way from the engine to the caller, a measurable share of a
/// decision. The hot paths keep one `Decision` on their stack (or across a replay) and pass it
/// down.
pub fn evaluate_into(
    set: &RuleSet,
    history: &CustomerHistory<'_>,
    txn: Option<&Txn<'_>>,
    t: EventTime,
    out: &mut Decision,
) {
    features::extract_into(set, history, txn, t, &mut out.features);
    out.features.score = score(set, &out.features);
    out.action = Action::Allow;
    out.hits.clear();
    out.shadow.clear();
    out.tags.clear();
    for (i, rule) in set.rules.iter().enumerate() {
        if !node_holds(set, rule.root, &out.features, txn) {
            continue;
        }
        // Rule counts are capped far below u16::MAX by validation.
        let index = i as u16;
        match (rule.mode, rule.action) {
            (Mode::Shadow, _) => out.shadow.push(index),
            (Mode::Enforce, Action::Tag) => out.tags.push(index),
            (Mode::Enforce, action) => {
                out.hits.push(index);
                out.action = out.action.max(action);
            }
        }
    }
}

/// Whether node `node` of the arena holds.
pub fn holds(set: &RuleSet, node: u32, f: &Features, txn: Option<&Txn<'_>>) -> bool {
    node_holds(set, node, f, txn)
}

/// [`holds`], with the node's leaves (itself, or its children) tested in place and only
/// deeper nesting through a call. A rule is nearly always a leaf or a list of leaves, so the
/// rules' loop makes no call at all: a call of `holds` cost some 45 instructions of its own
/// (saving registers, the dispatch), more than most leaf tests.
#[inline(always)]
fn node_holds(set: &RuleSet, node: u32, f: &Features, txn: Option<&Txn<'_>>) -> bool {
    let child_holds = |c: u32| match set.nodes[c as usize] {
        Node::Leaf(leaf) => leaf_holds(set, leaf.slot, leaf.test, f, txn),
        _ => holds(set, c, f, txn),
    };
    match set.nodes[node as usize] {
        Node::All { start, len } => set.children[start as usize..(start + len) as usize]
            .iter()
            .all(|&c| child_holds(c)),
        Node::Any { start, len } => set.children[start as usize..(start + len) as usize]
            .iter()
            .any(|&c| child_holds(c)),
        Node::Not(child) => !child_holds(child),
        Node::Leaf(leaf) => leaf_holds(set, leaf.slot, leaf.test, f, txn),
    }
}

/// A feature's value, in its fixed unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// An integer in the feature's unit.
    Int(i64),
    /// The fraction `num / den` (den > 0) in the feature's unit.
    Ratio {
        /// Numerator.
        num: i128,
        /// Denominator.
        den: i128,
    },
    /// The square root of `num / den` (num ≥ 0, den > 0) in the feature's unit.
    Sqrt {
        /// Numerator under the root.
        num: i128,
        /// Denominator under the root.
        den: i128,
    },
    /// `num / sqrt(root)` (root > 0), in the feature's unit (a z-score in parts per million:
    /// `num` carries the factor).
    OverRoot {
        /// Numerator, signed.
        num: i128,
        /// Under the root, > 0.
        root: i128,
    },
}

impl Value {
    /// The value as a float, for display only.
    pub fn approx(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Ratio { num, den } => num as f64 / den as f64,
            Value::Sqrt { num, den } => (num as f64 / den as f64).sqrt(),
            Value::OverRoot { num, root } => num as f64 / (root as f64).sqrt(),
        }
    }
}

const PPM: i128 = 1_000_000;

fn ratio(num: i128, den: i128) -> Option<Value> {
    (den != 0).then(|| {
        if den < 0 {
            Value::Ratio {
                num: -num,
                den: -den,
            }
        } else {
            Value::Ratio { num, den }
        }
    })
}

/// The value of a numeric slot, or `None` when the feature is missing for this transaction
/// (no previous location, no credit line, no months...). A comparison with a missing value
/// is false.
#[inline]
pub fn slot_value(slot: Slot, f: &Features) -> Option<Value> {
    match plain_value(slot, f) {
        Plain::Int(v) => Some(Value::Int(v)),
        Plain::Missing => None,
        Plain::Derived => derived_value(slot, f),
    }
}

/// A slot's value as [`plain_value`] reads it.
enum Plain {
    /// An integer feature, as it is.
    Int(i64),
    /// Missing for this transaction.
    Missing,
    /// Computed from several features (a ratio, a root): see [`derived_value`].
    Derived,
}

/// The value of a slot that is one integer of the features, read in place; the slots computed
/// from several ([`Plain::Derived`]) are left to [`derived_value`]. The rule tests and the
/// scorecard read most slots this way: no [`Value`] (with its 128-bit fields) is built and
/// passed, and the ratios' code stays out of their loop.
#[inline(always)]
fn plain_value(slot: Slot, f: &Features) -> Plain {
    let int = Plain::Int;
    // A feature of the current transaction: missing in a scan without one.
    let of_txn = |v: i64| {
        if f.amount.is_some() {
            Plain::Int(v)
        } else {
            Plain::Missing
        }
    };
    let or_missing = |v: Option<i64>| v.map_or(Plain::Missing, Plain::Int);
    match slot {
        Slot::Window(m, w) => {
            let a = &f.windows[w as usize];
            match m {
                WindowMeasure::Count => int(i64::from(a.count)),
                WindowMeasure::Sum => int(a.sum),
                WindowMeasure::SameAmountCount => of_txn(i64::from(a.same_amount)),
                WindowMeasure::FailedCount => int(i64::from(a.failed)),
                WindowMeasure::FailedSum => int(a.failed_sum),
                WindowMeasure::SettledCount => int(i64::from(a.settled)),
                WindowMeasure::SettledSum => int(a.settled_sum),
                WindowMeasure::FlaggedCount => int(i64::from(a.flagged)),
                WindowMeasure::DrawnToLimit => Plain::Derived,
            }
        }
        Slot::ListCount(k) => int(i64::from(f.list_counts[k as usize])),
        Slot::InHours(Measure::Count, k) => int(i64::from(f.hour_aggs[k as usize].0)),
        Slot::InHours(Measure::Sum, k) => int(f.hour_aggs[k as usize].1),
        Slot::Entity(measure, k, _) => {
            let e = &f.entity[k as usize];
            if !e.present {
                return Plain::Missing;
            }
            match measure {
                EntityMeasure::Count => int(i64::from(e.count)),
                EntityMeasure::Sum => int(e.sum),
                EntityMeasure::DistinctCustomers => int(i64::from(e.distinct)),
                EntityMeasure::FraudCount => int(i64::from(e.fraud)),
                EntityMeasure::FraudRate => Plain::Derived,
            }
        }
        Slot::Amount => or_missing(f.amount),
        Slot::LocalTime => of_txn(i64::from(f.local_secs)),
        Slot::LocalHour => of_txn(i64::from(f.local_secs / 3600)),
        Slot::DistanceKm => or_missing(f.travel.map(|t| t.distance_m)),
        Slot::SpeedKmh => or_missing(f.travel.map(|t| t.speed_m_per_h)),
        Slot::SinceCreditGrant => or_missing(f.since_grant),
        Slot::Channel | Slot::MerchantId => Plain::Missing,
        Slot::IncreasingStreak => of_txn(i64::from(f.increasing_streak)),
        Slot::DecreasingStreak => of_txn(i64::from(f.decreasing_streak)),
        Slot::SinceLastTransaction => or_missing(f.since_last),
        Slot::Score => or_missing(f.score),
        Slot::Stat(..)
        | Slot::ToHistory(..)
        | Slot::AmountToLimit
        | Slot::Trend(..)
        | Slot::MonthlyCountCv => Plain::Derived,
    }
}

/// The value of a slot [`plain_value`] calls derived, or `None` when it is missing. Out of
/// line: its 128-bit arithmetic would crowd the rule tests' loop.
#[inline(never)]
fn derived_value(slot: Slot, f: &Features) -> Option<Value> {
    let int = |v: i64| Some(Value::Int(v));
    match slot {
        Slot::Window(WindowMeasure::DrawnToLimit, w) => ratio(
            i128::from(f.windows[w as usize].sum) * PPM,
            i128::from(f.credit_limit?),
        ),
        Slot::Stat(stat, k) => {
            let s = &f.stats[k as usize];
            if s.n == 0 {
                return None;
            }
            let n = i128::from(s.n);
            let sum = i128::from(s.sum);
            let var_n2 = n * s.sum_sq - sum * sum;
            match stat {
                AmountStat::Mean => ratio(sum, n),
                AmountStat::Mode => int(s.mode),
                AmountStat::P25 => ratio(i128::from(s.q25_x4), 4),
                AmountStat::Median => ratio(i128::from(s.q50_x4), 4),
                AmountStat::P75 => ratio(i128::from(s.q75_x4), 4),
                AmountStat::MeanMinusMedian => ratio(4 * sum - n * i128::from(s.q50_x4), 4 * n),
                AmountStat::Stddev => Some(Value::Sqrt {
                    num: var_n2.max(0),
                    den: n * n,
                }),
                AmountStat::Cv => (sum > 0).then(|| Value::Sqrt {
                    num: var_n2.max(0).saturating_mul(PPM * PPM),
                    den: sum * sum,
                }),
                AmountStat::Iqr => ratio(i128::from(s.q75_x4 - s.q25_x4), 4),
            }
        }
        Slot::ToHistory(kind, k, min) => {
            let s = &f.prior[k as usize];
            if s.n == 0 || s.n < min {
                return None;
            }
            let a = i128::from(f.amount?);
            let n = i128::from(s.n);
            let sum = i128::from(s.sum);
            match kind {
                HistoryRatio::Mean => ratio(a * n * PPM, sum),
                HistoryRatio::Median => ratio(a * 4 * PPM, i128::from(s.q50_x4)),
                HistoryRatio::Max => ratio(a * PPM, i128::from(s.max)),
                HistoryRatio::Zscore => {
                    // (a − S/n) / (sqrt(nQ − S²)/n) = (n·a − S) / sqrt(nQ − S²)
                    let num = n * a - sum;
                    let var_n2 = n * s.sum_sq - sum * sum;
                    if var_n2 <= 0 {
                        // Every earlier amount the same: any other amount is infinitely far.
                        int(match num.signum() {
                            1 => i64::MAX,
                            -1 => i64::MIN,
                            _ => 0,
                        })
                    } else {
                        Some(Value::OverRoot {
                            num: num * PPM,
                            root: var_n2,
                        })
                    }
                }
            }
        }
        Slot::Entity(EntityMeasure::FraudRate, k, min) => {
            let e = &f.entity[k as usize];
            if !e.present || e.count == 0 || e.count < min {
                return None;
            }
            ratio(i128::from(e.fraud) * PPM, i128::from(e.count))
        }
        Slot::AmountToLimit => ratio(i128::from(f.amount?) * PPM, i128::from(f.credit_limit?)),
        Slot::Trend(kind, measure) => {
            let m = f.months?;
            let v = |k: usize| -> i128 {
                i128::from(match measure {
                    Measure::Count => m.counts[k],
                    Measure::Sum => m.sums[k],
                })
            };
            match kind {
                TrendKind::LastVs3mMean => ratio(3 * v(0) * PPM, v(0) + v(1) + v(2)),
                TrendKind::MonthOverMonth => ratio(v(0) * PPM, v(1)),
                TrendKind::Last3mVsPrev3m => ratio((v(0) + v(1) + v(2)) * PPM, v(3) + v(4) + v(5)),
            }
        }
        Slot::MonthlyCountCv => {
            let m = f.months?;
            let n: i128 = 12;
            let sum: i128 = m.counts.iter().map(|&c| i128::from(c)).sum();
            let sum_sq: i128 = m
                .counts
                .iter()
                .map(|&c| i128::from(c) * i128::from(c))
                .sum();
            (sum > 0).then(|| Value::Sqrt {
                num: (n * sum_sq - sum * sum).max(0) * PPM * PPM,
                den: sum * sum,
            })
        }
        // Read by `plain_value`.
        _ => None,
    }
}

/// Applies a comparison to a value exactly (ratios and roots by cross-multiplication, in
/// 128-bit integers; a float only if even those would overflow).
#[inline]
pub fn compare(value: Value, op: CmpOp, threshold: i64) -> bool {
    let k = i128::from(threshold);
    match value {
        Value::Int(v) => op.holds(v, threshold),
        Value::Ratio { num, den } => match k.checked_mul(den) {
            Some(scaled) => op.holds(num, scaled),
            None => compare_approx(value, op, threshold),
        },
        Value::Sqrt { num, den } => {
            if k < 0 {
                // A root is never negative: it is above any negative threshold.
                return op.holds(1, 0);
            }
            match k.checked_mul(k).and_then(|k2| k2.checked_mul(den)) {
                Some(scaled) => op.holds(num, scaled),
                None => compare_approx(value, op, threshold),
            }
        }
        Value::OverRoot { num, root } => {
            // num / sqrt(root) against k: compare signs first, then squares.
            let (sv, sk) = (num.signum(), k.signum());
            if sv != sk {
                return op.holds(sv, sk);
            }
            match (
                num.checked_mul(num),
                k.checked_mul(k).and_then(|k2| k2.checked_mul(root)),
            ) {
                (Some(lhs), Some(rhs)) if sv >= 0 => op.holds(lhs, rhs),
                (Some(lhs), Some(rhs)) => op.holds(rhs, lhs),
                _ => compare_approx(value, op, threshold),
            }
        }
    }
}

/// The comparison in floats, for the values whose exact cross-multiplication would overflow.
/// Kept out of line and cold: inlined, the compiler converted every ratio to a float on the
/// exact path too, in case it was needed (128-bit conversions are library calls).
#[cold]
#[inline(never)]
fn compare_approx(value: Value, op: CmpOp, threshold: i64) -> bool {
    op_holds_f64(op, value.approx(), threshold as f64)
}

fn op_holds_f64(op: CmpOp, v: f64, k: f64) -> bool {
    match op {
        CmpOp::AtLeast => v >= k,
        CmpOp::MoreThan => v > k,
        CmpOp::AtMost => v <= k,
        CmpOp::LessThan => v < k,
        CmpOp::Equals => v == k,
    }
}

#[inline(always)]
fn leaf_holds(
    set: &RuleSet,
    slot: Slot,
    test: LeafTest,
    f: &Features,
    txn: Option<&Txn<'_>>,
) -> bool {
    match test {
        LeafTest::Compare(op, threshold) => match plain_value(slot, f) {
            // What `compare` does with an integer.
            Plain::Int(v) => op.holds(v, threshold),
            Plain::Missing => false,
            Plain::Derived => derived_value(slot, f).is_some_and(|v| compare(v, op, threshold)),
        },
        LeafTest::InList { list, negate } => {
            let member = match slot {
                Slot::Amount => f.amount.is_some_and(|a| set.amount_lists[list].contains(a)),
                Slot::Channel => txn.and_then(|t| t.channel.as_deref()).is_some_and(|c| {
                    set.string_lists[list]
                        .binary_search_by(|e| (**e).cmp(c))
                        .is_ok()
                }),
                Slot::MerchantId => txn.and_then(|t| t.merchant_id.as_deref()).is_some_and(|m| {
                    set.string_lists[list]
                        .binary_search_by(|e| (**e).cmp(m))
                        .is_ok()
                }),
                _ => false,
            };
            member != negate
        }
        LeafTest::TimeOfDay { from, to } => {
            f.amount.is_some() && features::in_hours(f.local_secs, from, to)
        }
    }
}

#[cfg(test)]
mod tests;

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

use crate::rules::Action;
use crate::rules::Mode;
use crate::rules::compile::{Node, RuleSet, Slot};
use crate::rules::validate::LeafTest;
use crate::state::CustomerHistory;
use crate::txn::Txn;

pub use features::Features;

/// Matched rules, by index into [`RuleSet::rules`].
pub type Hits = SmallVec<[u16; 8]>;

/// The outcome of evaluating a rule set for one transaction.
#[derive(Clone, Debug)]
pub struct Decision {
    /// allow, review or deny: the strongest action among matching enforced rules.
    pub action: Action,
    /// Enforced rules that matched, in file order.
    pub hits: Hits,
    /// Shadow rules that matched, in file order.
    pub shadow: Hits,
    /// The feature values the rules saw, for explanations.
    pub features: Features,
}

/// Evaluates every rule of `set` against the history and the current transaction.
pub fn evaluate(set: &RuleSet, history: &CustomerHistory<'_>, txn: &Txn<'_>) -> Decision {
    let features = features::extract(set, history, txn);
    let mut decision = Decision {
        action: Action::Allow,
        hits: Hits::new(),
        shadow: Hits::new(),
        features,
    };
    for (i, rule) in set.rules.iter().enumerate() {
        if !holds(set, rule.root, &decision.features, txn) {
            continue;
        }
        // Rule counts are capped far below u16::MAX by validation.
        let index = i as u16;
        match rule.mode {
            Mode::Enforce => {
                decision.hits.push(index);
                decision.action = decision.action.max(rule.action);
            }
            Mode::Shadow => decision.shadow.push(index),
        }
    }
    decision
}

/// Whether node `node` of the arena holds.
pub fn holds(set: &RuleSet, node: u32, f: &Features, txn: &Txn<'_>) -> bool {
    match set.nodes[node as usize] {
        Node::All { start, len } => set.children[start as usize..(start + len) as usize]
            .iter()
            .all(|&c| holds(set, c, f, txn)),
        Node::Any { start, len } => set.children[start as usize..(start + len) as usize]
            .iter()
            .any(|&c| holds(set, c, f, txn)),
        Node::Not(child) => !holds(set, child, f, txn),
        Node::Leaf(leaf) => leaf_holds(set, leaf.slot, leaf.test, f, txn),
    }
}

/// A feature's value, in its fixed unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// An integer in the feature's unit.
    Int(i64),
    /// A ratio `num / den` (den > 0), compared against thresholds in parts per million.
    Ratio {
        /// Numerator.
        num: i64,
        /// Denominator.
        den: i64,
    },
}

/// The value of a numeric slot, or `None` when the feature is missing for this transaction
/// (no previous location, no credit line...). A comparison with a missing value is false.
pub fn slot_value(slot: Slot, f: &Features) -> Option<Value> {
    let int = |v: i64| Some(Value::Int(v));
    match slot {
        Slot::Count(w) => int(i64::from(f.windows[w as usize].count)),
        Slot::Sum(w) => int(f.windows[w as usize].sum),
        Slot::SameAmountCount(w) => int(i64::from(f.windows[w as usize].same_amount)),
        Slot::ListCount(k) => int(i64::from(f.list_counts[k as usize])),
        Slot::FailedCount(w) => int(i64::from(f.windows[w as usize].failed)),
        Slot::Amount => int(f.amount),
        Slot::LocalTime => int(i64::from(f.local_secs)),
        Slot::LocalHour => int(i64::from(f.local_secs / 3600)),
        Slot::DistanceKm => f.travel.map(|t| Value::Int(t.distance_m)),
        Slot::SpeedKmh => f.travel.map(|t| Value::Int(t.speed_m_per_h)),
        Slot::SinceCreditGrant => f.since_grant.map(Value::Int),
        Slot::AmountToLimit => f
            .credit_limit
            .map(|den| Value::Ratio { num: f.amount, den }),
        Slot::Channel | Slot::MerchantId => None,
    }
}

/// Applies a comparison to a value exactly (ratios by cross-multiplication).
#[inline]
pub fn compare(value: Value, op: crate::rules::validate::CmpOp, threshold: i64) -> bool {
    match value {
        Value::Int(v) => op.holds(v, threshold),
        Value::Ratio { num, den } => op.holds(
            i128::from(num) * 1_000_000,
            i128::from(threshold) * i128::from(den),
        ),
    }
}

#[inline]
fn leaf_holds(set: &RuleSet, slot: Slot, test: LeafTest, f: &Features, txn: &Txn<'_>) -> bool {
    match test {
        LeafTest::Compare(op, threshold) => {
            slot_value(slot, f).is_some_and(|v| compare(v, op, threshold))
        }
        LeafTest::InList { list, negate } => {
            let member = match slot {
                Slot::Amount => features::in_sorted(&set.amount_lists[list], f.amount),
                Slot::Channel => txn.channel.as_deref().is_some_and(|c| {
                    set.string_lists[list]
                        .binary_search_by(|e| (**e).cmp(c))
                        .is_ok()
                }),
                Slot::MerchantId => txn.merchant_id.as_deref().is_some_and(|m| {
                    set.string_lists[list]
                        .binary_search_by(|e| (**e).cmp(m))
                        .is_ok()
                }),
                _ => false,
            };
            member != negate
        }
        LeafTest::TimeOfDay { from, to } => {
            let s = f.local_secs;
            if from < to {
                from <= s && s < to
            } else {
                s >= from || s < to
            }
        }
    }
}

#[cfg(test)]
mod tests;

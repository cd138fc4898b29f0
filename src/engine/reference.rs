//! The meaning of a rule set, stated plainly: a brute-force evaluator over the *validated*
//! rules that recomputes every feature from the whole event list for every leaf.
//!
//! It shares no code with the compiled path except the great-circle distance, and exists so
//! that property tests and the differential fuzz target can check that the fast path computes
//! exactly this. Slow on purpose; never used to serve.

use crate::rules::validate::{Cond, Feature, LeafTest, ValidRules};
use crate::rules::{Action, Mode};
use crate::state::{Event, Outcome};
use crate::txn::{CreditLine, Txn};

/// What the reference decides: the action and the ids of matching enforced and shadow rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceDecision {
    /// The strongest action among matching enforced rules (allow when none).
    pub action: Action,
    /// Ids of matching enforced rules, in file order.
    pub hits: Vec<String>,
    /// Ids of matching shadow rules, in file order.
    pub shadow: Vec<String>,
}

/// Evaluates `rules` for `txn` against `events` (arrival order) and the customer's credit line.
pub fn evaluate(
    rules: &ValidRules,
    events: &[Event],
    credit_line: Option<CreditLine>,
    txn: &Txn<'_>,
) -> ReferenceDecision {
    let mut out = ReferenceDecision {
        action: Action::Allow,
        hits: Vec::new(),
        shadow: Vec::new(),
    };
    for rule in &rules.rules {
        if cond_holds(rules, &rule.when, events, credit_line, txn) {
            match rule.mode {
                Mode::Enforce => {
                    out.hits.push(rule.id.clone());
                    if rule.action > out.action {
                        out.action = rule.action;
                    }
                }
                Mode::Shadow => out.shadow.push(rule.id.clone()),
            }
        }
    }
    out
}

fn cond_holds(
    rules: &ValidRules,
    cond: &Cond,
    events: &[Event],
    credit_line: Option<CreditLine>,
    txn: &Txn<'_>,
) -> bool {
    match cond {
        Cond::All(cs) => cs
            .iter()
            .all(|c| cond_holds(rules, c, events, credit_line, txn)),
        Cond::Any(cs) => cs
            .iter()
            .any(|c| cond_holds(rules, c, events, credit_line, txn)),
        Cond::Not(c) => !cond_holds(rules, c, events, credit_line, txn),
        Cond::Leaf(leaf) => {
            let value = feature_value(rules, leaf.feature, events, credit_line, txn);
            match leaf.test {
                LeafTest::Compare(op, threshold) => match value {
                    Some(RefValue::Int(v)) => op.holds(v, threshold),
                    Some(RefValue::Ratio(num, den)) => op.holds(
                        i128::from(num) * 1_000_000,
                        i128::from(threshold) * i128::from(den),
                    ),
                    _ => false,
                },
                LeafTest::InList { list, negate } => {
                    let l = &rules.lists[list];
                    let member = match leaf.feature {
                        Feature::Amount => l.amounts.contains(&txn.amount),
                        Feature::Channel => txn
                            .channel
                            .as_deref()
                            .is_some_and(|c| l.entries.iter().any(|e| e == c)),
                        Feature::MerchantId => txn
                            .merchant_id
                            .as_deref()
                            .is_some_and(|m| l.entries.iter().any(|e| e == m)),
                        _ => false,
                    };
                    member != negate
                }
                LeafTest::TimeOfDay { from, to } => match value {
                    Some(RefValue::Int(s)) => {
                        let s = s as u32;
                        if from < to {
                            (from..to).contains(&s)
                        } else {
                            s >= from || s < to
                        }
                    }
                    _ => false,
                },
            }
        }
    }
}

enum RefValue {
    Int(i64),
    Ratio(i64, i64),
}

fn in_window(e: &Event, t: i64, w: i64) -> bool {
    e.at <= t && e.at > t - w
}

fn feature_value(
    rules: &ValidRules,
    feature: Feature,
    events: &[Event],
    credit_line: Option<CreditLine>,
    txn: &Txn<'_>,
) -> Option<RefValue> {
    let t = txn.at;
    let amount = txn.amount.minor();
    let count = |pred: &dyn Fn(&Event) -> bool| events.iter().filter(|e| pred(e)).count() as i64;
    Some(match feature {
        Feature::Count(w) => RefValue::Int(count(&|e| in_window(e, t, w.micros)) + 1),
        Feature::Sum(w) => RefValue::Int(
            events
                .iter()
                .filter(|e| in_window(e, t, w.micros))
                .map(Event::amount_minor)
                .sum::<i64>()
                + amount,
        ),
        Feature::SameAmountCount(w) => {
            RefValue::Int(count(&|e| in_window(e, t, w.micros) && e.amount_minor() == amount) + 1)
        }
        Feature::ListCount(w, list) => {
            let amounts = &rules.lists[list].amounts;
            let is_member = |minor: i64| amounts.iter().any(|a| a.minor() == minor);
            RefValue::Int(
                count(&|e| in_window(e, t, w.micros) && is_member(e.amount_minor()))
                    + i64::from(is_member(amount)),
            )
        }
        Feature::FailedCount(w) => RefValue::Int(count(&|e| {
            in_window(e, t, w.micros) && e.outcome() == Outcome::Failed
        })),
        Feature::Amount => RefValue::Int(amount),
        Feature::LocalTime | Feature::LocalHour => {
            let ts = jiff::Timestamp::from_microsecond(t).ok()?;
            let local = rules.timezone.to_datetime(ts);
            let secs = i64::from(local.hour()) * 3600
                + i64::from(local.minute()) * 60
                + i64::from(local.second());
            if feature == Feature::LocalHour {
                RefValue::Int(i64::from(local.hour()))
            } else {
                RefValue::Int(secs)
            }
        }
        Feature::DistanceKm | Feature::SpeedKmh => {
            let here = Event::quantize(txn.geo?);
            let (at, there) = events
                .iter()
                .filter(|e| e.at <= t)
                .filter_map(|e| e.geo().map(|g| (e.at, g)))
                .max_by_key(|(at, _)| *at)?;
            let travel = super::features::travel(there, at, here, t);
            if feature == Feature::DistanceKm {
                RefValue::Int(travel.distance_m)
            } else {
                RefValue::Int(travel.speed_m_per_h)
            }
        }
        Feature::SinceCreditGrant => {
            let since = t - credit_line?.granted_at;
            if since < 0 {
                return None;
            }
            RefValue::Int(since)
        }
        Feature::AmountToLimit => RefValue::Ratio(amount, credit_line?.limit.minor()),
        Feature::Channel | Feature::MerchantId => return None,
    })
}

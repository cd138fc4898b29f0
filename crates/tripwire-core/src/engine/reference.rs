//! The meaning of a rule set, stated plainly: a brute-force evaluator over the *validated*
//! rules that recomputes every feature from the whole event list for every leaf.
//!
//! It shares with the compiled path only the great-circle distance, the definition of a
//! calendar month and the exact comparison of values, and exists so that property tests and
//! the differential fuzz target can check that the fast path computes exactly this. Slow on
//! purpose; never used to serve.

use super::{Value, compare};
use crate::rules::ir::{
    AmountStat, CmpOp, Cond, EntityMeasure, Feature, HistoryRatio, LeafTest, Measure, TrendKind,
    ValidRules, WindowMeasure,
};
use crate::rules::{Action, Mode};
use crate::state::{Event, Outcome};
use crate::txn::{CreditLine, Txn};

/// What the reference decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceDecision {
    /// The strongest action among matching enforced rules (allow when none).
    pub action: Action,
    /// Ids of matching enforced rules (tag rules excepted), in file order.
    pub hits: Vec<String>,
    /// Ids of matching shadow rules, in file order.
    pub shadow: Vec<String>,
    /// Ids of matching enforced tag rules, in file order.
    pub tags: Vec<String>,
    /// The score, when the rules have a scorecard.
    pub score: Option<i64>,
}

/// What the reference is given: the history (arrival order), the credit line, whether the
/// customer's calendar months are kept (then they are the months of `events`), and the
/// transaction.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Events in arrival order.
    pub events: &'a [Event],
    /// The credit line.
    pub credit_line: Option<CreditLine>,
    /// Monthly features are available.
    pub months: bool,
    /// The transaction.
    pub txn: &'a Txn<'a>,
}

/// Evaluates `rules` for `txn` against `events` (arrival order) and the customer's credit line.
pub fn evaluate(
    rules: &ValidRules,
    events: &[Event],
    credit_line: Option<CreditLine>,
    txn: &Txn<'_>,
) -> ReferenceDecision {
    evaluate_with(
        rules,
        &Inputs {
            events,
            credit_line,
            months: false,
            txn,
        },
    )
}

/// Evaluates with every input spelled out.
pub fn evaluate_with(rules: &ValidRules, inputs: &Inputs<'_>) -> ReferenceDecision {
    let score = rules.scorecard.as_ref().map(|card| {
        card.base_score
            + card
                .characteristics
                .iter()
                .map(|c| match feature_value(rules, c.feature, inputs, None) {
                    None => c.missing_points,
                    Some(v) => c
                        .bins
                        .iter()
                        .find(|b| {
                            b.from.is_none_or(|lo| compare(v, CmpOp::AtLeast, lo))
                                && b.below.is_none_or(|hi| compare(v, CmpOp::LessThan, hi))
                        })
                        .map_or(0, |b| b.points),
                })
                .sum::<i64>()
    });
    let mut out = ReferenceDecision {
        action: Action::Allow,
        hits: Vec::new(),
        shadow: Vec::new(),
        tags: Vec::new(),
        score,
    };
    for rule in &rules.rules {
        if cond_holds(rules, &rule.when, inputs, score) {
            match (rule.mode, rule.action) {
                (Mode::Shadow, _) => out.shadow.push(rule.id.clone()),
                (Mode::Enforce, Action::Tag) => out.tags.push(rule.id.clone()),
                (Mode::Enforce, action) => {
                    out.hits.push(rule.id.clone());
                    if action > out.action {
                        out.action = action;
                    }
                }
            }
        }
    }
    out
}

fn cond_holds(rules: &ValidRules, cond: &Cond, inputs: &Inputs<'_>, score: Option<i64>) -> bool {
    match cond {
        Cond::All(cs) => cs.iter().all(|c| cond_holds(rules, c, inputs, score)),
        Cond::Any(cs) => cs.iter().any(|c| cond_holds(rules, c, inputs, score)),
        Cond::Not(c) => !cond_holds(rules, c, inputs, score),
        Cond::Leaf(leaf) => {
            let txn = inputs.txn;
            match leaf.test {
                LeafTest::Compare(op, threshold) => {
                    feature_value(rules, leaf.feature, inputs, score)
                        .is_some_and(|v| compare(v, op, threshold))
                }
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
                LeafTest::TimeOfDay { from, to } => {
                    let s = local_secs(rules, txn.at);
                    if from < to {
                        (from..to).contains(&s)
                    } else {
                        s >= from || s < to
                    }
                }
            }
        }
    }
}

fn local_secs(rules: &ValidRules, at: i64) -> u32 {
    let ts = jiff::Timestamp::from_microsecond(at).expect("event times are in range");
    let local = rules.timezone.to_datetime(ts);
    u32::from(local.hour() as u8) * 3600
        + u32::from(local.minute() as u8) * 60
        + local.second() as u32
}

fn in_window(e: &Event, t: i64, w: i64) -> bool {
    e.at <= t && e.at > t - w
}

const PPM: i128 = 1_000_000;

fn ratio(num: i128, den: i128) -> Option<Value> {
    (den != 0).then_some(Value::Ratio { num, den })
}

/// 4 × the quantile k/4 of sorted amounts, by linear interpolation at (n−1)·k/4.
fn quantile_x4(sorted: &[i64], k: usize) -> i128 {
    let n = sorted.len();
    let pos_x4 = k * (n - 1);
    let (i, frac) = (pos_x4 / 4, pos_x4 % 4);
    let lo = i128::from(sorted[i]);
    let hi = i128::from(sorted[(i + 1).min(n - 1)]);
    4 * lo + frac as i128 * (hi - lo)
}

fn feature_value(
    rules: &ValidRules,
    feature: Feature,
    inputs: &Inputs<'_>,
    score: Option<i64>,
) -> Option<Value> {
    let events = inputs.events;
    let txn = inputs.txn;
    let t = txn.at;
    let amount = txn.amount.minor();
    let int = |v: i64| Some(Value::Int(v));
    let window = |w: i64| events.iter().filter(move |e| in_window(e, t, w));
    match feature {
        Feature::Window(m, w) => {
            let w = w.micros;
            let count =
                |pred: &dyn Fn(&Event) -> bool| window(w).filter(|e| pred(e)).count() as i64;
            let sum = |pred: &dyn Fn(&Event) -> bool| {
                window(w)
                    .filter(|e| pred(e))
                    .map(Event::amount_minor)
                    .sum::<i64>()
            };
            match m {
                WindowMeasure::Count => int(count(&|_| true) + 1),
                WindowMeasure::Sum => int(sum(&|_| true) + amount),
                WindowMeasure::SameAmountCount => int(count(&|e| e.amount_minor() == amount) + 1),
                WindowMeasure::FailedCount => int(count(&|e| e.outcome() == Outcome::Failed)),
                WindowMeasure::FailedSum => int(sum(&|e| e.outcome() == Outcome::Failed)),
                WindowMeasure::SettledCount => int(count(&|e| e.outcome() == Outcome::Settled)),
                WindowMeasure::SettledSum => int(sum(&|e| e.outcome() == Outcome::Settled)),
                WindowMeasure::FlaggedCount => int(count(&|e| e.decision() != Action::Allow)),
                WindowMeasure::DrawnToLimit => ratio(
                    i128::from(sum(&|_| true) + amount) * PPM,
                    i128::from(inputs.credit_line?.limit.minor()),
                ),
            }
        }
        Feature::ListCount(w, list) => {
            let amounts = &rules.lists[list].amounts;
            let is_member = |minor: i64| amounts.iter().any(|a| a.minor() == minor);
            int(window(w.micros)
                .filter(|e| is_member(e.amount_minor()))
                .count() as i64
                + i64::from(is_member(amount)))
        }
        Feature::InHours(measure, w, from, to) => {
            let inside = |at: i64| {
                let s = local_secs(rules, at);
                if from < to {
                    (from..to).contains(&s)
                } else {
                    s >= from || s < to
                }
            };
            let mut picked: Vec<i64> = window(w.micros)
                .filter(|e| inside(e.at))
                .map(Event::amount_minor)
                .collect();
            if inside(t) {
                picked.push(amount);
            }
            match measure {
                Measure::Count => int(picked.len() as i64),
                Measure::Sum => int(picked.iter().sum()),
            }
        }
        Feature::Stat(stat, w) => {
            let mut a: Vec<i64> = window(w.micros).map(Event::amount_minor).collect();
            a.push(amount);
            a.sort_unstable();
            let n = a.len() as i128;
            let sum: i128 = a.iter().map(|&x| i128::from(x)).sum();
            let sum_sq: i128 = a.iter().map(|&x| i128::from(x) * i128::from(x)).sum();
            let var_n2 = n * sum_sq - sum * sum;
            match stat {
                AmountStat::Mean => ratio(sum, n),
                AmountStat::Mode => {
                    let mut best = (0usize, a[0]);
                    for &x in &a {
                        let c = a.iter().filter(|&&y| y == x).count();
                        if c > best.0 || (c == best.0 && x < best.1) {
                            best = (c, x);
                        }
                    }
                    int(best.1)
                }
                AmountStat::P25 => ratio(quantile_x4(&a, 1), 4),
                AmountStat::Median => ratio(quantile_x4(&a, 2), 4),
                AmountStat::P75 => ratio(quantile_x4(&a, 3), 4),
                AmountStat::MeanMinusMedian => ratio(4 * sum - n * quantile_x4(&a, 2), 4 * n),
                AmountStat::Stddev => Some(Value::Sqrt {
                    num: var_n2,
                    den: n * n,
                }),
                AmountStat::Cv => (sum > 0).then(|| Value::Sqrt {
                    num: var_n2.saturating_mul(PPM * PPM),
                    den: sum * sum,
                }),
                AmountStat::Iqr => ratio(quantile_x4(&a, 3) - quantile_x4(&a, 1), 4),
            }
        }
        Feature::ToHistory(kind, w, min) => {
            // The earlier transactions only: the current one is not in `events`.
            let a: Vec<i128> = window(w.micros)
                .map(|e| i128::from(e.amount_minor()))
                .collect();
            if a.is_empty() || a.len() < min as usize {
                return None;
            }
            let x = i128::from(amount);
            let n = a.len() as i128;
            let sum: i128 = a.iter().sum();
            match kind {
                HistoryRatio::Mean => ratio(x * n * PPM, sum),
                HistoryRatio::Median => {
                    let mut sorted: Vec<i64> = a.iter().map(|&v| v as i64).collect();
                    sorted.sort_unstable();
                    ratio(x * 4 * PPM, quantile_x4(&sorted, 2))
                }
                HistoryRatio::Max => ratio(x * PPM, *a.iter().max().expect("not empty")),
                HistoryRatio::Zscore => {
                    let sum_sq: i128 = a.iter().map(|v| v * v).sum();
                    let var_n2 = n * sum_sq - sum * sum;
                    let num = n * x - sum;
                    if var_n2 == 0 {
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
        Feature::ByEntity(e) => {
            // The customer's own confirmed frauds are computed here from the events; an
            // entity's state is not an input of the reference (its hourly buckets are checked
            // in `state::entity` and through the interceptor), so those features are missing,
            // as they are to the engine when no entity values are handed in.
            if e.by.is_some() {
                return None;
            }
            let (from, to) = (t - e.mature - e.window.micros, t - e.mature);
            let held: Vec<&Event> = events
                .iter()
                .filter(|ev| ev.at > from && ev.at <= to)
                .collect();
            let count = held.len() as i64;
            let fraud = held.iter().filter(|ev| ev.is_fraud()).count() as i64;
            match e.measure {
                EntityMeasure::Count => int(count),
                EntityMeasure::Sum => int(held.iter().map(|ev| ev.amount_minor()).sum()),
                EntityMeasure::DistinctCustomers => None,
                EntityMeasure::FraudCount => int(fraud),
                EntityMeasure::FraudRate => {
                    if count == 0 || count < i64::from(e.min_count) {
                        None
                    } else {
                        ratio(i128::from(fraud) * PPM, i128::from(count))
                    }
                }
            }
        }
        Feature::Amount => int(amount),
        Feature::LocalTime => int(i64::from(local_secs(rules, t))),
        Feature::LocalHour => int(i64::from(local_secs(rules, t) / 3600)),
        Feature::DistanceKm | Feature::SpeedKmh => {
            let here = Event::quantize(txn.geo?);
            let (at, there) = events
                .iter()
                .filter(|e| e.at <= t)
                .filter_map(|e| e.geo().map(|g| (e.at, g)))
                .max_by_key(|(at, _)| *at)?;
            let travel = super::features::travel(there, at, here, t);
            if feature == Feature::DistanceKm {
                int(travel.distance_m)
            } else {
                int(travel.speed_m_per_h)
            }
        }
        Feature::SinceCreditGrant => {
            let since = t - inputs.credit_line?.granted_at;
            (since >= 0).then_some(Value::Int(since))
        }
        Feature::AmountToLimit => ratio(
            i128::from(amount) * PPM,
            i128::from(inputs.credit_line?.limit.minor()),
        ),
        Feature::Channel | Feature::MerchantId => None,
        Feature::IncreasingStreak | Feature::DecreasingStreak => {
            let mut timeline: Vec<(i64, usize, i64)> = events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.at <= t)
                .map(|(i, e)| (e.at, i, e.amount_minor()))
                .collect();
            timeline.sort_unstable();
            let mut amounts: Vec<i64> = timeline.into_iter().map(|(_, _, a)| a).collect();
            amounts.push(amount);
            let mut streak = 0;
            for pair in amounts.windows(2).rev() {
                let rising = pair[0] < pair[1];
                let falling = pair[0] > pair[1];
                if (feature == Feature::IncreasingStreak && rising)
                    || (feature == Feature::DecreasingStreak && falling)
                {
                    streak += 1;
                } else {
                    break;
                }
            }
            int(streak)
        }
        Feature::SinceLastTransaction => events
            .iter()
            .filter(|e| e.at <= t)
            .map(|e| e.at)
            .max()
            .map(|at| Value::Int(t - at)),
        Feature::Trend(kind, measure) => {
            if !inputs.months {
                return None;
            }
            let v = |k: i32| -> i128 { month_total(rules, events, t, k, measure) };
            match kind {
                TrendKind::LastVs3mMean => ratio(3 * v(1) * PPM, v(1) + v(2) + v(3)),
                TrendKind::MonthOverMonth => ratio(v(1) * PPM, v(2)),
                TrendKind::Last3mVsPrev3m => ratio((v(1) + v(2) + v(3)) * PPM, v(4) + v(5) + v(6)),
            }
        }
        Feature::MonthlyCountCv => {
            if !inputs.months {
                return None;
            }
            let counts: Vec<i128> = (1..=12)
                .map(|k| month_total(rules, events, t, k, Measure::Count))
                .collect();
            let n = counts.len() as i128;
            let sum: i128 = counts.iter().sum();
            let sum_sq: i128 = counts.iter().map(|c| c * c).sum();
            (sum > 0).then(|| Value::Sqrt {
                num: (n * sum_sq - sum * sum) * PPM * PPM,
                den: sum * sum,
            })
        }
        Feature::Score => score.map(Value::Int),
    }
}

/// Count or sum of the events in calendar month `k` before the month of `t`.
fn month_total(rules: &ValidRules, events: &[Event], t: i64, k: i32, measure: Measure) -> i128 {
    let month = super::features::month_of(&rules.timezone, t).saturating_sub(k);
    let of_month = events
        .iter()
        .filter(|e| super::features::month_of(&rules.timezone, e.at) == month);
    match measure {
        Measure::Count => of_month.count() as i128,
        Measure::Sum => of_month.map(|e| i128::from(e.amount_minor())).sum(),
    }
}

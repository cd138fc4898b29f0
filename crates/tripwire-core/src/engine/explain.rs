//! Reasons for people: renders why a rule matched from the feature values the decision kept,
//! e.g. "5 transactions in 10m, limit 4". Runs after the shard lock is released and writes
//! straight into the response through `fmt::Write`, so nothing is formatted for rules that did
//! not match.

use std::fmt::{self, Write};

use super::{Features, Value, holds, slot_value};
use crate::rules::compile::{CompiledLeaf, Node, RuleSet, Slot};
use crate::rules::ir::{CmpOp, LeafTest};
use crate::rules::ir::{
    EntityMeasure, HistoryRatio, Measure, TrendKind, Unit, WindowMeasure, unit_of,
};
use crate::rules::text::{DurationText, TimeOfDayText};
use crate::txn::{Amount, Txn};

/// The message of one matched rule; `Display` renders it.
#[derive(Debug)]
pub struct Explanation<'a> {
    /// The rule set evaluated.
    pub set: &'a RuleSet,
    /// The rule's index in it.
    pub rule: u16,
    /// The features the decision saw.
    pub features: &'a Features,
    /// The transaction (`None` in a scan).
    pub txn: Option<&'a Txn<'a>>,
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self.set.rules[self.rule as usize].root;
        self.node(f, root)
    }
}

/// Minor units displayed as an amount (`499.00`).
struct Money(i64);

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Amount::from_minor(self.0) {
            Some(a) => a.fmt(f),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Metres displayed as km with one decimal.
struct Km(i64);

impl fmt::Display for Km {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = self.0.saturating_add(50) / 100;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

/// Parts per million displayed as a percentage (`90%`, `90.25%`).
struct Percent(i64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hundredths = self.0 / 100;
        if hundredths % 100 == 0 {
            write!(f, "{}%", hundredths / 100)
        } else {
            write!(f, "{}.{:02}%", hundredths / 100, hundredths % 100)
        }
    }
}

fn op_words(op: CmpOp) -> &'static str {
    match op {
        CmpOp::AtLeast => "at least",
        CmpOp::MoreThan => "more than",
        CmpOp::AtMost => "at most",
        CmpOp::LessThan => "less than",
        CmpOp::Equals => "equal to",
    }
}

/// A value in a unit, for people.
struct Shown {
    value: Value,
    unit: Unit,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.unit, self.value) {
            (Unit::Money | Unit::SignedMoney, Value::Int(v)) => {
                if v < 0 {
                    write!(f, "-{}", Money(-v))
                } else {
                    Money(v).fmt(f)
                }
            }
            (Unit::Money | Unit::SignedMoney, v) => {
                // Rounded to the minor unit for display; comparisons used the exact value.
                let minor = v.approx().round() as i64;
                if minor < 0 {
                    write!(f, "-{}", Money(-minor))
                } else {
                    Money(minor).fmt(f)
                }
            }
            (Unit::Ratio, v) => Percent(v.approx().round() as i64).fmt(f),
            (Unit::Km, Value::Int(v)) => Km(v).fmt(f),
            (Unit::Duration, Value::Int(v)) => DurationText(v).fmt(f),
            (_, Value::Int(v)) => write!(f, "{v}"),
            (_, v) => write!(f, "{:.2}", v.approx()),
        }
    }
}

fn threshold(unit: Unit, k: i64) -> Shown {
    Shown {
        value: Value::Int(k),
        unit,
    }
}

impl Explanation<'_> {
    fn node(&self, f: &mut fmt::Formatter<'_>, node: u32) -> fmt::Result {
        match self.set.nodes[node as usize] {
            Node::All { start, len } => {
                let kids = &self.set.children[start as usize..(start + len) as usize];
                self.join(f, kids.iter().copied())
            }
            Node::Any { start, len } => {
                let kids = &self.set.children[start as usize..(start + len) as usize];
                let matching = kids
                    .iter()
                    .copied()
                    .filter(|&k| holds(self.set, k, self.features, self.txn));
                if matching.clone().next().is_some() {
                    self.join(f, matching)
                } else {
                    self.join(f, kids.iter().copied())
                }
            }
            Node::Not(child) => {
                f.write_str("not (")?;
                self.node(f, child)?;
                f.write_char(')')
            }
            Node::Leaf(leaf) => self.leaf(f, &leaf),
        }
    }

    fn join(&self, f: &mut fmt::Formatter<'_>, nodes: impl Iterator<Item = u32>) -> fmt::Result {
        for (i, n) in nodes.enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            self.node(f, n)?;
        }
        Ok(())
    }

    fn window(&self, leaf: &CompiledLeaf) -> DurationText {
        DurationText(leaf.source.feature.window().map_or(0, |w| w.micros))
    }

    fn leaf(&self, f: &mut fmt::Formatter<'_>, leaf: &CompiledLeaf) -> fmt::Result {
        let feats = self.features;
        let value = slot_value(leaf.slot, feats);
        let unit = unit_of(leaf.source.feature).unwrap_or(Unit::Count);
        let shown = |v: Value| Shown { value: v, unit };
        let int = match value {
            Some(Value::Int(v)) => v,
            _ => 0,
        };
        let window = self.window(leaf);
        let name = leaf.source.feature.name();
        let amount = feats.amount.unwrap_or(0);
        match leaf.slot {
            Slot::Window(m, _) => match m {
                WindowMeasure::Count => write!(f, "{int} transactions in {window}")?,
                WindowMeasure::Sum => write!(f, "{} spent in {window}", Money(int))?,
                WindowMeasure::SameAmountCount => {
                    write!(f, "{int} transactions of {} in {window}", Money(amount))?
                }
                WindowMeasure::FailedCount => write!(f, "{int} failed transactions in {window}")?,
                WindowMeasure::FailedSum => write!(f, "{} failed in {window}", Money(int))?,
                WindowMeasure::SettledCount => write!(f, "{int} settled transactions in {window}")?,
                WindowMeasure::SettledSum => write!(f, "{} settled in {window}", Money(int))?,
                WindowMeasure::FlaggedCount => {
                    write!(f, "{int} transactions reviewed or denied in {window}")?
                }
                WindowMeasure::DrawnToLimit => match value {
                    Some(v) => write!(f, "{} of the credit limit drawn in {window}", shown(v))?,
                    None => f.write_str("no credit limit known")?,
                },
            },
            Slot::ListCount(k) => {
                let list = self.set.list_windows[k as usize].1;
                write!(
                    f,
                    "{int} transactions with an amount in {} in {window}",
                    self.set.valid.lists[list].name
                )?;
            }
            Slot::InHours(measure, k) => {
                let (_, from, to) = self.set.hour_windows[k as usize];
                match measure {
                    Measure::Count => write!(f, "{int} transactions")?,
                    Measure::Sum => write!(f, "{} spent", Money(int))?,
                }
                write!(
                    f,
                    " between {} and {} in {window}",
                    TimeOfDayText(from),
                    TimeOfDayText(to)
                )?;
            }
            Slot::Stat(..) => match value {
                Some(v) => write!(f, "{} {} in {window}", name.replace('_', " "), shown(v))?,
                None => write!(f, "no amounts in {window}")?,
            },
            Slot::ToHistory(kind, k, min) => {
                let earlier = feats.prior[k as usize].n;
                let what = match kind {
                    HistoryRatio::Mean => "mean",
                    HistoryRatio::Median => "median",
                    HistoryRatio::Max => "largest",
                    HistoryRatio::Zscore => "mean",
                };
                match (value, kind) {
                    (Some(v), HistoryRatio::Zscore) => write!(
                        f,
                        "amount {} is {:.2} standard deviations above the {what} of the {earlier} earlier transactions in {window}",
                        Money(amount),
                        v.approx() / 1e6
                    )?,
                    (Some(v), _) => write!(
                        f,
                        "amount {} is {} of the {what} of the {earlier} earlier transactions in {window}",
                        Money(amount),
                        shown(v)
                    )?,
                    (None, _) => write!(
                        f,
                        "{earlier} earlier transactions in {window} (fewer than {min} to compare with)"
                    )?,
                }
            }
            Slot::Entity(measure, k, _) => {
                let e = &self.set.entity_features[k as usize];
                let v = &feats.entity[k as usize];
                let whose = match e.by {
                    Some(kind) => format!("{} ", kind.field()),
                    None => "the customer's ".to_string(),
                };
                let span = if e.mature > 0 {
                    format!(
                        "the {} before the last {}",
                        DurationText(e.window.micros),
                        DurationText(e.mature)
                    )
                } else {
                    format!("{}", DurationText(e.window.micros))
                };
                if !v.present {
                    write!(f, "no {}", whose.trim_end())?;
                } else {
                    match measure {
                        EntityMeasure::Count => {
                            write!(f, "{whose}has {} transactions in {span}", v.count)?
                        }
                        EntityMeasure::Sum => {
                            write!(f, "{whose}has {} spent in {span}", Money(v.sum))?
                        }
                        EntityMeasure::DistinctCustomers => {
                            write!(f, "{whose}has {} distinct customers in {span}", v.distinct)?
                        }
                        EntityMeasure::FraudCount | EntityMeasure::FraudRate => write!(
                            f,
                            "{whose}has {} confirmed frauds in {} transactions in {span}",
                            v.fraud, v.count
                        )?,
                    }
                }
            }
            Slot::Amount => write!(f, "amount {}", Money(amount))?,
            Slot::LocalTime => write!(
                f,
                "local time {} ({})",
                TimeOfDayText(feats.local_secs),
                self.set.valid.timezone_name
            )?,
            Slot::LocalHour => write!(f, "local hour {}", feats.local_secs / 3600)?,
            Slot::DistanceKm => match feats.travel {
                Some(t) => write!(
                    f,
                    "{} km from the previous geotagged transaction",
                    Km(t.distance_m)
                )?,
                None => f.write_str("no previous geotagged transaction")?,
            },
            Slot::SpeedKmh => match feats.travel {
                Some(t) if t.speed_m_per_h == i64::MAX => write!(
                    f,
                    "{} km from the previous geotagged transaction at the same instant",
                    Km(t.distance_m)
                )?,
                Some(t) => write!(
                    f,
                    "{} km/h from the previous geotagged transaction ({} km in {})",
                    Km(t.speed_m_per_h),
                    Km(t.distance_m),
                    DurationText(t.elapsed)
                )?,
                None => f.write_str("no previous geotagged transaction")?,
            },
            Slot::SinceCreditGrant => match feats.since_grant {
                Some(s) => write!(f, "credit line granted {} ago", DurationText(s))?,
                None => f.write_str("no credit line granted before the transaction")?,
            },
            Slot::AmountToLimit => match (feats.credit_limit, value) {
                (Some(limit), Some(v)) => write!(
                    f,
                    "amount {} is {} of the credit limit {}",
                    Money(amount),
                    shown(v),
                    Money(limit)
                )?,
                _ => f.write_str("no credit limit known")?,
            },
            Slot::Channel => write!(
                f,
                "channel {}",
                self.txn
                    .and_then(|t| t.channel.as_deref())
                    .unwrap_or("(none)")
            )?,
            Slot::MerchantId => write!(
                f,
                "merchant {}",
                self.txn
                    .and_then(|t| t.merchant_id.as_deref())
                    .unwrap_or("(none)")
            )?,
            Slot::IncreasingStreak => write!(f, "{int} increases in a row in amount")?,
            Slot::DecreasingStreak => write!(f, "{int} decreases in a row in amount")?,
            Slot::SinceLastTransaction => match feats.since_last {
                Some(s) => write!(f, "last transaction {} ago", DurationText(s))?,
                None => f.write_str("no earlier transaction")?,
            },
            Slot::Trend(kind, measure) => {
                let of = match measure {
                    Measure::Count => "count",
                    Measure::Sum => "sum",
                };
                let what = match kind {
                    TrendKind::LastVs3mMean => "last month's {} against the 3-month mean",
                    TrendKind::MonthOverMonth => "last month's {} against the month before",
                    TrendKind::Last3mVsPrev3m => "the last 3 months' {} against the 3 before",
                };
                write!(f, "{}", what.replace("{}", of))?;
                match value {
                    Some(v) => write!(f, " is {}", shown(v))?,
                    None => f.write_str(" cannot be computed (no earlier activity)")?,
                }
            }
            Slot::MonthlyCountCv => match value {
                Some(v) => write!(
                    f,
                    "monthly counts vary by {} (coefficient of variation, 12 months)",
                    shown(v)
                )?,
                None => f.write_str("no activity in the last 12 months")?,
            },
            Slot::Score => match feats.score {
                Some(s) => write!(f, "score {s}")?,
                None => f.write_str("no score")?,
            },
        }
        match leaf.test {
            LeafTest::Compare(op, k) => {
                let counted = matches!(
                    leaf.slot,
                    Slot::Window(
                        WindowMeasure::Count
                            | WindowMeasure::SameAmountCount
                            | WindowMeasure::FailedCount
                            | WindowMeasure::SettledCount
                            | WindowMeasure::FlaggedCount,
                        _
                    ) | Slot::ListCount(_)
                        | Slot::InHours(Measure::Count, _)
                );
                match (counted, op) {
                    (true, CmpOp::AtLeast) => write!(f, ", limit {}", (k - 1).max(0)),
                    (true, CmpOp::MoreThan) => write!(f, ", limit {k}"),
                    _ => {
                        let k = match leaf.slot {
                            Slot::SpeedKmh => format!("{} km/h", Km(k)),
                            Slot::DistanceKm => format!("{} km", Km(k)),
                            _ => threshold(unit, k).to_string(),
                        };
                        write!(f, " ({} {k})", op_words(op))
                    }
                }
            }
            LeafTest::InList { list, negate } => write!(
                f,
                " {} list {}",
                if negate { "not in" } else { "in" },
                self.set.valid.lists[list].name
            ),
            LeafTest::TimeOfDay { from, to } => write!(
                f,
                " within [{}, {})",
                TimeOfDayText(from),
                TimeOfDayText(to)
            ),
        }
    }
}

//! Reasons for people: renders why a rule matched from the feature values the decision kept,
//! e.g. "5 transactions in 10m, limit 4". Runs after the shard lock is released and writes
//! straight into the response through `fmt::Write`, so nothing is formatted for rules that did
//! not match.

use std::fmt::{self, Write};

use super::{Features, Value, holds, slot_value};
use crate::rules::compile::{CompiledLeaf, Node, RuleSet, Slot};
use crate::rules::validate::{CmpOp, DurationText, LeafTest, TimeOfDayText};
use crate::txn::{Amount, Txn};

/// The message of one matched rule; `Display` renders it.
pub struct Explanation<'a> {
    /// The rule set evaluated.
    pub set: &'a RuleSet,
    /// The rule's index in it.
    pub rule: u16,
    /// The features the decision saw.
    pub features: &'a Features,
    /// The transaction.
    pub txn: &'a Txn<'a>,
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

    fn window(&self, slot: Slot) -> DurationText {
        let w = match slot {
            Slot::Count(w) | Slot::Sum(w) | Slot::SameAmountCount(w) | Slot::FailedCount(w) => {
                w as usize
            }
            Slot::ListCount(k) => self.set.list_windows[k as usize].0 as usize,
            _ => return DurationText(0),
        };
        DurationText(self.set.windows[w].micros)
    }

    fn leaf(&self, f: &mut fmt::Formatter<'_>, leaf: &CompiledLeaf) -> fmt::Result {
        let feats = self.features;
        let value = slot_value(leaf.slot, feats);
        let int = match value {
            Some(Value::Int(v)) => v,
            _ => 0,
        };
        let window = self.window(leaf.slot);
        match leaf.slot {
            Slot::Count(_) => write!(f, "{int} transactions in {window}")?,
            Slot::Sum(_) => write!(f, "{} spent in {window}", Money(int))?,
            Slot::SameAmountCount(_) => write!(
                f,
                "{int} transactions of {} in {window}",
                Money(feats.amount)
            )?,
            Slot::ListCount(k) => {
                let list = self.set.list_windows[k as usize].1;
                write!(
                    f,
                    "{int} transactions with an amount in {} in {window}",
                    self.set.valid.lists[list].name
                )?;
            }
            Slot::FailedCount(_) => write!(f, "{int} failed transactions in {window}")?,
            Slot::Amount => write!(f, "amount {}", Money(feats.amount))?,
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
            Slot::AmountToLimit => match feats.credit_limit {
                Some(limit) => write!(
                    f,
                    "amount {} is {} of the credit limit {}",
                    Money(feats.amount),
                    Percent(
                        i64::try_from(
                            i128::from(feats.amount) * 1_000_000 / i128::from(limit.max(1))
                        )
                        .unwrap_or(i64::MAX)
                    ),
                    Money(limit)
                )?,
                None => f.write_str("no credit limit known")?,
            },
            Slot::Channel => write!(
                f,
                "channel {}",
                self.txn.channel.as_deref().unwrap_or("(none)")
            )?,
            Slot::MerchantId => write!(
                f,
                "merchant {}",
                self.txn.merchant_id.as_deref().unwrap_or("(none)")
            )?,
        }
        match leaf.test {
            LeafTest::Compare(op, k) => {
                let counted = matches!(
                    leaf.slot,
                    Slot::Count(_)
                        | Slot::SameAmountCount(_)
                        | Slot::ListCount(_)
                        | Slot::FailedCount(_)
                );
                match (counted, op) {
                    (true, CmpOp::AtLeast) => write!(f, ", limit {}", (k - 1).max(0)),
                    (true, CmpOp::MoreThan) => write!(f, ", limit {k}"),
                    _ => {
                        write!(f, " ({} ", op_words(op))?;
                        match leaf.slot {
                            Slot::Sum(_) | Slot::Amount => write!(f, "{})", Money(k)),
                            Slot::DistanceKm => write!(f, "{} km)", Km(k)),
                            Slot::SpeedKmh => write!(f, "{} km/h)", Km(k)),
                            Slot::SinceCreditGrant => write!(f, "{})", DurationText(k)),
                            Slot::AmountToLimit => write!(f, "{})", Percent(k)),
                            _ => write!(f, "{k})"),
                        }
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

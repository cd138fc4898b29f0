//! Validation: from the file as written ([`RulesFile`]) to rules whose every value is typed and
//! resolved ([`ValidRules`]) — windows in microseconds, amounts in minor units, list names to
//! indices — or to every problem found, each with its line and column.
//!
//! [`ValidRules`] is also the input of the brute-force reference evaluator
//! (`engine::reference`), so it states the meaning of a rule set independently of the compiled
//! form the hot path runs.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use serde_saphyr::Spanned;

use super::schema::{Action, BinDoc, Condition, Mode, RuleDoc, RulesFile, ScorecardDoc, Test};
use super::{MAX_DISTINCT_WINDOWS, MAX_LIST_WINDOWS, MAX_RULES, Problem};
use crate::txn::{Amount, MICROS_PER_SECOND};

/// Index of a list in [`ValidRules::lists`].
pub type ListId = usize;

/// A rule set that passed validation.
#[derive(Debug, Clone)]
pub struct ValidRules {
    /// The IANA name of the time zone, as written.
    pub timezone_name: String,
    /// The time zone for time-of-day features.
    pub timezone: TimeZone,
    /// Named lists, in name order; rules refer to them by index.
    pub lists: Vec<NamedList>,
    /// The rules, in file order.
    pub rules: Vec<ValidRule>,
    /// The behaviour scorecard, if declared.
    pub scorecard: Option<ValidScorecard>,
}

/// A validated scorecard: score = base + the points of the bin each characteristic falls in.
#[derive(Debug, Clone)]
pub struct ValidScorecard {
    /// The base score.
    pub base_score: i64,
    /// Good:bad odds at the base score, when given.
    pub base_odds: Option<i64>,
    /// Points to double the odds.
    pub points_to_double_odds: i64,
    /// Characteristics in file order.
    pub characteristics: Vec<Characteristic>,
}

/// One scorecard characteristic: a feature and its bins.
#[derive(Debug, Clone)]
pub struct Characteristic {
    /// Name for people.
    pub name: String,
    /// The feature binned.
    pub feature: Feature,
    /// Bins in ascending order: [from, below) in the feature's unit; `None` is unbounded.
    pub bins: Vec<Bin>,
    /// Points when the feature is missing (0 unless a `missing` bin says otherwise).
    pub missing_points: i64,
}

/// A scorecard bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    /// Lower bound, inclusive.
    pub from: Option<i64>,
    /// Upper bound, exclusive.
    pub below: Option<i64>,
    /// Points.
    pub points: i64,
}

/// A named list with its members as written and, when a rule uses it for amounts, as amounts.
#[derive(Debug, Clone)]
pub struct NamedList {
    /// The list's name.
    pub name: String,
    /// Members as written.
    pub entries: Vec<String>,
    /// Members as amounts, sorted and deduplicated; empty unless a rule compares amounts to it.
    pub amounts: Vec<Amount>,
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct ValidRule {
    /// Unique snake_case id.
    pub id: String,
    /// What the rule is for.
    pub description: String,
    /// What a match asks for.
    pub action: Action,
    /// Enforce or shadow.
    pub mode: Mode,
    /// When it matches.
    pub when: Cond,
}

/// A validated condition tree.
#[derive(Debug, Clone)]
pub enum Cond {
    /// Every child holds.
    All(Vec<Cond>),
    /// Some child holds.
    Any(Vec<Cond>),
    /// The child does not hold.
    Not(Box<Cond>),
    /// A feature put to a test.
    Leaf(Leaf),
}

/// A feature put to a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// What is measured.
    pub feature: Feature,
    /// How it is judged.
    pub test: LeafTest,
}

/// A window over the customer's history: transactions with time in (t − w, t].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// Length in microseconds, > 0.
    pub micros: i64,
}

/// What a windowed aggregate measures over the transactions in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowMeasure {
    /// Transactions, current included.
    Count,
    /// Sum of amounts, current included.
    Sum,
    /// Transactions of exactly the current amount, current included.
    SameAmountCount,
    /// Transactions reported failed.
    FailedCount,
    /// Sum of transactions reported failed.
    FailedSum,
    /// Transactions reported settled.
    SettledCount,
    /// Sum of transactions reported settled.
    SettledSum,
    /// Transactions decided review or deny.
    FlaggedCount,
    /// Sum of amounts, current included, over the credit limit (parts per million).
    DrawnToLimit,
}

/// A statistic of the amounts in a window (current included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmountStat {
    /// Mean.
    Mean,
    /// Most frequent amount; the smallest on ties.
    Mode,
    /// 25th percentile (linear interpolation between closest ranks).
    P25,
    /// Median.
    Median,
    /// 75th percentile.
    P75,
    /// Mean minus median.
    MeanMinusMedian,
    /// Population standard deviation.
    Stddev,
    /// Coefficient of variation: stddev over mean (parts per million).
    Cv,
    /// Inter-quartile range: p75 − p25.
    Iqr,
}

/// Which months a trend compares (months are calendar months in the rules' time zone; month 1
/// is the last full month before the transaction's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrendKind {
    /// Month 1 over the mean of months 1–3.
    LastVs3mMean,
    /// Month 1 over month 2.
    MonthOverMonth,
    /// Months 1–3 over months 4–6.
    Last3mVsPrev3m,
}

/// Count or sum, for trends and hour ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Number of transactions.
    Count,
    /// Sum of amounts.
    Sum,
}

/// A measurable property of the transaction or of the customer's history.
///
/// Every feature's value is in a fixed unit: counts; amounts in minor units; hours; seconds of
/// the day; metres; metres per hour; microseconds; parts per million for ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// An aggregate over a window of history.
    Window(WindowMeasure, Window),
    /// Transactions in the window whose amount is in the list, current included.
    ListCount(Window, ListId),
    /// Count or sum of the window's transactions whose local time is in [from, to) seconds.
    InHours(Measure, Window, u32, u32),
    /// A statistic of the amounts in the window.
    Stat(AmountStat, Window),
    /// The current amount (minor units).
    Amount,
    /// Local time of day (seconds since local midnight).
    LocalTime,
    /// Local hour (0–23).
    LocalHour,
    /// Distance from the previous geotagged transaction (metres).
    DistanceKm,
    /// Speed from the previous geotagged transaction (metres per hour).
    SpeedKmh,
    /// Time since the credit line was granted (microseconds); missing before the grant.
    SinceCreditGrant,
    /// Amount / credit limit (parts per million).
    AmountToLimit,
    /// The channel label.
    Channel,
    /// The merchant id.
    MerchantId,
    /// Consecutive increases in amount ending at the current transaction.
    IncreasingStreak,
    /// Consecutive decreases in amount ending at the current transaction.
    DecreasingStreak,
    /// Time since the previous transaction (microseconds).
    SinceLastTransaction,
    /// A monthly trend of count or sum (parts per million).
    Trend(TrendKind, Measure),
    /// Coefficient of variation of monthly counts over months 1–12 (parts per million).
    MonthlyCountCv,
    /// The scorecard's score.
    Score,
}

impl Feature {
    /// The feature's name as written in rules.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Window(m, _) => match m {
                WindowMeasure::Count => "count",
                WindowMeasure::Sum => "sum",
                WindowMeasure::SameAmountCount => "same_amount_count",
                WindowMeasure::FailedCount => "failed_count",
                WindowMeasure::FailedSum => "failed_sum",
                WindowMeasure::SettledCount => "settled_count",
                WindowMeasure::SettledSum => "settled_sum",
                WindowMeasure::FlaggedCount => "flagged_count",
                WindowMeasure::DrawnToLimit => "drawn_to_limit",
            },
            Feature::ListCount(..) => "list_count",
            Feature::InHours(Measure::Count, ..) => "count_in_hours",
            Feature::InHours(Measure::Sum, ..) => "sum_in_hours",
            Feature::Stat(s, _) => match s {
                AmountStat::Mean => "mean_amount",
                AmountStat::Mode => "mode_amount",
                AmountStat::P25 => "p25_amount",
                AmountStat::Median => "median_amount",
                AmountStat::P75 => "p75_amount",
                AmountStat::MeanMinusMedian => "mean_minus_median",
                AmountStat::Stddev => "stddev_amount",
                AmountStat::Cv => "cv_amount",
                AmountStat::Iqr => "iqr_amount",
            },
            Feature::Amount => "amount",
            Feature::LocalTime => "local_time",
            Feature::LocalHour => "local_hour",
            Feature::DistanceKm => "distance_km",
            Feature::SpeedKmh => "speed_kmh",
            Feature::SinceCreditGrant => "since_credit_grant",
            Feature::AmountToLimit => "amount_to_limit",
            Feature::Channel => "channel",
            Feature::MerchantId => "merchant_id",
            Feature::IncreasingStreak => "increasing_streak",
            Feature::DecreasingStreak => "decreasing_streak",
            Feature::SinceLastTransaction => "since_last_transaction",
            Feature::Trend(TrendKind::LastVs3mMean, _) => "trend_1m_vs_3m",
            Feature::Trend(TrendKind::MonthOverMonth, _) => "trend_mom",
            Feature::Trend(TrendKind::Last3mVsPrev3m, _) => "trend_3m_vs_prev_3m",
            Feature::MonthlyCountCv => "monthly_count_cv",
            Feature::Score => "score",
        }
    }

    /// The history window the feature reads, if any.
    pub fn window(self) -> Option<Window> {
        match self {
            Feature::Window(_, w)
            | Feature::ListCount(w, _)
            | Feature::InHours(_, w, ..)
            | Feature::Stat(_, w) => Some(w),
            _ => None,
        }
    }

    /// Whether the feature reads calendar-month buckets.
    pub fn reads_months(self) -> bool {
        matches!(self, Feature::Trend(..) | Feature::MonthlyCountCv)
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// ≥
    AtLeast,
    /// >
    MoreThan,
    /// ≤
    AtMost,
    /// <
    LessThan,
    /// =
    Equals,
}

impl CmpOp {
    /// Applies the operator to two ordered values.
    #[inline]
    pub fn holds<T: Ord>(self, value: T, threshold: T) -> bool {
        match self {
            CmpOp::AtLeast => value >= threshold,
            CmpOp::MoreThan => value > threshold,
            CmpOp::AtMost => value <= threshold,
            CmpOp::LessThan => value < threshold,
            CmpOp::Equals => value == threshold,
        }
    }

    /// The key that spells the operator in rules.
    pub fn key(self) -> &'static str {
        match self {
            CmpOp::AtLeast => "at_least",
            CmpOp::MoreThan => "more_than",
            CmpOp::AtMost => "at_most",
            CmpOp::LessThan => "less_than",
            CmpOp::Equals => "equals",
        }
    }
}

/// How a feature is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafTest {
    /// Compare to a threshold in the feature's unit.
    Compare(CmpOp, i64),
    /// Membership in a list (or absence, when `negate`).
    InList {
        /// The list.
        list: ListId,
        /// `not_in` rather than `in`.
        negate: bool,
    },
    /// Time of day in [from, to) seconds since midnight; wraps past midnight when from > to.
    TimeOfDay {
        /// Start, inclusive.
        from: u32,
        /// End, exclusive.
        to: u32,
    },
}

/// Seconds in a day.
pub const SECONDS_PER_DAY: u32 = 86_400;
/// Longest window accepted: 400 days.
pub const MAX_WINDOW_MICROS: i64 = 400 * 86_400 * MICROS_PER_SECOND;

/// The unit a feature's thresholds are written in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unit {
    /// Whole numbers of transactions.
    Count,
    /// Amounts.
    Money,
    /// Amounts that may be negative (mean minus median).
    SignedMoney,
    /// Hours 0–23.
    Hour,
    /// Kilometres (values in metres).
    Km,
    /// Durations (values in microseconds).
    Duration,
    /// Fractions or percentages (values in parts per million).
    Ratio,
    /// Score points (whole numbers, may be negative).
    Points,
}

/// How a feature is parameterised and tested, by name.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    /// Needs `window`.
    window: bool,
    /// Needs `list`.
    list: bool,
    /// Needs `from` and `to` as an hour range (not as the test).
    hours: bool,
    /// Needs `of: count | sum`.
    of: bool,
    /// Compared with thresholds in this unit.
    unit: Option<Unit>,
    /// Tested with `in` / `not_in`.
    membership: bool,
    /// Tested with `from` / `to` (time of day).
    time_of_day: bool,
}

const fn spec(name: &'static str, unit: Unit) -> Spec {
    Spec {
        name,
        window: false,
        list: false,
        hours: false,
        of: false,
        unit: Some(unit),
        membership: false,
        time_of_day: false,
    }
}

const fn windowed(name: &'static str, unit: Unit) -> Spec {
    Spec {
        window: true,
        ..spec(name, unit)
    }
}

/// Every feature a condition can name.
const SPECS: [Spec; 39] = [
    windowed("count", Unit::Count),
    windowed("sum", Unit::Money),
    windowed("same_amount_count", Unit::Count),
    Spec {
        list: true,
        ..windowed("list_count", Unit::Count)
    },
    windowed("failed_count", Unit::Count),
    windowed("failed_sum", Unit::Money),
    windowed("settled_count", Unit::Count),
    windowed("settled_sum", Unit::Money),
    windowed("flagged_count", Unit::Count),
    Spec {
        hours: true,
        ..windowed("count_in_hours", Unit::Count)
    },
    Spec {
        hours: true,
        ..windowed("sum_in_hours", Unit::Money)
    },
    windowed("drawn_to_limit", Unit::Ratio),
    windowed("mean_amount", Unit::Money),
    windowed("mode_amount", Unit::Money),
    windowed("p25_amount", Unit::Money),
    windowed("median_amount", Unit::Money),
    windowed("p75_amount", Unit::Money),
    windowed("mean_minus_median", Unit::SignedMoney),
    windowed("stddev_amount", Unit::Money),
    windowed("cv_amount", Unit::Ratio),
    windowed("iqr_amount", Unit::Money),
    Spec {
        membership: true,
        ..spec("amount", Unit::Money)
    },
    Spec {
        unit: None,
        time_of_day: true,
        ..spec("local_time", Unit::Count)
    },
    spec("local_hour", Unit::Hour),
    spec("distance_km", Unit::Km),
    spec("speed_kmh", Unit::Km),
    spec("since_credit_grant", Unit::Duration),
    spec("amount_to_limit", Unit::Ratio),
    Spec {
        unit: None,
        membership: true,
        ..spec("channel", Unit::Count)
    },
    Spec {
        unit: None,
        membership: true,
        ..spec("merchant_id", Unit::Count)
    },
    spec("increasing_streak", Unit::Count),
    spec("decreasing_streak", Unit::Count),
    spec("since_last_transaction", Unit::Duration),
    Spec {
        of: true,
        ..spec("trend_1m_vs_3m", Unit::Ratio)
    },
    Spec {
        of: true,
        ..spec("trend_mom", Unit::Ratio)
    },
    Spec {
        of: true,
        ..spec("trend_3m_vs_prev_3m", Unit::Ratio)
    },
    spec("monthly_count_cv", Unit::Ratio),
    spec("score", Unit::Points),
    // Placeholder keeps the array length in one place; never named by the schema.
    spec("", Unit::Count),
];

/// The unit a feature's values and thresholds are in.
pub fn unit_of(feature: Feature) -> Option<Unit> {
    SPECS
        .iter()
        .find(|s| s.name == feature.name())
        .and_then(|s| s.unit)
}

struct Validator<'f> {
    problems: Vec<Problem>,
    list_index: HashMap<&'f str, ListId>,
    lists_used_for_amounts: Vec<bool>,
}

fn at<T>(spanned: &Spanned<T>, message: impl Into<String>) -> Problem {
    Problem {
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
        message: message.into(),
    }
}

/// Validates a parsed rules file; on failure returns every problem found.
pub fn validate(file: &RulesFile) -> Result<ValidRules, Vec<Problem>> {
    let names: Vec<&String> = file.lists.keys().collect();
    let mut v = Validator {
        problems: Vec::new(),
        list_index: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect(),
        lists_used_for_amounts: vec![false; names.len()],
    };

    let timezone = match TimeZone::get(&file.timezone.value) {
        Ok(tz) => Some(tz),
        Err(_) => {
            v.problems.push(at(
                &file.timezone,
                format!(
                    "unknown time zone {:?}: use an IANA name such as \"Asia/Shanghai\"",
                    file.timezone.value
                ),
            ));
            None
        }
    };

    for (name, list) in &file.lists {
        if !is_snake_case(name) {
            v.problems.push(at(
                list,
                format!("list name {name:?} must be snake_case (a-z, 0-9, _)"),
            ));
        }
        if list.value.is_empty() {
            v.problems.push(at(list, format!("list `{name}` is empty")));
        }
    }

    if file.rules.is_empty() {
        v.problems
            .push(at(&file.timezone, "the file declares no rules"));
    }
    if file.rules.len() > MAX_RULES {
        v.problems.push(at(
            &file.rules[MAX_RULES],
            format!(
                "at most {MAX_RULES} rules are allowed, found {}",
                file.rules.len()
            ),
        ));
    }

    let mut seen_ids: HashMap<&str, u64> = HashMap::new();
    let mut rules = Vec::with_capacity(file.rules.len());
    for rule in &file.rules {
        let id = &rule.value.id;
        if !is_snake_case(&id.value) || id.value.len() > 64 {
            v.problems.push(at(
                id,
                format!(
                    "rule id {:?} must be snake_case (a-z, 0-9, _), start with a letter and be at most 64 characters",
                    id.value
                ),
            ));
        }
        if let Some(first_line) = seen_ids.insert(&id.value, id.referenced.line()) {
            v.problems.push(at(
                id,
                format!(
                    "duplicate rule id `{}` (first defined on line {first_line})",
                    id.value
                ),
            ));
        }
        if let Some(when) = v.condition(&rule.value.when, 0) {
            rules.push(valid_rule(&rule.value, when));
        }
    }

    let scorecard = file.scorecard.as_ref().and_then(|doc| v.scorecard(doc));

    let mut windows: Vec<Window> = Vec::new();
    let mut list_windows: Vec<(Window, ListId)> = Vec::new();
    for rule in &rules {
        collect_windows(&rule.when, &mut windows, &mut list_windows);
    }
    for c in scorecard.iter().flat_map(|s| &s.characteristics) {
        collect_windows(
            &Cond::Leaf(Leaf {
                feature: c.feature,
                test: LeafTest::Compare(CmpOp::AtLeast, 0),
            }),
            &mut windows,
            &mut list_windows,
        );
    }
    for rule in &rules {
        if uses_score(&rule.when) && file.scorecard.is_none() {
            v.problems.push(Problem {
                line: 0,
                column: 0,
                message: format!(
                    "rule `{}` reads `score` but the file declares no scorecard",
                    rule.id
                ),
            });
        }
    }
    windows.sort_unstable();
    windows.dedup();
    list_windows.sort_unstable();
    list_windows.dedup();
    if windows.len() > MAX_DISTINCT_WINDOWS {
        v.problems.push(at(
            &file.timezone,
            format!(
                "the rules use {} distinct windows; at most {MAX_DISTINCT_WINDOWS} are supported",
                windows.len()
            ),
        ));
    }
    let mut features = Vec::new();
    for rule in &rules {
        collect_features(&rule.when, &mut features);
    }
    features.extend(
        scorecard
            .iter()
            .flat_map(|s| s.characteristics.iter().map(|c| c.feature)),
    );
    let mut hours: Vec<(Window, u32, u32)> = features
        .iter()
        .filter_map(|f| match *f {
            Feature::InHours(_, w, a, b) => Some((w, a, b)),
            _ => None,
        })
        .collect();
    hours.sort_unstable();
    hours.dedup();
    let mut stats: Vec<Window> = features
        .iter()
        .filter_map(|f| match *f {
            Feature::Stat(_, w) => Some(w),
            _ => None,
        })
        .collect();
    stats.sort_unstable();
    stats.dedup();
    if hours.len() > super::compile::MAX_HOUR_WINDOWS {
        v.problems.push(at(
            &file.timezone,
            format!(
                "the rules use {} distinct (window, hours) pairs in count_in_hours/sum_in_hours; at most {} are supported",
                hours.len(),
                super::compile::MAX_HOUR_WINDOWS
            ),
        ));
    }
    if stats.len() > super::compile::MAX_STAT_WINDOWS {
        v.problems.push(at(
            &file.timezone,
            format!(
                "the rules read amount statistics over {} distinct windows; at most {} are supported",
                stats.len(),
                super::compile::MAX_STAT_WINDOWS
            ),
        ));
    }
    if list_windows.len() > MAX_LIST_WINDOWS {
        v.problems.push(at(
            &file.timezone,
            format!(
                "the rules use {} distinct list_count (list, window) pairs; at most {MAX_LIST_WINDOWS} are supported",
                list_windows.len()
            ),
        ));
    }

    let mut lists = Vec::with_capacity(file.lists.len());
    for (i, (name, list)) in file.lists.iter().enumerate() {
        let mut amounts = Vec::new();
        if v.lists_used_for_amounts[i] {
            for entry in &list.value {
                match Amount::parse(&entry.value) {
                    Ok(a) => amounts.push(a),
                    Err(e) => v.problems.push(at(
                        entry,
                        format!(
                            "list `{name}` is compared with amounts, but entry {:?} {e}",
                            entry.value
                        ),
                    )),
                }
            }
            amounts.sort_unstable();
            amounts.dedup();
        }
        lists.push(NamedList {
            name: name.clone(),
            entries: list.value.iter().map(|e| e.value.clone()).collect(),
            amounts,
        });
    }

    match (timezone, v.problems.is_empty()) {
        (Some(timezone), true) => Ok(ValidRules {
            timezone_name: file.timezone.value.clone(),
            timezone,
            lists,
            rules,
            scorecard,
        }),
        _ => {
            let mut problems = v.problems;
            problems.sort_by_key(|p| (p.line, p.column));
            Err(problems)
        }
    }
}

fn uses_score(cond: &Cond) -> bool {
    match cond {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().any(uses_score),
        Cond::Not(c) => uses_score(c),
        Cond::Leaf(leaf) => leaf.feature == Feature::Score,
    }
}

fn valid_rule(doc: &RuleDoc, when: Cond) -> ValidRule {
    ValidRule {
        id: doc.id.value.clone(),
        description: doc.description.clone().unwrap_or_default(),
        action: doc.action.value,
        mode: doc.mode.as_ref().map(|m| m.value).unwrap_or_default(),
        when,
    }
}

fn collect_windows(cond: &Cond, windows: &mut Vec<Window>, pairs: &mut Vec<(Window, ListId)>) {
    match cond {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| collect_windows(c, windows, pairs)),
        Cond::Not(c) => collect_windows(c, windows, pairs),
        Cond::Leaf(leaf) => {
            if let Some(w) = leaf.feature.window() {
                windows.push(w);
            }
            if let Feature::ListCount(w, l) = leaf.feature {
                pairs.push((w, l));
            }
        }
    }
}

fn collect_features(cond: &Cond, out: &mut Vec<Feature>) {
    match cond {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| collect_features(c, out)),
        Cond::Not(c) => collect_features(c, out),
        Cond::Leaf(leaf) => out.push(leaf.feature),
    }
}

/// Deepest nesting of all/any/not accepted.
const MAX_DEPTH: usize = 16;

impl<'f> Validator<'f> {
    fn condition(&mut self, cond: &'f Spanned<Condition>, depth: usize) -> Option<Cond> {
        if depth > MAX_DEPTH {
            self.problems.push(at(
                cond,
                format!("conditions nest more than {MAX_DEPTH} levels deep"),
            ));
            return None;
        }
        let (name, test) = match &cond.value {
            Condition::All(children) | Condition::Any(children) => {
                let is_all = matches!(cond.value, Condition::All(_));
                if children.is_empty() {
                    let key = if is_all { "all" } else { "any" };
                    self.problems
                        .push(at(cond, format!("`{key}` needs at least one condition")));
                    return None;
                }
                let valid: Vec<Option<Cond>> = children
                    .iter()
                    .map(|c| self.condition(c, depth + 1))
                    .collect();
                let valid: Option<Vec<Cond>> = valid.into_iter().collect();
                return valid.map(|cs| if is_all { Cond::All(cs) } else { Cond::Any(cs) });
            }
            Condition::Not(child) => {
                return self
                    .condition(child, depth + 1)
                    .map(|c| Cond::Not(Box::new(c)));
            }
            _ => self.condition_name(&cond.value)?,
        };
        self.leaf(cond, name, test).map(Cond::Leaf)
    }

    /// The feature name and test of a leaf condition.
    fn condition_name(&self, cond: &'f Condition) -> Option<(&'static str, &'f Test)> {
        Some(match cond {
            Condition::All(_) | Condition::Any(_) | Condition::Not(_) => return None,
            Condition::Count(t) => ("count", t),
            Condition::Sum(t) => ("sum", t),
            Condition::SameAmountCount(t) => ("same_amount_count", t),
            Condition::ListCount(t) => ("list_count", t),
            Condition::FailedCount(t) => ("failed_count", t),
            Condition::Amount(t) => ("amount", t),
            Condition::LocalTime(t) => ("local_time", t),
            Condition::LocalHour(t) => ("local_hour", t),
            Condition::DistanceKm(t) => ("distance_km", t),
            Condition::SpeedKmh(t) => ("speed_kmh", t),
            Condition::SinceCreditGrant(t) => ("since_credit_grant", t),
            Condition::AmountToLimit(t) => ("amount_to_limit", t),
            Condition::Channel(t) => ("channel", t),
            Condition::MerchantId(t) => ("merchant_id", t),
            Condition::FailedSum(t) => ("failed_sum", t),
            Condition::SettledCount(t) => ("settled_count", t),
            Condition::SettledSum(t) => ("settled_sum", t),
            Condition::FlaggedCount(t) => ("flagged_count", t),
            Condition::CountInHours(t) => ("count_in_hours", t),
            Condition::SumInHours(t) => ("sum_in_hours", t),
            Condition::DrawnToLimit(t) => ("drawn_to_limit", t),
            Condition::MeanAmount(t) => ("mean_amount", t),
            Condition::ModeAmount(t) => ("mode_amount", t),
            Condition::P25Amount(t) => ("p25_amount", t),
            Condition::MedianAmount(t) => ("median_amount", t),
            Condition::P75Amount(t) => ("p75_amount", t),
            Condition::MeanMinusMedian(t) => ("mean_minus_median", t),
            Condition::StddevAmount(t) => ("stddev_amount", t),
            Condition::CvAmount(t) => ("cv_amount", t),
            Condition::IqrAmount(t) => ("iqr_amount", t),
            Condition::IncreasingStreak(t) => ("increasing_streak", t),
            Condition::DecreasingStreak(t) => ("decreasing_streak", t),
            Condition::SinceLastTransaction(t) => ("since_last_transaction", t),
            Condition::Trend1mVs3m(t) => ("trend_1m_vs_3m", t),
            Condition::TrendMom(t) => ("trend_mom", t),
            Condition::Trend3mVsPrev3m(t) => ("trend_3m_vs_prev_3m", t),
            Condition::MonthlyCountCv(t) => ("monthly_count_cv", t),
            Condition::Score(t) => ("score", t),
        })
    }

    fn leaf(
        &mut self,
        cond: &'f Spanned<Condition>,
        name: &'static str,
        test: &'f Test,
    ) -> Option<Leaf> {
        let (feature, tests) = self.feature(cond, name, test, false)?;
        Some(Leaf {
            feature,
            test: tests?,
        })
    }

    /// Validates a feature's parameters and, unless `bare` (a scorecard characteristic, which
    /// has bins instead), its one test.
    fn feature(
        &mut self,
        cond: &'f Spanned<Condition>,
        name: &'static str,
        test: &'f Test,
        bare: bool,
    ) -> Option<(Feature, Option<LeafTest>)> {
        let before = self.problems.len();
        let spec = *SPECS.iter().find(|s| s.name == name)?;
        let window = if spec.window {
            match &test.window {
                Some(w) => self.window(w),
                None => {
                    self.problems.push(at(
                        cond,
                        format!("`{name}` needs a `window`, such as `window: 10m`"),
                    ));
                    None
                }
            }
        } else {
            self.refuse(&test.window, name, "window");
            None
        };
        let list = if spec.list {
            match &test.list {
                Some(l) => self.list(l, true),
                None => {
                    self.problems.push(at(
                        cond,
                        "`list_count` needs a `list`, such as `list: sensitive_amounts`",
                    ));
                    None
                }
            }
        } else {
            self.refuse(&test.list, name, "list");
            None
        };
        let of = if spec.of {
            match &test.of {
                Some(of) => match of.value.as_str() {
                    "count" => Some(Measure::Count),
                    "sum" => Some(Measure::Sum),
                    other => {
                        self.problems.push(at(
                            of,
                            format!("`of` must be `count` or `sum`, not {other:?}"),
                        ));
                        None
                    }
                },
                None => {
                    self.problems
                        .push(at(cond, format!("`{name}` needs `of: count` or `of: sum`")));
                    None
                }
            }
        } else {
            self.refuse(&test.of, name, "of");
            None
        };
        let hours = if spec.hours {
            match (&test.from, &test.to) {
                (Some(from), Some(to)) => {
                    let f = self.time_of_day(from, false);
                    let t = self.time_of_day(to, true);
                    match (f, t) {
                        (Some(f), Some(t)) if f == t % SECONDS_PER_DAY => {
                            self.problems.push(at(
                                to,
                                "`from` and `to` are the same time: the range is empty",
                            ));
                            None
                        }
                        (Some(f), Some(t)) => Some((f, t)),
                        _ => None,
                    }
                }
                _ => {
                    self.problems.push(at(
                        cond,
                        format!("`{name}` needs an hour range: `from` and `to`, such as `from: \"02:00\", to: \"05:00\"`"),
                    ));
                    None
                }
            }
        } else {
            None
        };

        let comparisons = [
            (CmpOp::AtLeast, &test.at_least),
            (CmpOp::MoreThan, &test.more_than),
            (CmpOp::AtMost, &test.at_most),
            (CmpOp::LessThan, &test.less_than),
            (CmpOp::Equals, &test.equals),
        ];
        let mut tests: Vec<LeafTest> = Vec::new();
        let mut test_keys = 0;
        for (op, value) in comparisons {
            let Some(value) = value else { continue };
            test_keys += 1;
            match spec.unit {
                Some(unit) => {
                    if let Some(threshold) = self.threshold(value, unit, name) {
                        tests.push(LeafTest::Compare(op, threshold));
                    }
                }
                None => self.problems.push(at(
                    value,
                    format!("`{}` does not apply to `{name}`", op.key()),
                )),
            }
        }
        for (negate, value) in [(false, &test.in_list), (true, &test.not_in)] {
            let Some(value) = value else { continue };
            test_keys += 1;
            let key = if negate { "not_in" } else { "in" };
            if !spec.membership {
                self.problems
                    .push(at(value, format!("`{key}` does not apply to `{name}`")));
                continue;
            }
            if let Some(list) = self.list(value, name == "amount") {
                tests.push(LeafTest::InList { list, negate });
            }
        }
        if spec.time_of_day {
            match (&test.from, &test.to) {
                (Some(from), Some(to)) => {
                    test_keys += 1;
                    let f = self.time_of_day(from, false);
                    let t = self.time_of_day(to, true);
                    if let (Some(f), Some(t)) = (f, t) {
                        if f == t % SECONDS_PER_DAY {
                            self.problems.push(at(
                                to,
                                "`from` and `to` are the same time: the range is empty",
                            ));
                        } else {
                            tests.push(LeafTest::TimeOfDay { from: f, to: t });
                        }
                    }
                }
                _ if bare => {
                    self.problems.push(at(
                        cond,
                        "`local_time` cannot be binned; use `local_hour` in a scorecard",
                    ));
                }
                _ => {
                    test_keys += 1;
                    self.problems.push(at(
                        cond,
                        "`local_time` needs both `from` and `to`, such as `{ from: \"01:00\", to: \"05:00\" }`",
                    ));
                }
            }
        } else if !spec.hours {
            self.refuse(&test.from, name, "from");
            self.refuse(&test.to, name, "to");
        }
        if bare {
            if test_keys > 0 {
                self.problems.push(at(
                    cond,
                    format!("a scorecard feature takes no test; give `{name}` its parameters only and put the ranges in `bins`"),
                ));
            }
            if spec.unit.is_none() {
                self.problems
                    .push(at(cond, format!("`{name}` has no numeric value to bin")));
            }
        } else if test_keys == 0 {
            self.problems.push(at(
                cond,
                format!(
                    "`{name}` needs a test: {}",
                    if spec.time_of_day {
                        "`from` and `to`"
                    } else if spec.unit.is_some() && spec.membership {
                        "one of at_least, more_than, at_most, less_than, equals, in, not_in"
                    } else if spec.membership {
                        "`in` or `not_in` a list"
                    } else {
                        "one of at_least, more_than, at_most, less_than, equals"
                    }
                ),
            ));
        } else if test_keys > 1 {
            self.problems.push(at(
                cond,
                format!("`{name}` has {test_keys} tests; give one per condition and combine conditions with `all`"),
            ));
        }

        if self.problems.len() > before {
            return None;
        }
        let stat = |s| Some(Feature::Stat(s, window?));
        let measure = |m| Some(Feature::Window(m, window?));
        let feature = match name {
            "count" => measure(WindowMeasure::Count),
            "sum" => measure(WindowMeasure::Sum),
            "same_amount_count" => measure(WindowMeasure::SameAmountCount),
            "failed_count" => measure(WindowMeasure::FailedCount),
            "failed_sum" => measure(WindowMeasure::FailedSum),
            "settled_count" => measure(WindowMeasure::SettledCount),
            "settled_sum" => measure(WindowMeasure::SettledSum),
            "flagged_count" => measure(WindowMeasure::FlaggedCount),
            "drawn_to_limit" => measure(WindowMeasure::DrawnToLimit),
            "list_count" => Some(Feature::ListCount(window?, list?)),
            "count_in_hours" => {
                let (f, t) = hours?;
                Some(Feature::InHours(Measure::Count, window?, f, t))
            }
            "sum_in_hours" => {
                let (f, t) = hours?;
                Some(Feature::InHours(Measure::Sum, window?, f, t))
            }
            "mean_amount" => stat(AmountStat::Mean),
            "mode_amount" => stat(AmountStat::Mode),
            "p25_amount" => stat(AmountStat::P25),
            "median_amount" => stat(AmountStat::Median),
            "p75_amount" => stat(AmountStat::P75),
            "mean_minus_median" => stat(AmountStat::MeanMinusMedian),
            "stddev_amount" => stat(AmountStat::Stddev),
            "cv_amount" => stat(AmountStat::Cv),
            "iqr_amount" => stat(AmountStat::Iqr),
            "amount" => Some(Feature::Amount),
            "local_time" => Some(Feature::LocalTime),
            "local_hour" => Some(Feature::LocalHour),
            "distance_km" => Some(Feature::DistanceKm),
            "speed_kmh" => Some(Feature::SpeedKmh),
            "since_credit_grant" => Some(Feature::SinceCreditGrant),
            "amount_to_limit" => Some(Feature::AmountToLimit),
            "channel" => Some(Feature::Channel),
            "merchant_id" => Some(Feature::MerchantId),
            "increasing_streak" => Some(Feature::IncreasingStreak),
            "decreasing_streak" => Some(Feature::DecreasingStreak),
            "since_last_transaction" => Some(Feature::SinceLastTransaction),
            "trend_1m_vs_3m" => Some(Feature::Trend(TrendKind::LastVs3mMean, of?)),
            "trend_mom" => Some(Feature::Trend(TrendKind::MonthOverMonth, of?)),
            "trend_3m_vs_prev_3m" => Some(Feature::Trend(TrendKind::Last3mVsPrev3m, of?)),
            "monthly_count_cv" => Some(Feature::MonthlyCountCv),
            _ => Some(Feature::Score),
        }?;
        Some((feature, tests.pop()))
    }

    fn integer(&mut self, value: &Spanned<String>, what: &str, positive: bool) -> Option<i64> {
        match value.value.trim().parse::<i64>() {
            Ok(n) if n.abs() <= 1_000_000 && (!positive || n > 0) => Some(n),
            _ => {
                self.problems.push(at(
                    value,
                    format!(
                        "{what} must be a whole number{}, got {:?}",
                        if positive { " above zero" } else { "" },
                        value.value
                    ),
                ));
                None
            }
        }
    }

    fn scorecard(&mut self, doc: &'f Spanned<ScorecardDoc>) -> Option<ValidScorecard> {
        let before = self.problems.len();
        let d = &doc.value;
        let base_score = self.integer(&d.base_score, "base_score", false);
        let pdo = self.integer(&d.points_to_double_odds, "points_to_double_odds", true);
        let base_odds = match &d.base_odds {
            Some(o) => self.integer(o, "base_odds", true),
            None => None,
        };
        if d.characteristics.is_empty() {
            self.problems
                .push(at(doc, "the scorecard needs at least one characteristic"));
        }
        let mut names: HashMap<&str, u64> = HashMap::new();
        let mut characteristics = Vec::new();
        for c in &d.characteristics {
            let c = &c.value;
            if let Some(first) = names.insert(&c.name.value, c.name.referenced.line()) {
                self.problems.push(at(
                    &c.name,
                    format!(
                        "duplicate characteristic `{}` (first on line {first})",
                        c.name.value
                    ),
                ));
            }
            let (name, test) = match &c.feature.value {
                Condition::All(_) | Condition::Any(_) | Condition::Not(_) => {
                    self.problems.push(at(
                        &c.feature,
                        "a scorecard feature is one feature with its parameters, not a combination",
                    ));
                    continue;
                }
                _ => match self.condition_name(&c.feature.value) {
                    Some(pair) => pair,
                    None => continue,
                },
            };
            if name == "score" {
                self.problems.push(at(
                    &c.feature,
                    "the score cannot be a characteristic of itself",
                ));
                continue;
            }
            let Some((feature, _)) = self.feature(&c.feature, name, test, true) else {
                continue;
            };
            let unit = unit_of(feature).unwrap_or(Unit::Count);
            let mut bins: Vec<(Bin, &Spanned<BinDoc>)> = Vec::new();
            let mut missing_points = 0;
            let mut missing_seen = false;
            let bins_before = self.problems.len();
            for bin in &c.bins {
                let b = &bin.value;
                let points = self.integer(&b.points, "points", false);
                if b.missing == Some(true) {
                    if b.from.is_some() || b.below.is_some() {
                        self.problems
                            .push(at(bin, "a `missing` bin takes no `from` or `below`"));
                    }
                    if missing_seen {
                        self.problems.push(at(bin, "more than one `missing` bin"));
                    }
                    missing_seen = true;
                    missing_points = points.unwrap_or(0);
                    continue;
                }
                let from = b.from.as_ref().map(|f| self.threshold(f, unit, name));
                let below = b.below.as_ref().map(|f| self.threshold(f, unit, name));
                if matches!(from, Some(None)) || matches!(below, Some(None)) || points.is_none() {
                    continue;
                }
                let (from, below) = (from.flatten(), below.flatten());
                if let (Some(f), Some(t)) = (from, below)
                    && f >= t
                {
                    self.problems
                        .push(at(bin, "a bin's `from` must be below its `below`"));
                    continue;
                }
                bins.push((
                    Bin {
                        from,
                        below,
                        points: points.unwrap_or(0),
                    },
                    bin,
                ));
            }
            bins.sort_by_key(|(b, _)| b.from.map_or(i128::MIN, i128::from));
            if self.problems.len() > bins_before {
                // A bin that did not parse would only add confusing gap reports.
                continue;
            }
            if bins.is_empty() {
                self.problems.push(at(
                    &c.name,
                    format!("characteristic `{}` has no range bins", c.name.value),
                ));
            }
            if let Some((first, span)) = bins.first()
                && first.from.is_some()
            {
                self.problems.push(at(
                    *span,
                    "gap: the first bin must have no `from` so that every value falls in a bin",
                ));
            }
            if let Some((last, span)) = bins.last()
                && last.below.is_some()
            {
                self.problems.push(at(
                    *span,
                    "gap: the last bin must have no `below` so that every value falls in a bin",
                ));
            }
            for pair in bins.windows(2) {
                let ((a, _), (b, span)) = (&pair[0], &pair[1]);
                match (a.below, b.from) {
                    (Some(end), Some(start)) if end == start => {}
                    (Some(end), Some(start)) if end > start => self.problems.push(at(
                        *span,
                        "overlap: this bin starts before the previous one ends",
                    )),
                    (None, _) => self.problems.push(at(
                        *span,
                        "overlap: the previous bin has no `below`, so it already covers this one",
                    )),
                    _ => self.problems.push(at(
                        *span,
                        "gap: this bin must start where the previous one ends (`from` = the previous `below`)",
                    )),
                }
            }
            characteristics.push(Characteristic {
                name: c.name.value.clone(),
                feature,
                bins: bins.into_iter().map(|(b, _)| b).collect(),
                missing_points,
            });
        }
        if self.problems.len() > before {
            return None;
        }
        Some(ValidScorecard {
            base_score: base_score?,
            base_odds,
            points_to_double_odds: pdo?,
            characteristics,
        })
    }

    fn refuse(&mut self, key: &Option<Spanned<String>>, feature: &str, name: &str) {
        if let Some(value) = key {
            self.problems
                .push(at(value, format!("`{name}` does not apply to `{feature}`")));
        }
    }

    fn window(&mut self, w: &Spanned<String>) -> Option<Window> {
        match parse_duration(&w.value) {
            Ok(micros) if micros > MAX_WINDOW_MICROS => {
                self.problems.push(at(
                    w,
                    format!("window {:?} is longer than the maximum of 400d", w.value),
                ));
                None
            }
            Ok(micros) => Some(Window { micros }),
            Err(e) => {
                self.problems
                    .push(at(w, format!("bad window {:?}: {e}", w.value)));
                None
            }
        }
    }

    fn list(&mut self, name: &Spanned<String>, for_amounts: bool) -> Option<ListId> {
        match self.list_index.get(name.value.as_str()) {
            Some(&id) => {
                if for_amounts {
                    self.lists_used_for_amounts[id] = true;
                }
                Some(id)
            }
            None => {
                let known: Vec<&str> = self.list_index.keys().copied().collect::<Vec<_>>();
                let mut known = known;
                known.sort_unstable();
                self.problems.push(at(
                    name,
                    format!(
                        "unknown list `{}`{}",
                        name.value,
                        if known.is_empty() {
                            " (the file declares no lists)".to_string()
                        } else {
                            format!("; declared lists: {}", known.join(", "))
                        }
                    ),
                ));
                None
            }
        }
    }

    fn threshold(&mut self, value: &Spanned<String>, unit: Unit, feature: &str) -> Option<i64> {
        let text = value.value.trim();
        let parsed = match unit {
            Unit::Count => text
                .parse::<u32>()
                .map(i64::from)
                .map_err(|_| "must be a whole number such as 5".to_string()),
            Unit::Money => Amount::parse(text)
                .map(Amount::minor)
                .map_err(|e| format!("is not an amount: it {e}")),
            Unit::SignedMoney => {
                let (negative, digits) = match text.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, text),
                };
                Amount::parse(digits)
                    .map(|a| if negative { -a.minor() } else { a.minor() })
                    .map_err(|e| format!("is not an amount: it {e}"))
            }
            Unit::Points => text
                .parse::<i64>()
                .ok()
                .filter(|p| p.abs() <= 1_000_000)
                .ok_or_else(|| "must be a whole number of points".to_string()),
            Unit::Hour => match text.parse::<u8>() {
                Ok(h) if h < 24 => Ok(i64::from(h)),
                _ => Err("must be an hour from 0 to 23".to_string()),
            },
            Unit::Km => parse_fixed(text, 3).ok_or_else(|| {
                "must be a number of km with at most 3 decimals, such as 900".to_string()
            }),
            Unit::Duration => parse_duration(text),
            Unit::Ratio => parse_ratio(text).ok_or_else(|| {
                "must be a fraction such as 0.9 or a percentage such as \"90%\"".to_string()
            }),
        };
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(at(
                    value,
                    format!("threshold {:?} for `{feature}` {e}", value.value),
                ));
                None
            }
        }
    }

    fn time_of_day(&mut self, value: &Spanned<String>, is_end: bool) -> Option<u32> {
        match parse_time_of_day(&value.value, is_end) {
            Some(s) => Some(s),
            None => {
                self.problems.push(at(
                    value,
                    format!(
                        "time of day {:?} must be HH:MM or HH:MM:SS, from 00:00 to {}",
                        value.value,
                        if is_end { "24:00" } else { "23:59:59" }
                    ),
                ));
                None
            }
        }
    }
}

fn is_snake_case(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses a duration such as `10m`, `1h30m`, `45s`, `7d`, `2w` into microseconds (> 0).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    const HINT: &str = "use a number and a unit (s, m, h, d, w), such as 10m or 1h30m";
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(HINT.to_string());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(HINT.to_string());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| HINT.to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let seconds = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(HINT.to_string()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(seconds * MICROS_PER_SECOND)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "is too long".to_string())?;
    }
    if total == 0 {
        return Err("must be longer than zero".to_string());
    }
    Ok(total)
}

/// Microseconds displayed the way windows are written: `10m`, `1h30m`, `2d`.
#[derive(Clone, Copy, Debug)]
pub struct DurationText(pub i64);

impl std::fmt::Display for DurationText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0;
        if micros < 0 {
            f.write_str("-")?;
        }
        let micros = micros.unsigned_abs();
        let mut secs = micros / MICROS_PER_SECOND as u64;
        if secs == 0 {
            return if micros == 0 {
                f.write_str("0s")
            } else {
                write!(f, "{}ms", micros / 1000)
            };
        }
        for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= len {
                write!(f, "{}{unit}", secs / len)?;
                secs %= len;
            }
        }
        Ok(())
    }
}

/// Formats microseconds the way windows are written: `10m`, `1h30m`, `2d`.
pub fn format_duration(micros: i64) -> String {
    DurationText(micros).to_string()
}

/// Parses a non-negative decimal into an integer with `scale` implied decimal places.
pub fn parse_fixed(text: &str, scale: u32) -> Option<i64> {
    let (int_part, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int_part.is_empty()
        || int_part.len() > 12
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && frac.is_empty())
        || frac.len() > scale as usize
    {
        return None;
    }
    let mut value: i64 = int_part.parse().ok()?;
    value = value.checked_mul(10i64.pow(scale))?;
    let mut place = 10i64.pow(scale);
    for b in frac.bytes() {
        place /= 10;
        value += i64::from(b - b'0') * place;
    }
    Some(value)
}

/// Parses `0.9` or `90%` into parts per million.
fn parse_ratio(text: &str) -> Option<i64> {
    match text.strip_suffix('%') {
        Some(pct) => parse_fixed(pct.trim_end(), 4),
        None => parse_fixed(text, 6),
    }
}

/// Parses `HH:MM` or `HH:MM:SS` into seconds since midnight; `24:00` only as an end.
fn parse_time_of_day(text: &str, is_end: bool) -> Option<u32> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let num = |p: &str| -> Option<u32> {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse().ok())
            .flatten()
    };
    let h = num(parts[0])?;
    let m = num(parts[1])?;
    let s = if parts.len() == 3 { num(parts[2])? } else { 0 };
    if m >= 60 || s >= 60 {
        return None;
    }
    let total = h * 3600 + m * 60 + s;
    match (h, is_end) {
        (24, true) if total == SECONDS_PER_DAY => Some(total),
        (0..=23, _) => Some(total),
        _ => None,
    }
}

/// Seconds since midnight displayed as `HH:MM` or `HH:MM:SS`.
#[derive(Clone, Copy, Debug)]
pub struct TimeOfDayText(pub u32);

impl std::fmt::Display for TimeOfDayText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if s == 0 {
            write!(f, "{h:02}:{m:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

/// Formats seconds since midnight as `HH:MM` or `HH:MM:SS`.
pub fn format_time_of_day(secs: u32) -> String {
    TimeOfDayText(secs).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_microseconds() {
        assert_eq!(parse_duration("10m"), Ok(600 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("1h30m"), Ok(5_400 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("2d"), Ok(172_800 * MICROS_PER_SECOND));
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }

    #[test]
    fn durations_format_the_way_they_are_written() {
        for text in ["10m", "1h30m", "2d", "45s", "1d1h1m1s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn ratios_accept_fractions_and_percentages() {
        assert_eq!(parse_ratio("0.9"), Some(900_000));
        assert_eq!(parse_ratio("90%"), Some(900_000));
        assert_eq!(parse_ratio("90.5%"), Some(905_000));
        assert_eq!(parse_ratio("1"), Some(1_000_000));
        assert_eq!(parse_ratio("-0.9"), None);
        assert_eq!(parse_ratio("0.9x"), None);
    }

    #[test]
    fn times_of_day_allow_24_00_only_as_an_end() {
        assert_eq!(parse_time_of_day("01:00", false), Some(3600));
        assert_eq!(parse_time_of_day("04:59:59", false), Some(17_999));
        assert_eq!(parse_time_of_day("24:00", true), Some(86_400));
        assert_eq!(parse_time_of_day("24:00", false), None);
        assert_eq!(parse_time_of_day("1:00", false), None);
        assert_eq!(parse_time_of_day("12:60", false), None);
    }
}

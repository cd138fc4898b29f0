//! The intermediate representation of a rule set: what validation produces and what the
//! compiler, the engine's explanations and the brute-force reference evaluator read.
//!
//! [`ValidRules`] states the meaning of a rule set independently of the compiled form the hot
//! path runs: windows in microseconds, amounts in minor units, list names resolved to indices.
//! The feature catalogue (`Spec`, `SPECS`) says how each feature is parameterised and in
//! which [`Unit`] its thresholds are written; adding a feature starts here.

use jiff::tz::TimeZone;

use super::schema::{Action, Mode};
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
    /// The development score distribution, when given: band cuts and shares (parts per
    /// million).
    pub development: Option<Development>,
}

/// A scorecard's development score distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Development {
    /// Band cuts, ascending scores.
    pub band_cuts: Vec<i64>,
    /// Share per band, parts per million; one more than the cuts.
    pub shares: Vec<i64>,
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

/// What the current amount is measured against, over the customer's earlier transactions in a
/// window (the current one excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistoryRatio {
    /// amount / mean (parts per million).
    Mean,
    /// amount / median (parts per million).
    Median,
    /// amount / maximum (parts per million).
    Max,
    /// (amount − mean) / population stddev (parts per million).
    Zscore,
}

/// What a feature over transactions grouped by an entity (or a customer's confirmed frauds)
/// measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityMeasure {
    /// Transactions.
    Count,
    /// Sum of amounts.
    Sum,
    /// Distinct customers.
    DistinctCustomers,
    /// Transactions reported as confirmed fraud.
    FraudCount,
    /// Confirmed frauds over transactions (parts per million).
    FraudRate,
}

/// A feature read from an entity's state (`by: merchant_id`...), or from the customer's own
/// confirmed frauds (`by` absent or `customer_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityFeature {
    /// What is measured.
    pub measure: EntityMeasure,
    /// Whose transactions: an entity, or `None` for the customer's own.
    pub by: Option<crate::state::entity::EntityKind>,
    /// The window's length.
    pub window: Window,
    /// Only transactions older than this count: the window is (t − mature − w, t − mature].
    pub mature: i64,
    /// Fewest transactions in the window for a rate to be measured.
    pub min_count: u32,
}

impl EntityFeature {
    /// How far back it reads: its window plus its maturity.
    pub fn reach(&self) -> i64 {
        self.window.micros + self.mature
    }
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
    /// The amount against the customer's earlier transactions in the window; missing with
    /// fewer than the given number of them (at least 1).
    ToHistory(HistoryRatio, Window, u32),
    /// Transactions grouped by an entity, or the customer's confirmed frauds.
    ByEntity(EntityFeature),
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
            Feature::ToHistory(HistoryRatio::Mean, ..) => "amount_to_mean",
            Feature::ToHistory(HistoryRatio::Median, ..) => "amount_to_median",
            Feature::ToHistory(HistoryRatio::Max, ..) => "amount_to_max",
            Feature::ToHistory(HistoryRatio::Zscore, ..) => "amount_zscore",
            Feature::ByEntity(e) => match e.measure {
                EntityMeasure::Count => "count",
                EntityMeasure::Sum => "sum",
                EntityMeasure::DistinctCustomers => "distinct_customers",
                EntityMeasure::FraudCount => "fraud_count",
                EntityMeasure::FraudRate => "fraud_rate",
            },
        }
    }

    /// The history window the feature reads, if any.
    pub fn window(self) -> Option<Window> {
        match self {
            Feature::Window(_, w)
            | Feature::ListCount(w, _)
            | Feature::InHours(_, w, ..)
            | Feature::Stat(_, w)
            | Feature::ToHistory(_, w, _) => Some(w),
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
pub(super) struct Spec {
    pub(super) name: &'static str,
    /// Needs `window`.
    pub(super) window: bool,
    /// Needs `list`.
    pub(super) list: bool,
    /// Needs `from` and `to` as an hour range (not as the test).
    pub(super) hours: bool,
    /// Needs `of: count | sum`.
    pub(super) of: bool,
    /// Compared with thresholds in this unit.
    pub(super) unit: Option<Unit>,
    /// Tested with `in` / `not_in`.
    pub(super) membership: bool,
    /// Tested with `from` / `to` (time of day).
    pub(super) time_of_day: bool,
    /// Takes `min_count`.
    pub(super) min_count: bool,
    /// Takes `by`.
    pub(super) by: bool,
    /// Takes `mature_after`.
    pub(super) mature: bool,
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
        min_count: false,
        by: false,
        mature: false,
    }
}

const fn grouped(name: &'static str, unit: Unit) -> Spec {
    Spec {
        by: true,
        ..windowed(name, unit)
    }
}

const fn against_history(name: &'static str) -> Spec {
    Spec {
        min_count: true,
        ..windowed(name, Unit::Ratio)
    }
}

const fn windowed(name: &'static str, unit: Unit) -> Spec {
    Spec {
        window: true,
        ..spec(name, unit)
    }
}

/// Every feature a condition can name.
pub(super) const SPECS: [Spec; 46] = [
    grouped("count", Unit::Count),
    grouped("sum", Unit::Money),
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
    against_history("amount_to_mean"),
    against_history("amount_to_median"),
    against_history("amount_to_max"),
    against_history("amount_zscore"),
    grouped("distinct_customers", Unit::Count),
    Spec {
        mature: true,
        ..grouped("fraud_count", Unit::Count)
    },
    Spec {
        mature: true,
        min_count: true,
        ..grouped("fraud_rate", Unit::Ratio)
    },
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

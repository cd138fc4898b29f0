//! The rules file as written: serde types that mirror `rules.yaml` key for key.
//!
//! Unknown keys, unknown features, unknown actions and wrong YAML types are refused here by
//! serde itself (`deny_unknown_fields`, closed enums), with the line and column serde-saphyr
//! reports. Everything that needs more than the shape of the file (windows, thresholds, list
//! names, duplicate ids) is checked in `validate`, which keeps the spans captured here.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// IANA time zone for time-of-day features, e.g. `Asia/Shanghai`.
    pub timezone: Spanned<String>,
    /// Named lists (amounts, merchants, channels) referenced by rules.
    #[serde(default)]
    pub lists: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    /// The rules, evaluated in order.
    pub rules: Vec<Spanned<RuleDoc>>,
    /// The behaviour scorecard, if any.
    #[serde(default)]
    pub scorecard: Option<Spanned<ScorecardDoc>>,
}

/// A behaviour scorecard as banks write them: a base score, the points that double the odds,
/// and per characteristic (a feature) bins with points. The score is the base plus the points
/// of the bin each characteristic falls in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorecardDoc {
    /// Score at the base odds, e.g. 600.
    pub base_score: Spanned<String>,
    /// Good:bad odds at the base score, e.g. 50 (documents the calibration).
    #[serde(default)]
    pub base_odds: Option<Spanned<String>>,
    /// Points that double the odds (PDO), e.g. 20.
    pub points_to_double_odds: Spanned<String>,
    /// The characteristics and their bins.
    pub characteristics: Vec<Spanned<CharacteristicDoc>>,
    /// The score's distribution on the development sample, for drift monitoring: band cuts
    /// (scores, ascending) and the share of the sample in each band (one more than the cuts).
    #[serde(default)]
    pub development: Option<Spanned<DevelopmentDoc>>,
}

/// The development score distribution of a scorecard (written by `tripwire scorecard fit`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevelopmentDoc {
    /// Scores where a band ends and the next starts, ascending.
    pub band_cuts: Vec<Spanned<String>>,
    /// Share of the development sample per band: [−∞, cut 1), [cut 1, cut 2), ..., [last cut, ∞).
    pub shares: Vec<Spanned<String>>,
}

/// One scorecard characteristic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharacteristicDoc {
    /// A name for people.
    pub name: Spanned<String>,
    /// The feature binned, written like a condition without a test: `{ count: { window: 30d } }`.
    pub feature: Spanned<Condition>,
    /// The bins: `{ below: 2, points: -10 }`, `{ from: 2, below: 10, points: 5 }`,
    /// `{ from: 10, points: 20 }`, `{ missing: true, points: 0 }`.
    pub bins: Vec<Spanned<BinDoc>>,
}

/// One bin: the values in [from, below), or the missing value, and its points.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinDoc {
    /// Lower bound, inclusive; absent for the first bin.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// Upper bound, exclusive; absent for the last bin.
    #[serde(default)]
    pub below: Option<Spanned<String>>,
    /// This bin holds customers for whom the feature is missing.
    #[serde(default)]
    pub missing: Option<bool>,
    /// Points added to the score.
    pub points: Spanned<String>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// Unique snake_case id, reported in reasons and metrics.
    pub id: Spanned<String>,
    /// What the rule is for, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// What a match does.
    pub action: Spanned<Action>,
    /// `enforce` (default) or `shadow`.
    #[serde(default)]
    pub mode: Option<Spanned<Mode>>,
    /// The condition that makes the rule match.
    pub when: Spanned<Condition>,
}

/// What a matching rule asks for. Precedence: deny > review > allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let the transaction through (documents an explicit pass; never overrides review or deny).
    Allow,
    /// Let it through but send it to a person.
    Review,
    /// Stop it.
    Deny,
    /// Never changes the decision: adds the rule's id to the answer's `tags` (customer
    /// operations: limit increases, repricing, retention).
    Tag,
}

impl Action {
    /// The action's name as written in rules and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Deny => "deny",
            Action::Tag => "tag",
        }
    }
}

/// Whether a rule's match changes the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A match changes the decision.
    #[default]
    Enforce,
    /// A match is reported under `shadow` and never changes the decision.
    Shadow,
}

impl Mode {
    /// The mode's name as written in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// A condition: a combination of others, or one feature put to a test.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every sub-condition holds.
    All(Vec<Spanned<Condition>>),
    /// At least one sub-condition holds.
    Any(Vec<Spanned<Condition>>),
    /// The sub-condition does not hold.
    Not(Box<Spanned<Condition>>),
    /// Transactions in the window, the current one included.
    Count(Test),
    /// Sum of amounts in the window, the current one included.
    Sum(Test),
    /// Transactions in the window of exactly the current amount, the current one included.
    SameAmountCount(Test),
    /// Transactions in the window whose amount is in `list`, the current one included.
    ListCount(Test),
    /// Transactions in the window reported failed through `/v1/outcomes`.
    FailedCount(Test),
    /// The current amount.
    Amount(Test),
    /// Local time of day of the transaction, in the file's time zone.
    LocalTime(Test),
    /// Local hour (0–23) of the transaction, in the file's time zone.
    LocalHour(Test),
    /// Great-circle distance from the previous geotagged transaction, km.
    DistanceKm(Test),
    /// Speed needed to come from the previous geotagged transaction, km/h.
    SpeedKmh(Test),
    /// Time since the customer's credit line was granted.
    SinceCreditGrant(Test),
    /// The amount as a fraction of the customer's credit limit.
    AmountToLimit(Test),
    /// The transaction's channel.
    Channel(Test),
    /// The transaction's merchant.
    MerchantId(Test),
    /// Transactions in the window reported failed: their sum.
    FailedSum(Test),
    /// Transactions in the window reported settled.
    SettledCount(Test),
    /// Sum of transactions in the window reported settled.
    SettledSum(Test),
    /// Transactions in the window that were sent to review or denied.
    FlaggedCount(Test),
    /// Transactions in the window whose local time is in [from, to).
    CountInHours(Test),
    /// Sum of transactions in the window whose local time is in [from, to).
    SumInHours(Test),
    /// Sum of amounts in the window over the credit limit.
    DrawnToLimit(Test),
    /// Mean amount in the window.
    MeanAmount(Test),
    /// Most frequent amount in the window (the smallest on ties).
    ModeAmount(Test),
    /// 25th percentile of amounts in the window.
    #[serde(rename = "p25_amount")]
    P25Amount(Test),
    /// Median amount in the window.
    MedianAmount(Test),
    /// 75th percentile of amounts in the window.
    #[serde(rename = "p75_amount")]
    P75Amount(Test),
    /// Mean minus median of amounts in the window.
    MeanMinusMedian(Test),
    /// Standard deviation of amounts in the window (population).
    StddevAmount(Test),
    /// Coefficient of variation of amounts in the window (stddev / mean).
    CvAmount(Test),
    /// Inter-quartile range of amounts in the window (p75 − p25).
    IqrAmount(Test),
    /// Consecutive increases in amount ending at the current transaction.
    IncreasingStreak(Test),
    /// Consecutive decreases in amount ending at the current transaction.
    DecreasingStreak(Test),
    /// Time since the customer's previous transaction.
    SinceLastTransaction(Test),
    /// Last full month's count or sum over the monthly mean of the last three full months.
    #[serde(rename = "trend_1m_vs_3m")]
    Trend1mVs3m(Test),
    /// Last full month's count or sum over the month before.
    TrendMom(Test),
    /// The last three full months' count or sum over the three months before them.
    #[serde(rename = "trend_3m_vs_prev_3m")]
    Trend3mVsPrev3m(Test),
    /// Coefficient of variation of monthly transaction counts over the last 12 full months.
    MonthlyCountCv(Test),
    /// The behaviour score.
    Score(Test),
    /// The amount over the mean of the customer's earlier transactions in the window.
    AmountToMean(Test),
    /// The amount over the median of the customer's earlier transactions in the window.
    AmountToMedian(Test),
    /// The amount over the largest of the customer's earlier transactions in the window.
    AmountToMax(Test),
    /// How many standard deviations the amount lies above the mean of the customer's earlier
    /// transactions in the window (population standard deviation).
    AmountZscore(Test),
    /// Distinct customers seen on the entity named by `by` in the window.
    DistinctCustomers(Test),
    /// Transactions reported as confirmed fraud in the window (of the customer, or of the
    /// entity named by `by`), counting only those older than `mature_after`.
    FraudCount(Test),
    /// Confirmed frauds over transactions in the window, as `fraud_count`.
    FraudRate(Test),
}

/// The parameters and the comparison applied to one feature. Which keys apply depends on the
/// feature; `validate` refuses the ones that do not.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// Window over the customer's history, e.g. `10m`, `1h`, `7d`.
    pub window: Option<Spanned<String>>,
    /// List whose members are counted (`list_count`).
    pub list: Option<Spanned<String>>,
    /// value ≥ threshold
    pub at_least: Option<Spanned<String>>,
    /// value > threshold
    pub more_than: Option<Spanned<String>>,
    /// value ≤ threshold
    pub at_most: Option<Spanned<String>>,
    /// value < threshold
    pub less_than: Option<Spanned<String>>,
    /// value = threshold
    pub equals: Option<Spanned<String>>,
    /// value is a member of the named list
    #[serde(rename = "in")]
    pub in_list: Option<Spanned<String>>,
    /// value is not a member of the named list
    pub not_in: Option<Spanned<String>>,
    /// start of a time-of-day range, inclusive (`local_time`)
    pub from: Option<Spanned<String>>,
    /// end of a time-of-day range, exclusive (`local_time`)
    pub to: Option<Spanned<String>>,
    /// `count` or `sum`: what a trend compares
    pub of: Option<Spanned<String>>,
    /// Fewest earlier transactions in the window for the feature to be measured
    /// (`amount_to_*`, `amount_zscore`); fewer and it is missing.
    pub min_count: Option<Spanned<String>>,
    /// Whose transactions a windowed feature reads: `customer_id` (the default),
    /// `merchant_id`, `device_id`, `ip` or `channel`.
    pub by: Option<Spanned<String>>,
    /// `fraud_count` / `fraud_rate`: only transactions older than this count, since newer
    /// ones' labels are not known yet (the window is shifted back by it).
    pub mature_after: Option<Spanned<String>>,
}

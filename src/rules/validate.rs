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

use super::schema::{Action, Condition, Mode, RuleDoc, RulesFile, Test};
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

/// A measurable property of the transaction or of the customer's history.
///
/// Every feature's value is an integer in a fixed unit: counts; amounts in minor units; hours;
/// seconds of the day; metres; metres per hour; microseconds; parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Transactions in the window, current included.
    Count(Window),
    /// Sum of amounts in the window, current included (minor units).
    Sum(Window),
    /// Transactions in the window with exactly the current amount, current included.
    SameAmountCount(Window),
    /// Transactions in the window whose amount is in the list, current included.
    ListCount(Window, ListId),
    /// Transactions in the window reported failed.
    FailedCount(Window),
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
}

impl Feature {
    /// The feature's name as written in rules.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Count(_) => "count",
            Feature::Sum(_) => "sum",
            Feature::SameAmountCount(_) => "same_amount_count",
            Feature::ListCount(..) => "list_count",
            Feature::FailedCount(_) => "failed_count",
            Feature::Amount => "amount",
            Feature::LocalTime => "local_time",
            Feature::LocalHour => "local_hour",
            Feature::DistanceKm => "distance_km",
            Feature::SpeedKmh => "speed_kmh",
            Feature::SinceCreditGrant => "since_credit_grant",
            Feature::AmountToLimit => "amount_to_limit",
            Feature::Channel => "channel",
            Feature::MerchantId => "merchant_id",
        }
    }

    /// The history window the feature reads, if any.
    pub fn window(self) -> Option<Window> {
        match self {
            Feature::Count(w)
            | Feature::Sum(w)
            | Feature::SameAmountCount(w)
            | Feature::ListCount(w, _)
            | Feature::FailedCount(w) => Some(w),
            _ => None,
        }
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
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Count,
    Money,
    Hour,
    Km,
    Duration,
    Ratio,
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

    let mut windows: Vec<Window> = Vec::new();
    let mut list_windows: Vec<(Window, ListId)> = Vec::new();
    for rule in &rules {
        collect_windows(&rule.when, &mut windows, &mut list_windows);
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
        }),
        _ => {
            let mut problems = v.problems;
            problems.sort_by_key(|p| (p.line, p.column));
            Err(problems)
        }
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
        };
        self.leaf(cond, name, test).map(Cond::Leaf)
    }

    fn leaf(
        &mut self,
        cond: &'f Spanned<Condition>,
        name: &'static str,
        test: &'f Test,
    ) -> Option<Leaf> {
        let before = self.problems.len();
        let windowed = matches!(
            name,
            "count" | "sum" | "same_amount_count" | "list_count" | "failed_count"
        );
        let window = if windowed {
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
        let list = if name == "list_count" {
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

        let unit = match name {
            "count" | "same_amount_count" | "list_count" | "failed_count" => Some(Unit::Count),
            "sum" | "amount" => Some(Unit::Money),
            "local_hour" => Some(Unit::Hour),
            "distance_km" | "speed_kmh" => Some(Unit::Km),
            "since_credit_grant" => Some(Unit::Duration),
            "amount_to_limit" => Some(Unit::Ratio),
            _ => None,
        };
        let membership = matches!(name, "amount" | "channel" | "merchant_id");
        let time_of_day = name == "local_time";

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
            match unit {
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
            if !membership {
                self.problems
                    .push(at(value, format!("`{key}` does not apply to `{name}`")));
                continue;
            }
            if let Some(list) = self.list(value, name == "amount") {
                tests.push(LeafTest::InList { list, negate });
            }
        }
        match (time_of_day, &test.from, &test.to) {
            (true, Some(from), Some(to)) => {
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
            (true, _, _) => {
                test_keys += 1;
                self.problems.push(at(
                    cond,
                    "`local_time` needs both `from` and `to`, such as `{ from: \"01:00\", to: \"05:00\" }`",
                ));
            }
            (false, from, to) => {
                self.refuse(from, name, "from");
                self.refuse(to, name, "to");
            }
        }
        if test_keys == 0 {
            self.problems.push(at(
                cond,
                format!(
                    "`{name}` needs a test: {}",
                    if time_of_day {
                        "`from` and `to`"
                    } else if unit.is_some() && membership {
                        "one of at_least, more_than, at_most, less_than, equals, in, not_in"
                    } else if membership {
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
        let feature = match name {
            "count" => Feature::Count(window?),
            "sum" => Feature::Sum(window?),
            "same_amount_count" => Feature::SameAmountCount(window?),
            "list_count" => Feature::ListCount(window?, list?),
            "failed_count" => Feature::FailedCount(window?),
            "amount" => Feature::Amount,
            "local_time" => Feature::LocalTime,
            "local_hour" => Feature::LocalHour,
            "distance_km" => Feature::DistanceKm,
            "speed_kmh" => Feature::SpeedKmh,
            "since_credit_grant" => Feature::SinceCreditGrant,
            "amount_to_limit" => Feature::AmountToLimit,
            "channel" => Feature::Channel,
            _ => Feature::MerchantId,
        };
        Some(Leaf {
            feature,
            test: tests.pop()?,
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

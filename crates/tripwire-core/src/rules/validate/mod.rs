//! Validation: from the file as written ([`RulesFile`]) to rules whose every value is typed and
//! resolved ([`ValidRules`], see [`super::ir`]) — windows in microseconds, amounts in minor
//! units, list names to indices — or to every problem found, each with its line and column.
//!
//! [`validate`] runs named steps in order (time zone, lists, rules, scorecard, capacity
//! limits, list entries); each step adds problems and never stops the others, so one pass
//! reports everything wrong with a file.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use serde_saphyr::Spanned;

use super::ir::*;
use super::schema::{Condition, RuleDoc, RulesFile, Test};
use super::text::{parse_duration, parse_fixed, parse_ratio, parse_time_of_day};
use super::{MAX_DISTINCT_WINDOWS, MAX_LIST_WINDOWS, MAX_RULES, Problem};
use crate::txn::Amount;

mod scorecard;

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
    let mut v = Validator::new(file);
    let timezone = v.check_timezone(file);
    v.check_lists(file);
    v.check_rule_count(file);
    let rules = v.check_rules(file);
    // Step 5: the scorecard, when there is one.
    let scorecard = file.scorecard.as_ref().and_then(|doc| v.scorecard(doc));
    v.check_score_references(file, &rules);
    v.check_capacity(file, &rules, scorecard.as_ref());
    let lists = v.resolve_lists(file);
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

impl<'f> Validator<'f> {
    fn new(file: &'f RulesFile) -> Validator<'f> {
        let names: Vec<&String> = file.lists.keys().collect();
        Validator {
            problems: Vec::new(),
            list_index: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i))
                .collect(),
            lists_used_for_amounts: vec![false; names.len()],
        }
    }

    /// Step 1: the time zone names an IANA zone.
    fn check_timezone(&mut self, file: &RulesFile) -> Option<TimeZone> {
        match TimeZone::get(&file.timezone.value) {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.problems.push(at(
                    &file.timezone,
                    format!(
                        "unknown time zone {:?}: use an IANA name such as \"Asia/Shanghai\"",
                        file.timezone.value
                    ),
                ));
                None
            }
        }
    }

    /// Step 2: list names are snake_case and lists are not empty.
    fn check_lists(&mut self, file: &RulesFile) {
        for (name, list) in &file.lists {
            if !is_snake_case(name) {
                self.problems.push(at(
                    list,
                    format!("list name {name:?} must be snake_case (a-z, 0-9, _)"),
                ));
            }
            if list.value.is_empty() {
                self.problems
                    .push(at(list, format!("list `{name}` is empty")));
            }
        }
    }

    /// Step 3: the file has rules, and not too many.
    fn check_rule_count(&mut self, file: &'f RulesFile) {
        if file.rules.is_empty() {
            self.problems
                .push(at(&file.timezone, "the file declares no rules"));
        }
        if file.rules.len() > MAX_RULES {
            self.problems.push(at(
                &file.rules[MAX_RULES],
                format!(
                    "at most {MAX_RULES} rules are allowed, found {}",
                    file.rules.len()
                ),
            ));
        }
    }

    /// Step 4: rule ids are valid and unique; each rule's condition is valid.
    fn check_rules(&mut self, file: &'f RulesFile) -> Vec<ValidRule> {
        let mut seen_ids: HashMap<&str, u64> = HashMap::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        for rule in &file.rules {
            let id = &rule.value.id;
            if !is_snake_case(&id.value) || id.value.len() > 64 {
                self.problems.push(at(
                    id,
                    format!(
                        "rule id {:?} must be snake_case (a-z, 0-9, _), start with a letter and be at most 64 characters",
                        id.value
                    ),
                ));
            }
            if let Some(first_line) = seen_ids.insert(&id.value, id.referenced.line()) {
                self.problems.push(at(
                    id,
                    format!(
                        "duplicate rule id `{}` (first defined on line {first_line})",
                        id.value
                    ),
                ));
            }
            if let Some(when) = self.condition(&rule.value.when, 0) {
                rules.push(valid_rule(&rule.value, when));
            }
        }
        rules
    }

    /// Step 6: a rule that reads `score` needs a scorecard.
    fn check_score_references(&mut self, file: &RulesFile, rules: &[ValidRule]) {
        for rule in rules {
            if uses_score(&rule.when) && file.scorecard.is_none() {
                self.problems.push(Problem {
                    line: 0,
                    column: 0,
                    message: format!(
                        "rule `{}` reads `score` but the file declares no scorecard",
                        rule.id
                    ),
                });
            }
        }
    }

    /// Step 7: the rules fit the engine's fixed-size tables (distinct windows, hour ranges,
    /// statistics windows, list windows).
    fn check_capacity(
        &mut self,
        file: &RulesFile,
        rules: &[ValidRule],
        scorecard: Option<&ValidScorecard>,
    ) {
        let mut windows: Vec<Window> = Vec::new();
        let mut list_windows: Vec<(Window, ListId)> = Vec::new();
        for rule in rules {
            collect_windows(&rule.when, &mut windows, &mut list_windows);
        }
        for c in scorecard.into_iter().flat_map(|s| &s.characteristics) {
            collect_windows(
                &Cond::Leaf(Leaf {
                    feature: c.feature,
                    test: LeafTest::Compare(CmpOp::AtLeast, 0),
                }),
                &mut windows,
                &mut list_windows,
            );
        }
        windows.sort_unstable();
        windows.dedup();
        list_windows.sort_unstable();
        list_windows.dedup();
        if windows.len() > MAX_DISTINCT_WINDOWS {
            self.problems.push(at(
                &file.timezone,
                format!(
                    "the rules use {} distinct windows; at most {MAX_DISTINCT_WINDOWS} are supported",
                    windows.len()
                ),
            ));
        }
        let mut features = Vec::new();
        for rule in rules {
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
                Feature::Stat(_, w) | Feature::ToHistory(_, w, _) => Some(w),
                _ => None,
            })
            .collect();
        stats.sort_unstable();
        stats.dedup();
        let mut entity_features: Vec<EntityFeature> = features
            .iter()
            .filter_map(|f| match *f {
                Feature::ByEntity(e) => Some(e),
                _ => None,
            })
            .collect();
        entity_features.sort_unstable();
        entity_features.dedup();
        if entity_features.len() > super::compile::MAX_ENTITY_FEATURES {
            self.problems.push(at(
                &file.timezone,
                format!(
                    "the rules use {} distinct entity and confirmed-fraud features (by window, `by`, `mature_after` and `min_count`); at most {} are supported",
                    entity_features.len(),
                    super::compile::MAX_ENTITY_FEATURES
                ),
            ));
        }
        if hours.len() > super::compile::MAX_HOUR_WINDOWS {
            self.problems.push(at(
                &file.timezone,
                format!(
                    "the rules use {} distinct (window, hours) pairs in count_in_hours/sum_in_hours; at most {} are supported",
                    hours.len(),
                    super::compile::MAX_HOUR_WINDOWS
                ),
            ));
        }
        if stats.len() > super::compile::MAX_STAT_WINDOWS {
            self.problems.push(at(
                &file.timezone,
                format!(
                    "the rules read amount statistics over {} distinct windows; at most {} are supported",
                    stats.len(),
                    super::compile::MAX_STAT_WINDOWS
                ),
            ));
        }
        if list_windows.len() > MAX_LIST_WINDOWS {
            self.problems.push(at(
                &file.timezone,
                format!(
                    "the rules use {} distinct list_count (list, window) pairs; at most {MAX_LIST_WINDOWS} are supported",
                    list_windows.len()
                ),
            ));
        }
    }

    /// Step 8: lists compared with amounts hold amounts; every list resolved.
    fn resolve_lists(&mut self, file: &RulesFile) -> Vec<NamedList> {
        let mut lists = Vec::with_capacity(file.lists.len());
        for (i, (name, list)) in file.lists.iter().enumerate() {
            let mut amounts = Vec::new();
            if self.lists_used_for_amounts[i] {
                for entry in &list.value {
                    match Amount::parse(&entry.value) {
                        Ok(a) => amounts.push(a),
                        Err(e) => self.problems.push(at(
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
        lists
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
            Condition::AmountToMean(t) => ("amount_to_mean", t),
            Condition::AmountToMedian(t) => ("amount_to_median", t),
            Condition::AmountToMax(t) => ("amount_to_max", t),
            Condition::AmountZscore(t) => ("amount_zscore", t),
            Condition::DistinctCustomers(t) => ("distinct_customers", t),
            Condition::FraudCount(t) => ("fraud_count", t),
            Condition::FraudRate(t) => ("fraud_rate", t),
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
        let params = self.feature_params(cond, &spec, test);
        let (mut tests, test_keys) = self.feature_tests(cond, &spec, test, bare);
        self.check_test_count(cond, &spec, test_keys, bare);
        if self.problems.len() > before {
            return None;
        }
        let feature = build_feature(name, params)?;
        Some((feature, tests.pop()))
    }

    /// The parameters a feature's spec asks for (`window`, `list`, `of`, an hour range); a
    /// parameter it does not take is refused.
    fn feature_params(
        &mut self,
        cond: &'f Spanned<Condition>,
        spec: &Spec,
        test: &'f Test,
    ) -> FeatureParams {
        let name = spec.name;
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

        let min_count = if spec.min_count {
            match &test.min_count {
                Some(m) => match m.value.trim().parse::<u32>() {
                    Ok(n) if (1..=4096).contains(&n) => Some(n),
                    _ => {
                        self.problems.push(at(
                            m,
                            format!(
                                "`min_count` {:?} must be a whole number of earlier transactions from 1 to 4096",
                                m.value
                            ),
                        ));
                        None
                    }
                },
                None => Some(1),
            }
        } else {
            self.refuse(&test.min_count, name, "min_count");
            None
        };
        let by = if spec.by {
            match &test.by {
                Some(b) => match b.value.as_str() {
                    "customer_id" if name == "distinct_customers" => {
                        self.problems.push(at(
                            b,
                            "`distinct_customers` counts customers of another entity: `by` must be `merchant_id`, `device_id`, `ip` or `channel`",
                        ));
                        None
                    }
                    "customer_id" => Some(None),
                    other => match crate::state::entity::EntityKind::ALL
                        .into_iter()
                        .find(|k| k.field() == other)
                    {
                        Some(kind) => Some(Some(kind)),
                        None => {
                            self.problems.push(at(
                                b,
                                format!(
                                    "`by` must be `customer_id`, `merchant_id`, `device_id`, `ip` or `channel`, not {other:?}"
                                ),
                            ));
                            None
                        }
                    },
                },
                None if name == "distinct_customers" => {
                    self.problems.push(at(
                        cond,
                        "`distinct_customers` needs `by`, such as `by: device_id`",
                    ));
                    None
                }
                None => Some(None),
            }
        } else {
            self.refuse(&test.by, name, "by");
            None
        };
        let mature = if spec.mature {
            match &test.mature_after {
                Some(m) => match parse_duration(&m.value) {
                    Ok(micros) if micros <= MAX_WINDOW_MICROS => Some(micros),
                    Ok(_) => {
                        self.problems
                            .push(at(m, "`mature_after` is longer than the maximum of 400d"));
                        None
                    }
                    Err(e) => {
                        self.problems
                            .push(at(m, format!("bad `mature_after` {:?}: {e}", m.value)));
                        None
                    }
                },
                None => Some(0),
            }
        } else {
            self.refuse(&test.mature_after, name, "mature_after");
            None
        };
        FeatureParams {
            window,
            list,
            of,
            hours,
            min_count,
            by,
            mature,
        }
    }

    /// The tests written on a leaf (comparisons, list membership, a time-of-day range), and how
    /// many test keys were given.
    fn feature_tests(
        &mut self,
        cond: &'f Spanned<Condition>,
        spec: &Spec,
        test: &'f Test,
        bare: bool,
    ) -> (Vec<LeafTest>, usize) {
        let name = spec.name;
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
        (tests, test_keys)
    }

    /// A condition has exactly one test; a scorecard characteristic none, and a number to bin.
    fn check_test_count(
        &mut self,
        cond: &'f Spanned<Condition>,
        spec: &Spec,
        test_keys: usize,
        bare: bool,
    ) {
        let name = spec.name;
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

/// The parameters of a feature, each present when its spec asks for it and it is valid.
struct FeatureParams {
    window: Option<Window>,
    list: Option<ListId>,
    of: Option<Measure>,
    hours: Option<(u32, u32)>,
    min_count: Option<u32>,
    /// `Some(None)`: the customer; `Some(Some(kind))`: an entity.
    by: Option<Option<crate::state::entity::EntityKind>>,
    mature: Option<i64>,
}

/// The IR feature named `name` with its validated parameters.
fn build_feature(name: &str, params: FeatureParams) -> Option<Feature> {
    let FeatureParams {
        window,
        list,
        of,
        hours,
        min_count,
        by,
        mature,
    } = params;
    let against = |r| Some(Feature::ToHistory(r, window?, min_count?));
    let entity = |measure| {
        Some(Feature::ByEntity(EntityFeature {
            measure,
            by: by?,
            window: window?,
            mature: mature.unwrap_or(0),
            min_count: min_count.unwrap_or(1),
        }))
    };
    let measure = |m| match (m, by) {
        (WindowMeasure::Count, Some(Some(_))) => entity(EntityMeasure::Count),
        (WindowMeasure::Sum, Some(Some(_))) => entity(EntityMeasure::Sum),
        _ => Some(Feature::Window(m, window?)),
    };
    let stat = |s| Some(Feature::Stat(s, window?));
    match name {
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
        "amount_to_mean" => against(HistoryRatio::Mean),
        "amount_to_median" => against(HistoryRatio::Median),
        "amount_to_max" => against(HistoryRatio::Max),
        "amount_zscore" => against(HistoryRatio::Zscore),
        "distinct_customers" => entity(EntityMeasure::DistinctCustomers),
        "fraud_count" => entity(EntityMeasure::FraudCount),
        "fraud_rate" => entity(EntityMeasure::FraudRate),
        _ => Some(Feature::Score),
    }
}

fn is_snake_case(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

//! Replay and backtest: run a rule set over transaction history before it goes live.
//!
//! History is read ([`input`]), put in event-time order, and decided one transaction at a time
//! through the same [`Interceptor`], store and engine as `serve` — not a second implementation
//! that could drift. Each transaction's known outcome is recorded with it, so failure counts
//! build up as they did in production. The [`Report`] counts decisions and rule hits, measures
//! each rule against fraud labels when there are any, and with a candidate rule set lists the
//! transactions whose decision would change.

pub mod command;
mod entities;
pub mod generate;
pub mod generate_card;
pub mod input;
mod records;
mod split;

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

use crate::engine::Decision;
use crate::interceptor::Interceptor;
use crate::live_rules::LiveRules;
use crate::rules::{Action, RulesError};
use crate::state::{Store, StoreConfig};
use crate::txn::EventTime;
use input::Row;

/// Replay settings.
#[derive(Clone, Copy, Debug)]
pub struct ReplayConfig {
    /// Events kept per customer, as in `serve`.
    pub ring_capacity: usize,
    /// Customers kept, as in `serve`.
    pub max_customers: usize,
    /// Examples kept per kind of changed decision.
    pub examples: usize,
    /// Only rows at or after this event time are measured; earlier ones warm the state.
    pub measure_from: Option<EventTime>,
    /// Rows at or after this event time are not replayed (exclusive).
    pub measure_until: Option<EventTime>,
    /// Each row labelled fraud becomes a confirmed-fraud report this long after its
    /// transaction, applied in event-time order; `None`: labels are never shown to the rules.
    pub label_delay: Option<i64>,
    /// Customer parts decided in parallel (`--threads`), on at most one thread per core;
    /// `None`: one per core; 0: one thread in all.
    pub threads: Option<usize>,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig {
            ring_capacity: StoreConfig::default().ring_capacity,
            max_customers: 10_000_000,
            examples: 5,
            measure_from: None,
            measure_until: None,
            label_delay: None,
            threads: None,
        }
    }
}

/// How one rule did.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RuleStats {
    /// Rule id.
    pub id: String,
    /// enforce or shadow.
    pub mode: &'static str,
    /// What it asks for.
    pub action: &'static str,
    /// Transactions it matched.
    pub hits: u64,
    /// Matched and labelled fraud.
    pub fraud_hits: u64,
    /// Matched and labelled legitimate.
    pub legit_hits: u64,
    /// hits that were fraud / hits with a label.
    pub precision: Option<f64>,
    /// fraud it matched / all fraud.
    pub recall: Option<f64>,
    /// legitimate it matched / all legitimate.
    pub false_positive_rate: Option<f64>,
    /// Sum of the fraud amounts it matched.
    pub fraud_amount_caught: String,
}

/// How the decisions did against the labels.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Labelled {
    /// Labelled transactions.
    pub labelled: u64,
    /// Of which fraud.
    pub fraud: u64,
    /// Sum of fraud amounts.
    pub fraud_amount: String,
    /// Denied transactions scored against the labels.
    pub deny: Outcome,
    /// Reviewed or denied transactions scored against the labels.
    pub review_or_deny: Outcome,
}

/// Precision, recall, false-positive rate and fraud amount caught for one way of catching.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Outcome {
    /// Caught and fraud.
    pub true_positives: u64,
    /// Caught and legitimate.
    pub false_positives: u64,
    /// caught fraud / caught.
    pub precision: Option<f64>,
    /// caught fraud / fraud.
    pub recall: Option<f64>,
    /// caught legitimate / legitimate.
    pub false_positive_rate: Option<f64>,
    /// Fraud amount caught.
    pub fraud_amount_caught: String,
}

/// A transaction whose decision changes under the candidate rules.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Change {
    /// Input file and line.
    pub source: String,
    /// The transaction.
    pub transaction_id: String,
    /// The customer.
    pub customer_id: String,
    /// Decision under the live rules.
    pub from: &'static str,
    /// Decision under the candidate.
    pub to: &'static str,
    /// Rules that matched under the candidate.
    pub candidate_reasons: Vec<String>,
}

impl Report {
    /// The report as a self-contained HTML page: per-rule hits and precision, decisions over
    /// time, the changes against a candidate, recall by group, the score's quality.
    pub fn html(&self) -> String {
        use crate::report::{Chart, Series, escape, page, table};
        let labels: Vec<String> = self.rules.iter().map(|r| r.id.clone()).collect();
        let bars = |f: &dyn Fn(&RuleStats) -> f64| -> Vec<(f64, f64)> {
            self.rules
                .iter()
                .enumerate()
                .map(|(i, r)| (i as f64, f(r)))
                .collect()
        };
        let mut charts = vec![Chart {
            id: "rule-hits".into(),
            title: "Hits per rule".into(),
            kind: "bars",
            x_label: "rule".into(),
            y_label: "hits".into(),
            labels: labels.clone(),
            series: vec![Series {
                name: "hits".into(),
                points: bars(&|r| r.hits as f64),
            }],
        }];
        if self.labels.is_some() {
            charts.push(Chart {
                id: "rule-precision".into(),
                title: "Precision and recall per rule".into(),
                kind: "bars",
                x_label: "rule".into(),
                y_label: "share".into(),
                labels: labels.clone(),
                series: vec![
                    Series {
                        name: "precision".into(),
                        points: bars(&|r| r.precision.unwrap_or(0.0)),
                    },
                    Series {
                        name: "recall".into(),
                        points: bars(&|r| r.recall.unwrap_or(0.0)),
                    },
                ],
            });
        }
        let day = |k: usize| -> Vec<(f64, f64)> {
            self.decisions_by_day
                .iter()
                .enumerate()
                .map(|(i, d)| (i as f64, [d.1, d.2, d.3][k] as f64))
                .collect()
        };
        charts.push(Chart {
            id: "decisions-over-time".into(),
            title: format!(
                "Decisions per day ({} to {})",
                self.decisions_by_day.first().map_or("", |d| d.0.as_str()),
                self.decisions_by_day.last().map_or("", |d| d.0.as_str())
            ),
            kind: "line",
            x_label: "day".into(),
            y_label: "decisions".into(),
            labels: vec![],
            series: vec![
                Series {
                    name: "review".into(),
                    points: day(1),
                },
                Series {
                    name: "deny".into(),
                    points: day(2),
                },
            ],
        });
        if let Some(changes) = &self.changes {
            charts.push(Chart {
                id: "changes".into(),
                title: format!("Decisions the candidate changes: {}", changes.changed),
                kind: "bars",
                x_label: "from → to".into(),
                y_label: "transactions".into(),
                labels: changes.counts.keys().cloned().collect(),
                series: vec![Series {
                    name: "changed".into(),
                    points: changes
                        .counts
                        .values()
                        .enumerate()
                        .map(|(i, &c)| (i as f64, c as f64))
                        .collect(),
                }],
            });
        }
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let mut summary = format!(
            "<p>{} transactions replayed ({} duplicates, {} rows skipped, {} amounts normalised); decisions: {}</p>",
            self.transactions,
            self.duplicates,
            self.skipped_rows,
            self.amounts_normalised,
            escape(
                &self
                    .decisions
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        );
        if let Some(l) = &self.labels {
            summary.push_str(&format!(
                "<p>Labels: {} labelled, {} fraud. Reviewed or denied: recall {}, false-positive rate {}, precision {}.</p>",
                l.labelled, l.fraud, pct(l.review_or_deny.recall), pct(l.review_or_deny.false_positive_rate), pct(l.review_or_deny.precision)
            ));
        }
        if let Some(q) = &self.score_quality {
            summary.push_str(&format!(
                "<p>Score: AUC {:.4}, Gini {:.4}, KS {:.4}, average precision {:.4}.</p>",
                q.auc, q.gini, q.ks, q.average_precision
            ));
        }
        let rows: Vec<Vec<String>> = self
            .rules
            .iter()
            .map(|r| {
                vec![
                    escape(&r.id),
                    r.mode.into(),
                    r.action.into(),
                    r.hits.to_string(),
                    pct(r.precision),
                    pct(r.recall),
                    pct(r.false_positive_rate),
                    escape(&r.fraud_amount_caught),
                ]
            })
            .collect();
        let mut after = String::from("<h2>Rules</h2>");
        after.push_str(&table(
            &[
                "rule",
                "mode",
                "action",
                "hits",
                "precision",
                "recall",
                "fp rate",
                "fraud caught",
            ],
            &rows,
        ));
        if !self.groups.is_empty() {
            after.push_str("<h2>Recall by group</h2>");
            let rows: Vec<Vec<String>> = self
                .groups
                .iter()
                .map(|g| vec![escape(&g.group), g.fraud.to_string(), pct(g.recall)])
                .collect();
            after.push_str(&table(&["group", "fraud", "recall"], &rows));
        }
        page("Replay", &summary, &charts, &after)
    }
}

/// Decisions that change, counted from → to, with examples.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Changes {
    /// Transactions whose decision changes.
    pub changed: u64,
    /// `"allow→deny"` → count.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// A few examples of each kind.
    pub examples: Vec<Change>,
    /// Decisions of the candidate, by outcome.
    pub candidate_decisions: std::collections::BTreeMap<&'static str, u64>,
    /// The candidate's rules, each with its hits and label figures, in file order.
    pub candidate_rules: Vec<RuleStats>,
    /// The candidate's decisions against the labels, when the input has them.
    pub candidate_labels: Option<Labelled>,
}

/// What a replay found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Transactions replayed.
    pub transactions: u64,
    /// Rows skipped as malformed.
    pub skipped_rows: u64,
    /// Amounts written as binary floats with noise past the cents (`85.64999999999999`) and
    /// read as the cent meant.
    pub amounts_normalised: u64,
    /// Recall by group (`--group-by`), when the input has groups and labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRecall>,
    /// The scorecard's quality against the labels (AUC, Gini, KS, average precision), when the
    /// rules have a scorecard and the input has labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_quality: Option<crate::scorecard::quality::Quality>,
    /// Score bands (from: the band's lowest score, none for the first; deciles of the replayed
    /// scores) and the bad rate in each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_bands: Option<Vec<(Option<i64>, f64)>>,
    /// Decisions per UTC day of event time: (date, allow, review, deny).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions_by_day: Vec<(String, u64, u64, u64)>,
    /// Rows before `--from`, replayed to warm the state but not measured.
    pub warmup_rows: u64,
    /// The measured period's start (`--from`), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_from: Option<String>,
    /// The measured period's end, exclusive (`--until`), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_until: Option<String>,
    /// Transactions whose id repeated an earlier one of the same customer (answered with the
    /// first decision and not recorded again, as `serve` does).
    pub duplicates: u64,
    /// Decisions by outcome.
    pub decisions: std::collections::BTreeMap<&'static str, u64>,
    /// Per rule, in file order.
    pub rules: Vec<RuleStats>,
    /// Against the labels, when the input has them.
    pub labels: Option<Labelled>,
    /// With a candidate rule set.
    pub changes: Option<Changes>,
    /// Seconds spent deciding (reading excluded).
    pub seconds: f64,
    /// Transactions decided per second.
    pub per_second: f64,
}

/// Of one group's fraud (`--group-by`), what the rules caught.
#[derive(Clone, Debug, Serialize)]
pub struct GroupRecall {
    /// The group's value.
    pub group: String,
    /// Fraud rows in the group.
    pub fraud: u64,
    /// Share of them reviewed or denied.
    pub recall: Option<f64>,
    /// Per rule that hit any of them: the share it hit.
    pub rules: std::collections::BTreeMap<String, Option<f64>>,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A rule set did not load.
    #[error("{which} rules: {error}")]
    Rules {
        /// `live` or `candidate`.
        which: &'static str,
        /// Why.
        error: RulesError,
    },
    /// The decisions file could not be written.
    #[error("cannot write decisions: {0}")]
    Output(std::io::Error),
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn money(minor: i64) -> String {
    crate::txn::Amount::from_minor(minor).map_or_else(|| minor.to_string(), |a| a.to_string())
}

/// A seed for a run's stores, drawn afresh each run, as a server's store draws its keys.
fn fresh_seed() -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0)
}

/// A scoped thread's result, its panic passed on.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Puts rows in event-time order; rows with equal times keep their input order.
pub fn sort(rows: &mut [Row]) {
    rows.sort_by_key(|r| (r.at, r.file, r.line));
}

/// A decision kept per row: the action, or a duplicate's first action.
#[derive(Clone, Copy)]
pub(crate) struct Kept {
    action: Action,
}

impl Kept {
    fn of(decided: Result<&Decision, Action>) -> Kept {
        Kept {
            action: match decided {
                Ok(d) => d.action,
                Err(first) => first,
            },
        }
    }
}

/// Runs one rule set over the rows (already in event-time order). `extract` takes what the
/// caller needs from each decision (on the thread that made it: replay splits customers across
/// threads when it can, see [`split`]); `each` receives it on this thread, in row order.
pub(crate) fn run_one<T: Send>(
    rules: &[u8],
    which: &'static str,
    rows: &[Row],
    config: &ReplayConfig,
    extract: impl Fn(&Row, Result<&Decision, Action>, &crate::rules::RuleSet) -> T + Sync,
    mut each: impl FnMut(&Row, T, &crate::rules::RuleSet) -> Result<(), ReplayError>,
) -> Result<Vec<Kept>, ReplayError> {
    let live = LiveRules::new(rules, which).map_err(|error| ReplayError::Rules { which, error })?;
    let loaded = live.load_full();
    let progress = if rows.len() > 200_000 {
        indicatif::ProgressBar::new(rows.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .expect("a valid progress template"),
    );
    progress.set_prefix(which);
    if let Some(plan) = split::plan(rows, config, &loaded.set) {
        let job = split::Job {
            rules,
            which,
            rows,
            config,
        };
        let kept = split::run(plan, job, &loaded.set, &extract, each, &progress)?;
        progress.finish_and_clear();
        return Ok(kept);
    }
    let interceptor = Interceptor::new(
        Store::for_one_run(
            StoreConfig {
                max_customers: config.max_customers,
                ring_capacity: config.ring_capacity,
            },
            fresh_seed(),
        ),
        live,
    );
    let mut kept = Vec::with_capacity(rows.len());
    // One decision reused for every row: it is filled in place (see `engine::evaluate_into`).
    let mut decision = Decision::empty();
    // Labelled frauds waiting to be reported, by due time: rows are in event-time order and
    // the delay is one constant, so they come due in the order they were queued.
    let mut due: std::collections::VecDeque<(EventTime, usize)> = std::collections::VecDeque::new();
    for (i, row) in rows.iter().enumerate() {
        if config.label_delay.is_some() {
            while due.front().is_some_and(|&(at, _)| at <= row.at) {
                let (reported, j) = due.pop_front().expect("checked");
                report_fraud(&interceptor, &rows[j], reported);
            }
        }
        let decided = interceptor
            .replay(&loaded.set, &row.txn(), row.outcome, &mut decision)
            .map(|()| &decision);
        kept.push(Kept::of(decided));
        each(row, extract(row, decided, &loaded.set), &loaded.set)?;
        if let Some(delay) = config.label_delay
            && row.label == Some(true)
        {
            due.push_back((row.at.saturating_add(delay), i));
        }
        if i % 65_536 == 0 {
            progress.set_position(i as u64);
        }
    }
    progress.finish_and_clear();
    Ok(kept)
}

/// What a replay keeps of one decision.
pub(crate) struct Decided {
    action: Action,
    duplicate: bool,
    hits: crate::engine::Hits,
    shadow: crate::engine::Hits,
    tags: crate::engine::Hits,
    score: Option<i64>,
}

impl Decided {
    fn of(decided: Result<&Decision, Action>) -> Decided {
        match decided {
            // Copied as slices: `clone` goes element by element through an iterator.
            Ok(d) => Decided {
                action: d.action,
                duplicate: false,
                hits: crate::engine::Hits::from_slice(&d.hits),
                shadow: crate::engine::Hits::from_slice(&d.shadow),
                tags: crate::engine::Hits::from_slice(&d.tags),
                score: d.features.score,
            },
            Err(first) => Decided {
                action: first,
                duplicate: true,
                hits: Default::default(),
                shadow: Default::default(),
                tags: Default::default(),
                score: None,
            },
        }
    }
}

/// Reports a labelled row as confirmed fraud, as a gateway's `POST /v1/outcomes` with
/// `status: "fraud"` and the transaction's details would.
fn report_fraud(interceptor: &Interceptor, row: &Row, reported_at: EventTime) {
    let report = crate::txn::OutcomeReport {
        transaction_id: std::borrow::Cow::Borrowed(row.transaction_id()),
        customer_id: std::borrow::Cow::Borrowed(row.customer_id()),
        status: crate::txn::ReportedStatus::Fraud,
        fraud: crate::txn::FraudDetails {
            timestamp: Some(row.at),
            reported_at: Some(reported_at),
            merchant_id: row.merchant_id().map(std::borrow::Cow::Borrowed),
            device_id: row.device_id().map(std::borrow::Cow::Borrowed),
            ip: row.ip().map(std::borrow::Cow::Borrowed),
            channel: row.channel().map(std::borrow::Cow::Borrowed),
        },
    };
    // A fraud whose customer and entities are all gone reaches nothing: nothing to do.
    let _ = interceptor.record_outcome(&report);
}

#[derive(Serialize)]
struct DecisionLine<'a> {
    source: String,
    transaction_id: &'a str,
    customer_id: &'a str,
    timestamp: String,
    amount: String,
    decision: &'static str,
    duplicate: bool,
    reasons: Vec<&'a str>,
    shadow: Vec<&'a str>,
    tags: Vec<&'a str>,
    score: Option<i64>,
}

/// Per-rule hits and label figures of one rule set over a replay, filled row by row.
#[derive(Default)]
struct Tally {
    stats: Vec<RuleStats>,
    rule_amounts: Vec<i64>,
    /// Decisions by action (allow, review, deny, tag): an array, not a map keyed by name, since
    /// every row adds to it.
    by_action: [u64; 4],
    duplicates: u64,
    fraud: u64,
    legit: u64,
    fraud_amount: i64,
    /// (true positives, false positives, fraud amount) of denials.
    deny: (u64, u64, i64),
    /// The same for reviews and denials.
    flagged: (u64, u64, i64),
    /// Per group (`--group-by`): fraud rows, fraud reviewed or denied, and fraud hits per rule.
    groups: std::collections::BTreeMap<Box<str>, GroupTally>,
    /// Labelled rows by score and fraud, when the rules have a scorecard.
    scored: crate::scorecard::quality::ScoreCounts,
    /// Decisions per UTC day: allow, review, deny.
    daily: std::collections::BTreeMap<i64, [u64; 3]>,
    /// The day rows are coming in for, counted here and added to `daily` when another comes
    /// (rows come in time order, so that is once a day, not a look-up a row).
    today: Option<(i64, [u64; 3])>,
}

#[derive(Default)]
struct GroupTally {
    fraud: u64,
    flagged: u64,
    rule_hits: Vec<u64>,
}

impl Tally {
    fn add(&mut self, row: &Row, decided: &Decided, set: &crate::rules::RuleSet) {
        if self.stats.is_empty() {
            self.stats = set
                .rules()
                .iter()
                .map(|r| RuleStats {
                    id: r.id.to_string(),
                    mode: r.mode.as_str(),
                    action: r.action.as_str(),
                    ..RuleStats::default()
                })
                .collect();
            self.rule_amounts = vec![0; self.stats.len()];
        }
        let action = decided.action;
        self.by_action[action as usize] += 1;
        let day = row.at.div_euclid(86_400_000_000);
        if self.today.is_none_or(|(today, _)| today != day) {
            self.close_day();
            self.today = Some((day, [0; 3]));
        }
        if let Some((_, counts)) = &mut self.today {
            counts[match action {
                Action::Allow => 0,
                Action::Review => 1,
                _ => 2,
            }] += 1;
        }
        if let (Some(label), Some(score)) = (row.label, decided.score) {
            self.scored.add(score, label);
        }
        if let Some(label) = row.label {
            if label {
                self.fraud += 1;
                self.fraud_amount += row.amount.minor();
            } else {
                self.legit += 1;
            }
            let score = |caught: bool, tally: &mut (u64, u64, i64)| {
                if caught && label {
                    tally.0 += 1;
                    tally.2 += row.amount.minor();
                } else if caught {
                    tally.1 += 1;
                }
            };
            score(action == Action::Deny, &mut self.deny);
            score(
                matches!(action, Action::Deny | Action::Review),
                &mut self.flagged,
            );
        }
        if let (Some(true), Some(group)) = (row.label, row.group()) {
            let rules = self.stats.len();
            if !self.groups.contains_key(group) {
                self.groups.insert(group.into(), GroupTally::default());
            }
            let g = self.groups.get_mut(group).expect("inserted above");
            g.rule_hits.resize(rules, 0);
            g.fraud += 1;
            g.flagged += u64::from(matches!(action, Action::Deny | Action::Review));
            for &i in decided
                .hits
                .iter()
                .chain(&decided.shadow)
                .chain(&decided.tags)
            {
                g.rule_hits[i as usize] += 1;
            }
        }
        match decided {
            Decided {
                duplicate: true, ..
            } => self.duplicates += 1,
            d => {
                for &i in d.hits.iter().chain(&d.shadow).chain(&d.tags) {
                    let s = &mut self.stats[i as usize];
                    s.hits += 1;
                    match row.label {
                        Some(true) => {
                            s.fraud_hits += 1;
                            self.rule_amounts[i as usize] += row.amount.minor();
                        }
                        Some(false) => s.legit_hits += 1,
                        None => {}
                    }
                }
            }
        }
    }

    /// Adds the day being counted to the days counted.
    fn close_day(&mut self) {
        if let Some((day, counts)) = self.today.take() {
            let held = self.daily.entry(day).or_default();
            for (held, n) in held.iter_mut().zip(counts) {
                *held += n;
            }
        }
    }

    /// Decisions by the name of their action, for the actions given at least once.
    fn decisions(&self) -> std::collections::BTreeMap<&'static str, u64> {
        [Action::Allow, Action::Review, Action::Deny, Action::Tag]
            .into_iter()
            .filter(|&a| self.by_action[a as usize] > 0)
            .map(|a| (a.as_str(), self.by_action[a as usize]))
            .collect()
    }

    /// Recall by group: of each group's fraud, the share each rule hit and the share reviewed
    /// or denied.
    fn group_recall(&self) -> Vec<GroupRecall> {
        self.groups
            .iter()
            .map(|(group, g)| GroupRecall {
                group: group.to_string(),
                fraud: g.fraud,
                recall: ratio(g.flagged, g.fraud),
                rules: self
                    .stats
                    .iter()
                    .zip(&g.rule_hits)
                    .filter(|(_, hits)| **hits > 0)
                    .map(|(s, hits)| (s.id.clone(), ratio(*hits, g.fraud)))
                    .collect(),
            })
            .collect()
    }

    /// The per-rule figures and, when the input had labels, the label figures.
    fn finish(mut self) -> (Vec<RuleStats>, Option<Labelled>) {
        let (fraud, legit) = (self.fraud, self.legit);
        let labelled = fraud + legit > 0;
        for (s, amount) in self.stats.iter_mut().zip(&self.rule_amounts) {
            if labelled {
                s.precision = ratio(s.fraud_hits, s.fraud_hits + s.legit_hits);
                s.recall = ratio(s.fraud_hits, fraud);
                s.false_positive_rate = ratio(s.legit_hits, legit);
            }
            s.fraud_amount_caught = money(*amount);
        }
        let labels = labelled.then(|| {
            let outcome = |(tp, fp, amount): (u64, u64, i64)| Outcome {
                true_positives: tp,
                false_positives: fp,
                precision: ratio(tp, tp + fp),
                recall: ratio(tp, fraud),
                false_positive_rate: ratio(fp, legit),
                fraud_amount_caught: money(amount),
            };
            Labelled {
                labelled: fraud + legit,
                fraud,
                fraud_amount: money(self.fraud_amount),
                deny: outcome(self.deny),
                review_or_deny: outcome(self.flagged),
            }
        });
        (self.stats, labels)
    }
}

/// Replays `rows` (sorted with [`sort`]) under `rules`, and under `candidate` too when given.
/// `files` names the inputs for line references; `decisions` receives one JSON line per row.
pub fn run(
    rules: &[u8],
    candidate: Option<&[u8]>,
    rows: &[Row],
    files: &[String],
    skipped_rows: u64,
    config: &ReplayConfig,
    mut decisions: Option<&mut dyn Write>,
) -> Result<Report, ReplayError> {
    let started = Instant::now();
    // Rows are in event-time order: what comes at or after `--until` cannot touch the measured
    // period, so it is not replayed at all; what comes before `--from` warms the state.
    let rows = match config.measure_until {
        Some(until) => &rows[..rows.partition_point(|r| r.at < until)],
        None => rows,
    };
    let from = config.measure_from.unwrap_or(EventTime::MIN);
    let warmup_rows = rows.partition_point(|r| r.at < from) as u64;
    let mut report = Report {
        transactions: rows.len() as u64 - warmup_rows,
        skipped_rows,
        warmup_rows,
        measured_from: config.measure_from.map(crate::txn::format_timestamp),
        measured_until: config.measure_until.map(crate::txn::format_timestamp),
        ..Report::default()
    };
    let source = |row: &Row| {
        format!(
            "{}:{}",
            files.get(row.file as usize).map_or("?", String::as_str),
            row.line
        )
    };
    let mut tally = Tally::default();
    let keep = |row: &Row, decided: Result<&Decision, Action>, _: &crate::rules::RuleSet| {
        (row.at >= from).then(|| Decided::of(decided))
    };
    // Counted here, as the rows come back, rather than in a pass of their own before.
    let mut amounts_normalised = 0u64;
    let live = run_one(rules, "live", rows, config, keep, |row, decided, set| {
        amounts_normalised += u64::from(row.amount_normalised);
        let Some(decided) = decided else {
            return Ok(());
        };
        tally.add(row, &decided, set);
        let action = decided.action;
        if let Some(out) = decisions.as_deref_mut() {
            let ids = |hits: &crate::engine::Hits| {
                hits.iter().map(|&i| &*set.rules()[i as usize].id).collect()
            };
            let line = DecisionLine {
                source: source(row),
                transaction_id: row.transaction_id(),
                customer_id: row.customer_id(),
                timestamp: crate::txn::format_timestamp(row.at),
                amount: row.amount.to_string(),
                decision: action.as_str(),
                duplicate: decided.duplicate,
                reasons: ids(&decided.hits),
                shadow: ids(&decided.shadow),
                tags: ids(&decided.tags),
                score: decided.score,
            };
            serde_json::to_writer(&mut *out, &line).map_err(|e| ReplayError::Output(e.into()))?;
            out.write_all(b"\n").map_err(ReplayError::Output)?;
        }
        Ok(())
    })?;
    report.amounts_normalised = amounts_normalised;
    report.groups = tally.group_recall();
    tally.close_day();
    report.decisions_by_day = tally
        .daily
        .iter()
        .map(|(&day, c)| {
            let date = jiff::Timestamp::from_second(day * 86_400)
                .map(|t| t.strftime("%Y-%m-%d").to_string())
                .unwrap_or_default();
            (date, c[0], c[1], c[2])
        })
        .collect();
    if tally.scored.rows_and_bads().1 > 0 {
        let cuts = tally.scored.bands();
        report.score_bands = Some(
            tally
                .scored
                .bad_rates(&cuts)
                .iter()
                .enumerate()
                .map(|(i, &(_, rate))| (i.checked_sub(1).map(|j| cuts[j]), rate))
                .collect(),
        );
        report.score_quality = Some(tally.scored.quality());
    }
    report.decisions = tally.decisions();
    report.duplicates = tally.duplicates;
    (report.rules, report.labels) = tally.finish();

    if let Some(candidate) = candidate {
        let mut changes = Changes::default();
        let mut per_kind: std::collections::BTreeMap<String, usize> = Default::default();
        let mut index = 0usize;
        let mut tally = Tally::default();
        run_one(
            candidate,
            "candidate",
            rows,
            config,
            keep,
            |row, decided, set| {
                let was = live[index].action;
                index += 1;
                let Some(decided) = decided else {
                    return Ok(());
                };
                tally.add(row, &decided, set);
                let to = decided.action;
                *changes.candidate_decisions.entry(to.as_str()).or_default() += 1;
                if was != to {
                    changes.changed += 1;
                    let kind = format!("{}→{}", was.as_str(), to.as_str());
                    *changes.counts.entry(kind.clone()).or_default() += 1;
                    let shown = per_kind.entry(kind).or_default();
                    if *shown < config.examples {
                        *shown += 1;
                        changes.examples.push(Change {
                            source: source(row),
                            transaction_id: row.transaction_id().to_string(),
                            customer_id: row.customer_id().to_string(),
                            from: was.as_str(),
                            to: to.as_str(),
                            candidate_reasons: decided
                                .hits
                                .iter()
                                .map(|&i| set.rules()[i as usize].id.to_string())
                                .collect(),
                        });
                    }
                }
                Ok(())
            },
        )?;
        (changes.candidate_rules, changes.candidate_labels) = tally.finish();
        report.changes = Some(changes);
    }
    report.seconds = started.elapsed().as_secs_f64();
    let passes = if candidate.is_some() { 2.0 } else { 1.0 };
    report.per_second = if report.seconds > 0.0 {
        rows.len() as f64 * passes / report.seconds
    } else {
        0.0
    };
    Ok(report)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

impl Report {
    /// The report as a readable table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} transactions replayed ({} duplicates, {} rows skipped) in {:.2} s, {:.0} a second",
            self.transactions, self.duplicates, self.skipped_rows, self.seconds, self.per_second
        );
        if let Some(from) = &self.measured_from {
            let _ = writeln!(
                out,
                "measured from {from}{}; {} earlier rows warmed the state",
                self.measured_until
                    .as_ref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default(),
                self.warmup_rows
            );
        } else if let Some(until) = &self.measured_until {
            let _ = writeln!(out, "measured until {until}");
        }
        if self.amounts_normalised > 0 {
            let _ = writeln!(
                out,
                "{} amounts normalised: written as binary floats with noise past the cents (85.64999999999999 read as 85.65)",
                self.amounts_normalised
            );
        }
        let d = |k: &str| self.decisions.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "decisions: allow {}, review {}, deny {}",
            d("allow"),
            d("review"),
            d("deny")
        );
        let _ = writeln!(out);
        write_rules(&mut out, &self.rules, self.labels.as_ref());
        if let Some(q) = &self.score_quality {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "score: {} labelled rows, {} fraud: AUC {:.4}, Gini {:.4}, KS {:.4}, average precision {:.4}",
                q.rows, q.bads, q.auc, q.gini, q.ks, q.average_precision
            );
            for (from, rate) in self.score_bands.iter().flatten() {
                let _ = writeln!(
                    out,
                    "  score from {:>6}: fraud rate {:>6.2}%",
                    from.map_or("-inf".to_string(), |f| f.to_string()),
                    100.0 * rate
                );
            }
        }
        if !self.groups.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "recall by group (fraud reviewed or denied; rules that hit it):"
            );
            for g in &self.groups {
                let rules: Vec<String> = g
                    .rules
                    .iter()
                    .map(|(id, r)| format!("{id} {}", pct(*r)))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<24} {:>7} fraud  recall {:>7}  {}",
                    g.group,
                    g.fraud,
                    pct(g.recall),
                    rules.join(", ")
                );
            }
        }
        if let Some(c) = &self.changes {
            let _ = writeln!(out);
            let _ = writeln!(out, "candidate: {} decisions change", c.changed);
            for (kind, n) in &c.counts {
                let _ = writeln!(out, "  {kind:<16} {n}");
            }
            for e in &c.examples {
                let _ = writeln!(
                    out,
                    "  e.g. {} {} (customer {}): {} → {} [{}]",
                    e.source,
                    e.transaction_id,
                    e.customer_id,
                    e.from,
                    e.to,
                    e.candidate_reasons.join(", ")
                );
            }
            let d = |k: &str| c.candidate_decisions.get(k).copied().unwrap_or(0);
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "candidate decisions: allow {}, review {}, deny {}",
                d("allow"),
                d("review"),
                d("deny")
            );
            let _ = writeln!(out);
            write_rules(&mut out, &c.candidate_rules, c.candidate_labels.as_ref());
        }
        out
    }
}

/// The per-rule table, then the label figures when there are labels.
fn write_rules(out: &mut String, rules: &[RuleStats], labels: Option<&Labelled>) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{:<28} {:<8} {:<7} {:>9}",
        "rule", "mode", "action", "hits"
    );
    if labels.is_some() {
        let _ = write!(
            out,
            " {:>10} {:>8} {:>8} {:>16}",
            "precision", "recall", "fp rate", "fraud caught"
        );
    }
    let _ = writeln!(out);
    for r in rules {
        let _ = write!(
            out,
            "{:<28} {:<8} {:<7} {:>9}",
            r.id, r.mode, r.action, r.hits
        );
        if labels.is_some() {
            let _ = write!(
                out,
                " {:>10} {:>8} {:>8} {:>16}",
                pct(r.precision),
                pct(r.recall),
                pct(r.false_positive_rate),
                r.fraud_amount_caught
            );
        }
        let _ = writeln!(out);
    }
    if let Some(l) = labels {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "labels: {} labelled, {} fraud ({} in amount)",
            l.labelled, l.fraud, l.fraud_amount
        );
        for (name, o) in [("deny", &l.deny), ("review or deny", &l.review_or_deny)] {
            let _ = writeln!(
                out,
                "  {name:<15} precision {:>7}  recall {:>7}  fp rate {:>7}  fraud caught {}",
                pct(o.precision),
                pct(o.recall),
                pct(o.false_positive_rate),
                o.fraud_amount_caught
            );
        }
    }
}

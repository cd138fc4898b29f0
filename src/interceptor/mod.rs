//! The decision path in process, without HTTP: parse → shard lock → duplicate check → evaluate
//! → record → unlock → write the answer. The server, the benches and the tests all call this,
//! so what is measured and tested is what serves.

pub mod upkeep;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

use crate::engine::explain::Explanation;
use crate::engine::{self, Decision, Hits};
use crate::live_rules::{LiveRules, LoadedRules};
use crate::rules::Action;
use crate::rules::RuleSet;
use crate::state::journal::Journal;
use crate::state::{Event, Outcome, Store};
use crate::txn::{self, CreditLine, EventTime, OutcomeReport, OutcomeStatus, Txn, TxnError};

/// How far ahead of the wall clock an event time may move the watermark used to find idle
/// customers. Event times drive every window; this cap only stops one far-future timestamp
/// from making every other customer look idle.
const WATERMARK_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;

/// Extra history kept past the longest window before a customer counts as idle, so that
/// transactions arriving a little out of order still see it.
const IDLE_GRACE_MICROS: i64 = 15 * 60 * 1_000_000;

/// When rules read travel, the previous location matters for as long as any journey could be
/// too fast: half the earth's circumference at 900 km/h is about 22 hours.
const TRAVEL_HORIZON_MICROS: i64 = 24 * 3_600 * 1_000_000;

/// When rules read monthly trends or the time since the last transaction, a customer's state
/// matters for as long as the month buckets reach back: thirteen months of 31 days. Sweeping
/// earlier would wipe the trends of a customer who pauses for a season, and make a customer
/// silent for three months vanish from `?tag=` scans that look for exactly them.
const MONTHS_HORIZON_MICROS: i64 = 13 * 31 * 86_400 * 1_000_000;

/// What one decision came to, for metrics and logs.
#[derive(Debug)]
pub struct DecideSummary {
    /// The decision returned.
    pub action: Action,
    /// The transaction id had been decided before; its first decision was returned.
    pub duplicate: bool,
    /// Enforced rules that matched (indices into the rule set used).
    pub hits: Hits,
    /// Shadow rules that matched.
    pub shadow: Hits,
    /// Tag rules that matched.
    pub tags: Hits,
    /// The behaviour score, when the rules have a scorecard.
    pub score: Option<i64>,
    /// The rule set the decision used (hit indices point into it).
    pub rules: arc_swap::Guard<Arc<LoadedRules>>,
}

/// Why an outcome report was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeError {
    /// The customer is not in memory (never seen, or evicted).
    #[error("customer_id: no customer {0:?} is held")]
    UnknownCustomer(String),
    /// The customer has no recent transaction with that id.
    #[error(
        "transaction_id: no recent transaction {transaction_id:?} for customer {customer_id:?}"
    )]
    UnknownTransaction {
        /// The customer.
        customer_id: String,
        /// The transaction.
        transaction_id: String,
    },
}

/// The interceptor: customer state plus the live rules.
#[derive(Debug)]
pub struct Interceptor {
    store: Store,
    rules: LiveRules,
    /// Where changes are journalled when state persists.
    journal: Option<Arc<Journal>>,
}

impl AsRef<Store> for Interceptor {
    fn as_ref(&self) -> &Store {
        &self.store
    }
}

/// A transaction id decided before: its first decision, and when that transaction happened.
struct Duplicate {
    action: Action,
    first_at: EventTime,
}

fn wall_clock_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Interceptor {
    /// An interceptor over `store` deciding with `rules`.
    pub fn new(store: Store, rules: LiveRules) -> Interceptor {
        Interceptor {
            store,
            rules,
            journal: None,
        }
    }

    /// Journals every change to customer state (see `state::persist`).
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Interceptor {
        self.journal = Some(journal);
        self
    }

    /// The customer store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The journal, when state persists.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// The live rules.
    pub fn rules(&self) -> &LiveRules {
        &self.rules
    }

    /// Decides on a `POST /v1/decide` body, writing the JSON answer into `out`.
    /// A body that is not a valid transaction changes nothing.
    pub fn decide(&self, body: &[u8], out: &mut Vec<u8>) -> Result<DecideSummary, TxnError> {
        let txn = txn::parse_decide(body)?;
        Ok(self.decide_txn(&txn, out))
    }

    /// Decides on a validated transaction, writing the JSON answer into `out`.
    pub fn decide_txn(&self, txn: &Txn<'_>, out: &mut Vec<u8>) -> DecideSummary {
        let rules = self.rules.load();
        let mut decision = Decision::empty();
        let evaluated = self.evaluate_and_record(&rules.set, txn, None, &mut decision);
        self.store.observe_event_time(
            txn.at
                .min(wall_clock_micros().saturating_add(WATERMARK_SKEW_MICROS)),
        );
        match evaluated {
            Ok(()) => {
                write_answer(out, &rules, txn, &decision);
                DecideSummary {
                    action: decision.action,
                    duplicate: false,
                    hits: decision.hits,
                    shadow: decision.shadow,
                    tags: decision.tags,
                    score: decision.features.score,
                    rules,
                }
            }
            Err(Duplicate { action, first_at }) => {
                write_duplicate(out, &rules, txn, action, first_at);
                DecideSummary {
                    action,
                    duplicate: true,
                    hits: Hits::new(),
                    shadow: Hits::new(),
                    tags: Hits::new(),
                    score: None,
                    rules,
                }
            }
        }
    }

    /// The decision itself, under the customer's shard lock: duplicate check, credit line,
    /// evaluation, recording (ring, months, journal). `outcome`, when known already (replay of
    /// history), is recorded with the event. A fresh decision is written into `decision`.
    fn evaluate_and_record(
        &self,
        set: &RuleSet,
        txn: &Txn<'_>,
        outcome: Option<OutcomeStatus>,
        decision: &mut Decision,
    ) -> Result<(), Duplicate> {
        let txn_hash = self.store.txn_hash(&txn.customer_id, &txn.transaction_id);
        self.store
            .with_customer(&txn.customer_id, |record, capacity| {
                if let Some(first) = record.ring.find(txn_hash) {
                    return Err(Duplicate {
                        action: first.decision(),
                        first_at: first.at,
                    });
                }
                if let Some(line) = txn.credit_line
                    && record.offer_credit_line(line)
                    && let Some(journal) = &self.journal
                {
                    journal.credit_line(&txn.customer_id, line);
                }
                engine::evaluate_into(set, &record.history(), Some(txn), txn.at, decision);
                let mut event = Event::new(txn.at, txn_hash, txn.amount, txn.geo, decision.action);
                if let Some(status) = outcome {
                    event.set_outcome(status.into());
                }
                // The duplicate check above already looked for this transaction.
                record.record_new(event, capacity);
                if set.needs.months {
                    let month = set.zone.month_of(txn.at);
                    let months = record.months.get_or_insert_with(Default::default);
                    months.add(month, txn.amount.minor());
                    if outcome == Some(OutcomeStatus::Failed) {
                        months.fail(month);
                    }
                }
                if let Some(journal) = &self.journal {
                    journal.event(&txn.customer_id, &event);
                }
                Ok(())
            })
    }

    /// Decides on a transaction of recorded history and records it with its outcome, as
    /// `serve` would have: same store, same engine, no answer written. For replay. The
    /// decision is written into `decision`; a duplicate returns its first decision's action.
    pub fn replay(
        &self,
        set: &RuleSet,
        txn: &Txn<'_>,
        outcome: Option<OutcomeStatus>,
        decision: &mut Decision,
    ) -> Result<(), Action> {
        match self.evaluate_and_record(set, txn, outcome, decision) {
            Ok(()) => {
                self.store.observe_event_time(txn.at);
                Ok(())
            }
            Err(Duplicate { action, .. }) => Err(action),
        }
    }

    /// Records a customer's new or changed credit line (`PUT /v1/customers/{id}/credit-line`).
    /// A line granted earlier than the one held is ignored as a late, out-of-order message.
    pub fn set_credit_line(&self, customer_id: &str, line: CreditLine) {
        self.store.with_customer(customer_id, |record, _| {
            if record.offer_credit_line(line)
                && let Some(journal) = &self.journal
            {
                journal.credit_line(customer_id, line);
            }
        });
    }

    /// Applies a gateway's outcome report to the recorded transaction.
    pub fn record_outcome(&self, report: &OutcomeReport<'_>) -> Result<(), OutcomeError> {
        let txn_hash = self
            .store
            .txn_hash(&report.customer_id, &report.transaction_id);
        let found = self
            .store
            .with_existing(&report.customer_id, |record| {
                let status: Outcome = report.status.into();
                let Some(event) = record.ring.find_mut(txn_hash) else {
                    return false;
                };
                let newly_failed = status == Outcome::Failed && event.outcome() != Outcome::Failed;
                event.set_outcome(status);
                let at = event.at;
                if newly_failed && let Some(months) = record.months.as_deref_mut() {
                    months.fail(self.rules.load().set.zone.month_of(at));
                }
                let found = true;
                if found && let Some(journal) = &self.journal {
                    journal.outcome(&report.customer_id, txn_hash, report.status.into());
                }
                found
            })
            .ok_or_else(|| OutcomeError::UnknownCustomer(report.customer_id.to_string()))?;
        if found {
            Ok(())
        } else {
            Err(OutcomeError::UnknownTransaction {
                customer_id: report.customer_id.to_string(),
                transaction_id: report.transaction_id.to_string(),
            })
        }
    }

    /// Drops the history of customers idle past what any rule can look at; returns the number
    /// of customers removed. Idleness is measured on event time, against the latest event
    /// time seen.
    pub fn sweep_idle(&self) -> usize {
        let Some(watermark) = self.store.watermark() else {
            return 0;
        };
        let rules = self.rules.load();
        let mut horizon = rules.set.horizon();
        if rules.set.needs.geo {
            horizon = horizon.max(TRAVEL_HORIZON_MICROS);
        }
        if rules.set.needs.months || rules.set.needs.since_last {
            horizon = horizon.max(MONTHS_HORIZON_MICROS);
        }
        self.store.sweep_idle(
            watermark
                .saturating_sub(horizon)
                .saturating_sub(IDLE_GRACE_MICROS),
        )
    }
}

/// The reasons (or shadow hits) of a decision, serialised one by one.
struct ReasonList<'a> {
    rules: &'a LoadedRules,
    hits: &'a Hits,
    decision: &'a Decision,
    txn: &'a Txn<'a>,
}

impl Serialize for ReasonList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.hits.len()))?;
        for &rule in self.hits {
            seq.serialize_element(&Reason {
                rules: self.rules,
                rule,
                decision: self.decision,
                txn: self.txn,
            })?;
        }
        seq.end()
    }
}

struct Reason<'a> {
    rules: &'a LoadedRules,
    rule: u16,
    decision: &'a Decision,
    txn: &'a Txn<'a>,
}

impl Serialize for Reason<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rule = &self.rules.set.rules[self.rule as usize];
        let mut st = s.serialize_struct("Reason", 3)?;
        st.serialize_field("rule", &*rule.id)?;
        st.serialize_field("action", rule.action.as_str())?;
        st.serialize_field(
            "message",
            &Message(Explanation {
                set: &self.rules.set,
                rule: self.rule,
                features: &self.decision.features,
                txn: Some(self.txn),
            }),
        )?;
        st.end()
    }
}

/// Serialises a `Display` as a JSON string without an intermediate `String`.
struct Message<T>(T);

impl<T: std::fmt::Display> Serialize for Message<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct Answer<'a, R: Serialize> {
    transaction_id: &'a str,
    decision: &'static str,
    reasons: R,
    shadow: R,
    tags: TagList<'a>,
    score: Option<i64>,
    rules_version: &'a str,
}

/// The ids of matching tag rules, serialised as a list of strings.
struct TagList<'a> {
    rules: &'a LoadedRules,
    hits: &'a Hits,
}

impl Serialize for TagList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.hits.len()))?;
        for &i in self.hits {
            seq.serialize_element(&*self.rules.set.rules[i as usize].id)?;
        }
        seq.end()
    }
}

fn write_answer(out: &mut Vec<u8>, rules: &LoadedRules, txn: &Txn<'_>, decision: &Decision) {
    let list = |hits| ReasonList {
        rules,
        hits,
        decision,
        txn,
    };
    let answer = Answer {
        transaction_id: &txn.transaction_id,
        decision: decision.action.as_str(),
        reasons: list(&decision.hits),
        shadow: list(&decision.shadow),
        tags: TagList {
            rules,
            hits: &decision.tags,
        },
        score: decision.features.score,
        rules_version: &rules.version.label,
    };
    serde_json::to_writer(out, &answer).expect("writing JSON to a Vec cannot fail");
}

#[derive(Serialize)]
struct DuplicateReason<'a> {
    rule: &'static str,
    action: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct DuplicateAnswer<'a> {
    transaction_id: &'a str,
    decision: &'static str,
    reasons: [DuplicateReason<'a>; 1],
    shadow: [&'a str; 0],
    tags: [&'a str; 0],
    score: Option<i64>,
    rules_version: &'a str,
    duplicate: bool,
}

fn write_duplicate(
    out: &mut Vec<u8>,
    rules: &LoadedRules,
    txn: &Txn<'_>,
    action: Action,
    first_at: EventTime,
) {
    let message = format!(
        "transaction_id already decided ({}) for the transaction at {}; the first decision is returned and nothing is recorded again",
        action.as_str(),
        txn::format_timestamp(first_at)
    );
    let answer = DuplicateAnswer {
        transaction_id: &txn.transaction_id,
        decision: action.as_str(),
        reasons: [DuplicateReason {
            rule: "duplicate_transaction",
            action: action.as_str(),
            message: &message,
        }],
        shadow: [],
        tags: [],
        score: None,
        rules_version: &rules.version.label,
        duplicate: true,
    };
    serde_json::to_writer(out, &answer).expect("writing JSON to a Vec cannot fail");
}

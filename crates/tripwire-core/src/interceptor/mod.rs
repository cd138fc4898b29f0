//! The decision path in process, without HTTP: parse → shard lock → duplicate check → evaluate
//! → record → unlock → write the answer. The server, the benches and the tests all call this,
//! so what is measured and tested is what serves.

mod answer;
pub mod upkeep;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::{self, Decision, Hits};
use crate::live_rules::{LiveRules, LoadedRules};
use crate::rules::Action;
use crate::rules::RuleSet;
use crate::rules::ir::EntityMeasure;
use crate::state::entity::{BUCKET_MICROS, EntityKind, EntityRecord, EntityStore, EntityValue};
use crate::state::journal::EntityKeys;
use crate::state::journal::{ChangeSink, Frame, Journal};
use crate::state::persist;
use crate::state::{Event, Outcome, Store};
use crate::txn::{
    self, CreditLine, EventTime, OutcomeReport, OutcomeStatus, ReportedStatus, Txn, TxnError,
};

pub use crate::state::DEFAULT_MAX_ENTITIES;

/// How far ahead of the wall clock an event time may move the watermark used to find idle
/// customers. Event times drive every window; this cap only stops one far-future timestamp
/// from making every other customer look idle.
const WATERMARK_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;

/// Extra history kept past the longest window before a customer counts as idle, so that
/// transactions arriving a little out of order still see it.
const IDLE_GRACE_MICROS: i64 = 15 * 60 * 1_000_000;

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
    /// Where changes are handed for replication (fleet mode); `None` costs one branch.
    changes: Option<Arc<dyn ChangeSink>>,
    /// The wall clock when last read plus [`WATERMARK_SKEW_MICROS`]: an event time at or
    /// below it is under the watermark's cap without reading the clock again (see
    /// [`Interceptor::observe_event_time`]).
    clock_ceiling: AtomicI64,
}

impl AsRef<Store> for Interceptor {
    fn as_ref(&self) -> &Store {
        &self.store
    }
}

/// What a caller replaying history may already know of a transaction, so that the decision
/// need not find it out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known<'a> {
    /// The entity features' values (`entities[i]` answers `set.entity_features[i]`), read by a
    /// pass that recorded the transaction with its entities: this store's entities are then
    /// neither read nor written.
    pub entities: Option<&'a [EntityValue]>,
    /// No earlier transaction of the customer had this id: the duplicate check, a scan of the
    /// customer's history, is skipped.
    pub first_of_its_id: bool,
}

/// A transaction id decided before: its first decision, and when that transaction happened.
struct Duplicate {
    action: Action,
    first_at: EventTime,
}

thread_local! {
    /// The decision each thread fills in place (see `engine::evaluate_into`): a fresh one a
    /// decision would zero and move the few kilobytes of its features every time.
    static SCRATCH: std::cell::RefCell<Decision> = std::cell::RefCell::new(Decision::empty());
}

fn wall_clock_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Records the transaction with each entity the rules read and reads their features;
/// `values[i]` answers `set.entity_features[i]`. One shard lock per entity kind. `customer`
/// gives the customer's hash ([`Store::customer_hash`]), asked for at most once. Replay's
/// entity passes do the same through [`record_with_entity`], so all count alike.
pub fn record_entities<'t>(
    entities: &EntityStore,
    set: &RuleSet,
    txn: &'t Txn<'t>,
    customer: impl Fn() -> u64,
    values: &mut [EntityValue; crate::rules::compile::MAX_ENTITY_FEATURES],
    recorded: &mut EntityKeys<'t>,
) {
    let keep_from = entity_keep_from(set, txn.at);
    let mut customer_hash = None;
    for kind in EntityKind::ALL {
        if !set.needs.entity_kinds[kind as usize] {
            continue;
        }
        let Some(key) = txn.entity_key(kind) else {
            continue;
        };
        let customer = *customer_hash.get_or_insert_with(&customer);
        recorded[kind as usize] = Some(key);
        entities.with_entity(kind, key, keep_from, |record| {
            record_with_entity(
                record,
                kind,
                set,
                txn.at,
                txn.amount.minor(),
                Some(customer),
                values,
            );
        });
    }
}

/// The oldest time an entity must keep buckets for, when a transaction or a fraud report at
/// `at` reaches it: its buckets older than this are dropped first.
#[inline]
pub fn entity_keep_from(set: &RuleSet, at: EventTime) -> EventTime {
    at - set.needs.entity_reach - BUCKET_MICROS
}

/// What [`record_entities`] does with the record of the transaction's entity of `kind`, once
/// it is pruned to [`entity_keep_from`]: records the transaction, made at `at` for `amount`
/// minor units by the customer whose hash is `customer`, and reads the windows of the
/// features `by` that kind into `values`.
///
/// `customer` is `None` only for a caller whose rule set is fixed and reads no distinct
/// customers of this kind ([`reads_distinct`] is false): replay. The server records them
/// always, so that a rule set reloaded to read them finds them there.
pub fn record_with_entity(
    record: &mut EntityRecord,
    kind: EntityKind,
    set: &RuleSet,
    at: EventTime,
    amount: i64,
    customer: Option<u64>,
    values: &mut [EntityValue; crate::rules::compile::MAX_ENTITY_FEATURES],
) {
    match customer {
        Some(customer) => record.record(at, amount, customer),
        None => record.record_activity(at, amount),
    }
    for (k, e) in set.entity_features.iter().enumerate() {
        if e.by != Some(kind) {
            continue;
        }
        let to = at - e.mature;
        let from = to - e.window.micros;
        let (count, sum, fraud) = record.totals(from, to);
        values[k] = EntityValue {
            present: true,
            count,
            sum,
            fraud,
            // A scan of up to 64 customers: done only for the feature that reads it.
            distinct: if e.measure == EntityMeasure::DistinctCustomers {
                record.distinct_customers(from, to)
            } else {
                0
            },
        };
    }
}

/// Whether a feature of `set` reads the distinct customers of entities of `kind`.
pub fn reads_distinct(set: &RuleSet, kind: EntityKind) -> bool {
    set.entity_features
        .iter()
        .any(|e| e.by == Some(kind) && e.measure == EntityMeasure::DistinctCustomers)
}

/// Counts a confirmed fraud on transaction `txn_hash`, made at `at`, in its hour on every
/// entity `key_of` names among the kinds `set` reads (entities are kept only for those, as
/// decisions keep them). The keys reached are written to `keys`; returns whether any was.
pub fn count_fraud_on_entities<'k>(
    entities: &EntityStore,
    set: &RuleSet,
    at: EventTime,
    txn_hash: u64,
    key_of: impl Fn(EntityKind) -> Option<&'k str>,
    keys: &mut EntityKeys<'k>,
) -> bool {
    let needs = &set.needs;
    let keep_from = entity_keep_from(set, at);
    let mut reached = false;
    for kind in EntityKind::ALL {
        if !needs.entity_kinds[kind as usize] {
            continue;
        }
        if let Some(key) = key_of(kind) {
            entities.with_entity(kind, key, keep_from, |r| r.record_fraud(at, txn_hash));
            keys[kind as usize] = Some(key);
            reached = true;
        }
    }
    reached
}

impl Interceptor {
    /// An interceptor over `store` deciding with `rules`.
    pub fn new(store: Store, rules: LiveRules) -> Interceptor {
        Interceptor {
            store,
            rules,
            journal: None,
            changes: None,
            clock_ceiling: AtomicI64::new(i64::MIN),
        }
    }

    /// Moves the store's watermark to `at`, capped at the wall clock plus
    /// [`WATERMARK_SKEW_MICROS`]. The clock is read only when `at` passes the cap as last read:
    /// while the wall clock moves forward, a time below that cap is below the current one too,
    /// and live traffic, stamped near the present, reads the clock once in five minutes instead
    /// of once a decision. A wall clock stepped back is caught up with by the next idle sweep,
    /// which reads the clock anew ([`Interceptor::refresh_clock_ceiling`]); until then the cap
    /// is at most the one read before the step.
    fn observe_event_time(&self, at: EventTime) {
        let at = if at <= self.clock_ceiling.load(Ordering::Relaxed) {
            at
        } else {
            at.min(self.refresh_clock_ceiling())
        };
        self.store.observe_event_time(at);
    }

    /// Reads the wall clock and sets the watermark's cap from it (lower, when the clock was
    /// stepped back); returns the cap.
    fn refresh_clock_ceiling(&self) -> EventTime {
        let ceiling = wall_clock_micros().saturating_add(WATERMARK_SKEW_MICROS);
        self.clock_ceiling.store(ceiling, Ordering::Relaxed);
        ceiling
    }

    /// Holds at most `max` entities (merchants, devices, IPs, channels) for `by:` windows.
    pub fn with_entity_cap(mut self, max: usize) -> Interceptor {
        self.store.set_max_entities(max);
        self
    }

    /// The entity store.
    pub fn entities(&self) -> &EntityStore {
        self.store.entities()
    }

    /// Hands every change to customer state to `sink` too, after journalling it (fleet mode
    /// replicates them). Changes applied with [`Interceptor::apply_remote`] are not handed on.
    pub fn with_change_sink(mut self, sink: Arc<dyn ChangeSink>) -> Interceptor {
        self.changes = Some(sink);
        self
    }

    /// Applies a change another replica made (fleet mode), as journal replay would:
    /// idempotently, under the customer's shard lock, journalled here when state persists and
    /// never handed to the change sink (it came from there). Returns whether the store changed.
    pub fn apply_remote(&self, frame: &Frame<'_>) -> bool {
        let rules = self.rules.load();
        let zone = &rules.set.zone;
        let month_of = |at| zone.month_of(at);
        let month_of: Option<&(dyn Fn(i64) -> i32 + Send + Sync)> = if rules.set.needs.months {
            Some(&month_of)
        } else {
            None
        };
        let now = wall_clock_micros().saturating_add(WATERMARK_SKEW_MICROS);
        persist::apply_frame(&self.store, frame, month_of, now, self.journal.as_deref())
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
        SCRATCH.with_borrow_mut(|decision| self.decide_into(txn, out, decision))
    }

    fn decide_into(
        &self,
        txn: &Txn<'_>,
        out: &mut Vec<u8>,
        decision: &mut Decision,
    ) -> DecideSummary {
        let rules = self.rules.load();
        let evaluated = self.evaluate_and_record(&rules.set, txn, None, Known::default(), decision);
        self.observe_event_time(txn.at);
        match evaluated {
            Ok(()) => {
                answer::write_answer(out, &rules, txn, decision);
                DecideSummary {
                    action: decision.action,
                    duplicate: false,
                    // `from_slice` copies the rule indices in one go; `clone` collects them
                    // one at a time through an iterator, for every decision.
                    hits: Hits::from_slice(&decision.hits),
                    shadow: Hits::from_slice(&decision.shadow),
                    tags: Hits::from_slice(&decision.tags),
                    score: decision.features.score,
                    rules,
                }
            }
            Err(Duplicate { action, first_at }) => {
                answer::write_duplicate(out, &rules, txn, action, first_at);
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
        known: Known<'_>,
        decision: &mut Decision,
    ) -> Result<(), Duplicate> {
        let txn_hash = self.store.txn_hash(&txn.customer_id, &txn.transaction_id);
        self.store
            .with_customer(&txn.customer_id, |record, capacity| {
                if !known.first_of_its_id
                    && let Some(first) = record.ring.find(txn_hash)
                {
                    return Err(Duplicate {
                        action: first.decision(),
                        first_at: first.at,
                    });
                }
                if let Some(line) = txn.credit_line
                    && record.offer_credit_line(line)
                {
                    if let Some(journal) = &self.journal {
                        journal.credit_line(&txn.customer_id, line);
                    }
                    if let Some(changes) = &self.changes {
                        changes.change(&Frame::CreditLine(&txn.customer_id, line));
                    }
                }
                let mut entities =
                    [EntityValue::default(); crate::rules::compile::MAX_ENTITY_FEATURES];
                let mut keys: EntityKeys<'_> = [None; 4];
                let mut history = record.history();
                if let Some(given) = known.entities {
                    history.entities = given;
                } else if !set.entity_features.is_empty() {
                    record_entities(
                        self.store.entities(),
                        set,
                        txn,
                        || self.store.customer_hash(&txn.customer_id),
                        &mut entities,
                        &mut keys,
                    );
                    history.entities = &entities[..set.entity_features.len()];
                }
                let with_entities = keys.iter().any(Option::is_some);
                engine::evaluate_into(set, &history, Some(txn), txn.at, decision);
                // The next decision's guess at its median: this one's (see `median_x4`).
                if set.needs.prior.median
                    && let Some(prior) = decision.features.prior[..set.prior_windows.len()].first()
                {
                    record.median_hint = prior.q50_x4 / 4;
                }
                let mut event = Event::new(txn.at, txn_hash, txn.amount, txn.geo, decision.action);
                if let Some(status) = outcome {
                    event.set_outcome(status.into());
                }
                // The duplicate check above already looked for this transaction, or the caller
                // knew it new.
                record.record_new(event, capacity);
                if set.needs.months {
                    // The features counted the customer's months back from this transaction's
                    // month, when there were any: the calendar is worked out once a decision.
                    let month = decision
                        .features
                        .months
                        .map_or_else(|| set.zone.month_of(txn.at), |m| m.current);
                    let months = record.months.get_or_insert_with(Default::default);
                    months.add(month, txn.amount.minor());
                    if outcome == Some(OutcomeStatus::Failed) {
                        months.fail(month);
                    }
                }
                // With the entities it was counted on, so that journal replay and the other
                // replicas count it on them too.
                if let Some(journal) = &self.journal {
                    if with_entities {
                        journal.entity_event(&txn.customer_id, &event, &keys);
                    } else {
                        journal.event(&txn.customer_id, &event);
                    }
                }
                if let Some(changes) = &self.changes {
                    if with_entities {
                        changes.change(&Frame::EntityEvent(&txn.customer_id, event, keys));
                    } else {
                        changes.change(&Frame::Event(&txn.customer_id, event));
                    }
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
        self.replay_with(set, txn, outcome, Known::default(), decision)
    }

    /// [`Interceptor::replay`] with what the caller already knows of the transaction (see
    /// [`Known`]). For replay split into an entity pass and customer passes on several threads.
    pub fn replay_with(
        &self,
        set: &RuleSet,
        txn: &Txn<'_>,
        outcome: Option<OutcomeStatus>,
        known: Known<'_>,
        decision: &mut Decision,
    ) -> Result<(), Action> {
        match self.evaluate_and_record(set, txn, outcome, known, decision) {
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
            if record.offer_credit_line(line) {
                if let Some(journal) = &self.journal {
                    journal.credit_line(customer_id, line);
                }
                if let Some(changes) = &self.changes {
                    changes.change(&Frame::CreditLine(customer_id, line));
                }
            }
        });
    }

    /// Applies a gateway's outcome report to the recorded transaction. A confirmed-fraud
    /// report also reaches the transaction's merchant, device, IP and channel when it names
    /// them, even after the transaction has left the customer's history.
    pub fn record_outcome(&self, report: &OutcomeReport<'_>) -> Result<(), OutcomeError> {
        let status = match report.status {
            ReportedStatus::Outcome(status) => status,
            ReportedStatus::Fraud => return self.record_fraud(report),
        };
        let txn_hash = self
            .store
            .txn_hash(&report.customer_id, &report.transaction_id);
        let found = self
            .store
            .with_existing(&report.customer_id, |record| {
                let outcome: Outcome = status.into();
                let month_of = |at| self.rules.load().set.zone.month_of(at);
                if !record.set_outcome(txn_hash, outcome, Some(month_of)) {
                    return false;
                }
                if let Some(journal) = &self.journal {
                    journal.outcome(&report.customer_id, txn_hash, outcome);
                }
                if let Some(changes) = &self.changes {
                    changes.change(&Frame::Outcome(&report.customer_id, txn_hash, outcome));
                }
                true
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

    /// Marks the customer's event `txn_hash` as confirmed fraud when it is still held, and
    /// returns its time. The customer half of a fraud report, without journal or replication:
    /// replay's customer passes call it, and [`Interceptor::record_outcome`] through it.
    pub fn mark_fraud(&self, customer_id: &str, txn_hash: u64) -> Option<EventTime> {
        self.store
            .with_existing(customer_id, |record| {
                record.ring.update(txn_hash, |event| {
                    event.set_fraud();
                    event.at
                })
            })
            .flatten()
    }

    /// A confirmed-fraud report: marks the customer's event when it is still held, and counts
    /// the fraud in the hour of the transaction on every entity the report names (its time is
    /// the report's `timestamp`, or the held event's; only kinds the live rules read keep
    /// entities). Refused when it reaches nothing.
    fn record_fraud(&self, report: &OutcomeReport<'_>) -> Result<(), OutcomeError> {
        let txn_hash = self
            .store
            .txn_hash(&report.customer_id, &report.transaction_id);
        let held_at = self.mark_fraud(&report.customer_id, txn_hash);
        let at = report.fraud.timestamp.or(held_at);
        let mut reached = held_at.is_some();
        let mut keys: EntityKeys<'_> = [None; 4];
        if let Some(at) = at {
            reached |= count_fraud_on_entities(
                self.store.entities(),
                &self.rules.load().set,
                at,
                txn_hash,
                |kind| report.fraud.entity_key(kind),
                &mut keys,
            );
        }
        if reached {
            if let Some(journal) = &self.journal {
                journal.fraud(&report.customer_id, txn_hash, at, &keys);
            }
            if let Some(changes) = &self.changes {
                changes.change(&Frame::Fraud(&report.customer_id, txn_hash, at, keys));
            }
        }
        if reached {
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
    /// time seen. What "any rule" reads is [`LiveRules::retention`]: every rule set loaded since
    /// start, not only the live one, so a rollback finds the history it reads.
    pub fn sweep_idle(&self) -> usize {
        self.sweep_idle_keeping(0)
    }

    /// Like [`Interceptor::sweep_idle`], keeping at least `floor_micros` of history however
    /// little the rules read (`--retain`).
    pub fn sweep_idle_keeping(&self, floor_micros: i64) -> usize {
        // The upkeep's cadence is also how soon the watermark's cap follows a clock stepped
        // back (see `observe_event_time`).
        self.refresh_clock_ceiling();
        let Some(watermark) = self.store.watermark() else {
            return 0;
        };
        let horizon = self.rules.retention().max(floor_micros);
        self.store.sweep_idle(
            watermark
                .saturating_sub(horizon)
                .saturating_sub(IDLE_GRACE_MICROS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StoreConfig;
    use crate::state::journal::{self, Frame};
    use crate::txn::Amount;

    const RULES: &str = r#"
timezone: UTC
rules:
  - id: large_amount
    action: deny
    when:
      amount: { at_least: "1000" }
  - id: uneven_months
    action: tag
    when:
      monthly_count_cv: { at_least: 1 }
"#;

    #[test]
    fn the_watermark_is_capped_at_the_wall_clock_as_the_last_sweep_read_it() {
        let (interceptor, _) = interceptor();
        let now = wall_clock_micros();
        let far = now + 400 * 24 * 3_600 * 1_000_000;
        let body = |id: &str, at: i64| {
            let at = jiff::Timestamp::from_microsecond(at).unwrap();
            format!(
                r#"{{"transaction_id":"{id}","customer_id":"c1","timestamp":"{at}","amount":"10.00"}}"#
            )
        };
        let mut out = Vec::new();
        interceptor
            .decide(body("t1", far).as_bytes(), &mut out)
            .unwrap();
        let capped = interceptor.store().watermark().unwrap();
        assert!(
            (now..far).contains(&capped) && capped <= wall_clock_micros() + WATERMARK_SKEW_MICROS,
            "a far-future event moves the watermark only to the clock's cap: {capped}"
        );
        // A cap read from a clock that was far ahead (and then stepped back) holds only until
        // the next sweep reads the clock again.
        interceptor.clock_ceiling.store(far + 1, Ordering::Relaxed);
        interceptor.sweep_idle();
        out.clear();
        interceptor
            .decide(body("t2", far).as_bytes(), &mut out)
            .unwrap();
        let after = interceptor.store().watermark().unwrap();
        assert!(
            after <= wall_clock_micros() + WATERMARK_SKEW_MICROS,
            "the sweep brought the cap back to the clock: {after}"
        );
    }

    fn interceptor() -> (Interceptor, Arc<Journal>) {
        let rules = LiveRules::new(RULES.as_bytes(), "test").unwrap();
        assert!(
            rules.load().set.needs.months,
            "the rules keep month buckets"
        );
        let journal = Arc::new(Journal::new());
        let interceptor = Interceptor::new(Store::new(StoreConfig::default()), rules)
            .with_journal(journal.clone());
        (interceptor, journal)
    }

    fn decide(interceptor: &Interceptor, body: &str) -> (DecideSummary, serde_json::Value) {
        let mut out = Vec::new();
        let summary = interceptor.decide(body.as_bytes(), &mut out).unwrap();
        (summary, serde_json::from_slice(&out).unwrap())
    }

    fn body(transaction_id: &str, customer_id: &str, timestamp: &str, amount: &str) -> String {
        format!(
            r#"{{"transaction_id":"{transaction_id}","customer_id":"{customer_id}","timestamp":"{timestamp}","amount":"{amount}"}}"#
        )
    }

    /// Everything the interceptor keeps about a customer.
    fn held(
        interceptor: &Interceptor,
        customer: &str,
    ) -> Option<(
        Vec<Event>,
        Option<CreditLine>,
        Option<crate::state::months::MonthBuckets>,
    )> {
        interceptor.store().with_existing(customer, |r| {
            (
                r.ring.iter().copied().collect(),
                r.credit_line(),
                r.months.clone(),
            )
        })
    }

    fn frames(journal: &Journal) -> Vec<String> {
        let mut bytes = Vec::new();
        journal.take(&mut bytes);
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (frame, used) = journal::decode(rest).unwrap();
            out.push(format!("{frame:?}"));
            rest = &rest[used..];
        }
        out
    }

    fn report<'a>(
        customer: &'a str,
        transaction: &'a str,
        status: OutcomeStatus,
    ) -> OutcomeReport<'a> {
        OutcomeReport {
            transaction_id: transaction.into(),
            customer_id: customer.into(),
            status: crate::txn::ReportedStatus::Outcome(status),
            fraud: Default::default(),
        }
    }

    fn line(minor: i64, granted_at: &str) -> CreditLine {
        CreditLine {
            limit: Amount::from_minor(minor).unwrap(),
            granted_at: txn::parse_timestamp(granted_at).unwrap(),
        }
    }

    #[test]
    fn a_repeated_transaction_id_returns_the_first_decision_and_changes_nothing() {
        let (interceptor, journal) = interceptor();
        let (first, _) = decide(
            &interceptor,
            &body("t-1", "alice", "2026-03-01T10:00:00+08:00", "1500"),
        );
        assert_eq!((first.action, first.duplicate), (Action::Deny, false));
        let before = held(&interceptor, "alice").unwrap();
        let frames_before = journal.appended();
        let events_before = interceptor.store().events();

        // Same id, a small amount, another time and a credit line: all of it is ignored.
        let again = r#"{"transaction_id":"t-1","customer_id":"alice","timestamp":"2026-03-02T10:00:00+08:00","amount":"5","credit_limit":"9000","credit_granted_at":"2026-03-02T09:00:00+08:00"}"#;
        let (second, answer) = decide(&interceptor, again);
        assert_eq!((second.action, second.duplicate), (Action::Deny, true));
        assert!(second.hits.is_empty() && second.tags.is_empty());
        assert_eq!(second.score, None);
        assert_eq!(answer["duplicate"], true, "{answer}");
        assert_eq!(answer["decision"], "deny", "{answer}");
        assert_eq!(answer["transaction_id"], "t-1", "{answer}");
        assert_eq!(
            answer["reasons"][0]["rule"], "duplicate_transaction",
            "{answer}"
        );
        assert_eq!(held(&interceptor, "alice").unwrap(), before);
        assert_eq!(before.1, None, "the duplicate's credit line was not taken");
        assert_eq!(interceptor.store().events(), events_before);
        assert_eq!(journal.appended(), frames_before, "nothing journalled");

        // Another id of the same customer is a new transaction.
        let (third, answer) = decide(
            &interceptor,
            &body("t-2", "alice", "2026-03-01T10:05:00+08:00", "5"),
        );
        assert_eq!((third.action, third.duplicate), (Action::Allow, false));
        assert_eq!(answer.get("duplicate"), None, "{answer}");
        assert_eq!(held(&interceptor, "alice").unwrap().0.len(), 2);
    }

    #[test]
    fn an_outcome_for_an_unknown_customer_is_refused_and_creates_nobody() {
        let (interceptor, journal) = interceptor();
        assert_eq!(
            interceptor.record_outcome(&report("nobody", "t-1", OutcomeStatus::Settled)),
            Err(OutcomeError::UnknownCustomer("nobody".into()))
        );
        assert_eq!(interceptor.store().customers(), 0);
        assert_eq!(journal.appended(), 0);
    }

    #[test]
    fn an_outcome_for_an_unknown_transaction_is_refused_and_changes_nothing() {
        let (interceptor, journal) = interceptor();
        decide(
            &interceptor,
            &body("t-1", "bob", "2026-03-01T10:00:00+08:00", "10"),
        );
        let before = held(&interceptor, "bob").unwrap();
        let frames_before = journal.appended();
        assert_eq!(
            interceptor.record_outcome(&report("bob", "t-9", OutcomeStatus::Failed)),
            Err(OutcomeError::UnknownTransaction {
                customer_id: "bob".into(),
                transaction_id: "t-9".into(),
            })
        );
        assert_eq!(held(&interceptor, "bob").unwrap(), before);
        assert_eq!(journal.appended(), frames_before);
    }

    #[test]
    fn a_failed_outcome_marks_the_event_and_counts_once_in_its_month() {
        let (interceptor, journal) = interceptor();
        decide(
            &interceptor,
            &body("t-1", "carol", "2026-03-01T10:00:00+08:00", "10"),
        );
        decide(
            &interceptor,
            &body("t-2", "carol", "2026-03-01T11:00:00+08:00", "20"),
        );
        let at = txn::parse_timestamp("2026-03-01T10:00:00+08:00").unwrap();
        let month = interceptor.rules().load().set.zone.month_of(at);
        let hash = interceptor.store().txn_hash("carol", "t-1");
        frames(&journal);

        for _ in 0..2 {
            assert_eq!(
                interceptor.record_outcome(&report("carol", "t-1", OutcomeStatus::Failed)),
                Ok(())
            );
        }
        let (events, _, months) = held(&interceptor, "carol").unwrap();
        let outcomes: Vec<_> = events.iter().map(|e| (e.txn_hash(), e.outcome())).collect();
        let other = interceptor.store().txn_hash("carol", "t-2");
        let kept = crate::state::event::kept_hash;
        assert_eq!(
            outcomes,
            vec![
                (kept(hash), Outcome::Failed),
                (kept(other), Outcome::Pending)
            ]
        );
        let bucket = months.unwrap().get(month);
        assert_eq!((bucket.count, bucket.failed, bucket.sum), (2, 1, 3000));
        let outcome = format!("{:?}", Frame::Outcome("carol", hash, Outcome::Failed));
        assert_eq!(frames(&journal), vec![outcome.clone(), outcome]);

        // A later settlement replaces the failure on the event; the month keeps its count.
        interceptor
            .record_outcome(&report("carol", "t-1", OutcomeStatus::Settled))
            .unwrap();
        let (events, _, months) = held(&interceptor, "carol").unwrap();
        assert_eq!(events[0].outcome(), Outcome::Settled);
        assert_eq!(months.unwrap().get(month).failed, 1);
    }

    #[test]
    fn a_credit_line_granted_before_the_one_held_is_ignored() {
        let (interceptor, journal) = interceptor();
        let held_line = line(500_000, "2026-03-01T10:00:00Z");
        interceptor.set_credit_line("dave", held_line);
        interceptor.set_credit_line("dave", line(900_000, "2026-02-28T10:00:00Z"));
        assert_eq!(held(&interceptor, "dave").unwrap().1, Some(held_line));
        assert_eq!(
            frames(&journal),
            vec![format!("{:?}", Frame::CreditLine("dave", held_line))],
            "only the line taken is journalled"
        );

        let newer = line(700_000, "2026-03-02T10:00:00Z");
        interceptor.set_credit_line("dave", newer);
        assert_eq!(held(&interceptor, "dave").unwrap().1, Some(newer));
        assert_eq!(
            frames(&journal),
            vec![format!("{:?}", Frame::CreditLine("dave", newer))]
        );
    }

    const PROBES: &str = "timezone: UTC\nlists:\n  probes: [\"99\"]\nrules:\n  - id: probing\n    action: deny\n    when: { list_count: { window: 30m, list: probes, at_least: 3 } }\n";
    const SHORT: &str = "timezone: UTC\nrules:\n  - id: burst\n    action: review\n    when: { count: { window: 10s, at_least: 50 } }\n";

    #[test]
    fn a_short_lived_rule_set_does_not_erase_the_history_a_rollback_needs() {
        let interceptor = Interceptor::new(
            Store::new(StoreConfig::default()),
            LiveRules::new(PROBES.as_bytes(), "file").unwrap(),
        );
        decide(
            &interceptor,
            &body("p1", "prober", "2026-03-01T10:00:00Z", "99.00"),
        );
        decide(
            &interceptor,
            &body("p2", "prober", "2026-03-01T10:01:00Z", "99.00"),
        );
        // A mistaken push of a set that reads only 10 seconds, while other traffic moves event
        // time on past the 15-minute grace.
        interceptor
            .rules()
            .install(SHORT.as_bytes(), "PUT")
            .unwrap();
        decide(
            &interceptor,
            &body("o1", "other", "2026-03-01T10:17:00Z", "5.00"),
        );
        interceptor.sweep_idle();
        assert!(
            held(&interceptor, "prober").is_some(),
            "the probing history outlives the short set"
        );
        interceptor.rules().rollback().unwrap();
        let (summary, answer) = decide(
            &interceptor,
            &body("p3", "prober", "2026-03-01T10:02:00Z", "99.00"),
        );
        assert_eq!(summary.action, Action::Deny, "{answer}");
    }

    #[test]
    fn retain_keeps_history_the_rules_do_not_read() {
        let interceptor = Interceptor::new(
            Store::new(StoreConfig::default()),
            LiveRules::new(SHORT.as_bytes(), "file").unwrap(),
        );
        decide(
            &interceptor,
            &body("a1", "quiet", "2026-03-01T10:00:00Z", "5.00"),
        );
        decide(
            &interceptor,
            &body("b1", "busy", "2026-03-02T10:00:00Z", "5.00"),
        );
        let day = 86_400 * 1_000_000;
        assert_eq!(interceptor.sweep_idle_keeping(2 * day), 0, "two days kept");
        assert!(held(&interceptor, "quiet").is_some());
        assert_eq!(
            interceptor.sweep_idle(),
            1,
            "without the floor the rules' 10 s rule"
        );
        assert!(held(&interceptor, "quiet").is_none());
    }

    #[test]
    fn a_rule_on_the_score_names_the_characteristics_that_cost_the_most_points() {
        let rules = r#"
timezone: UTC
rules:
  - id: low_score
    action: review
    when:
      score: { less_than: 600 }
  - id: big
    action: tag
    when:
      amount: { at_least: 1000 }
scorecard:
  base_score: 600
  points_to_double_odds: 20
  characteristics:
    - name: activity_1d
      feature: { count: { window: 1d } }
      bins:
        - { below: 2, points: 10 }
        - { from: 2, points: -20 }
    - name: amount
      feature: { amount: {} }
      bins:
        - { below: 100, points: 5 }
        - { from: 100, points: -30 }
    - name: at_best
      feature: { amount: {} }
      bins:
        - { points: 0 }
"#;
        let live = LiveRules::new(rules.as_bytes(), "test").unwrap();
        let interceptor = Interceptor::new(Store::new(StoreConfig::default()), live);
        let (_, low) = decide(
            &interceptor,
            &body("s1", "sid", "2026-03-01T10:00:00Z", "150"),
        );
        assert_eq!(low["decision"], "review", "{low}");
        assert_eq!(low["score"], 580);
        assert_eq!(
            low["score_reasons"],
            serde_json::json!([{ "characteristic": "amount", "points": -30, "best_points": 5 }])
        );
        let (_, two) = decide(
            &interceptor,
            &body("s2", "sid", "2026-03-01T10:05:00Z", "1500"),
        );
        let names: Vec<&str> = two["score_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["characteristic"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["amount", "activity_1d"],
            "most points first: {two}"
        );
        // No rule on the score matched: no reasons, and the key is absent.
        let (_, fine) = decide(
            &interceptor,
            &body("s3", "other", "2026-03-01T10:00:00Z", "50"),
        );
        assert_eq!(fine["decision"], "allow");
        assert!(fine.get("score_reasons").is_none(), "{fine}");
    }

    const ENTITY_RULES: &str = r#"
timezone: UTC
rules:
  - id: shared_device
    action: review
    when:
      distinct_customers: { by: device_id, window: 1d, at_least: 5 }
  - id: busy_terminal
    action: tag
    when:
      count: { by: merchant_id, window: 1d, at_least: 3 }
  - id: compromised_terminal
    action: deny
    when:
      fraud_rate: { by: merchant_id, window: 28d, mature_after: 7d, at_least: 0.5 }
  - id: customer_with_fraud
    action: tag
    when:
      fraud_count: { window: 30d, at_least: 1 }
"#;

    fn decide_with(
        interceptor: &Interceptor,
        id: &str,
        customer: &str,
        at: &str,
        extra: &str,
    ) -> serde_json::Value {
        let body = format!(
            r#"{{"transaction_id":"{id}","customer_id":"{customer}","timestamp":"{at}","amount":"20"{extra}}}"#
        );
        decide(interceptor, &body).1
    }

    fn rule_ids(answer: &serde_json::Value, key: &str) -> Vec<String> {
        answer[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        r["rule"]
                            .as_str()
                            .or(r.as_str())
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn entity_windows_count_customers_transactions_and_matured_frauds() {
        let rules = LiveRules::new(ENTITY_RULES.as_bytes(), "test").unwrap();
        let interceptor = Interceptor::new(Store::new(StoreConfig::default()), rules);
        // Five customers on one device within a day: the fifth is reviewed.
        for i in 0..5 {
            let a = decide_with(
                &interceptor,
                &format!("d{i}"),
                &format!("ring{i}"),
                &format!("2026-03-01T10:0{i}:00Z"),
                r#","device_id":"dev-9""#,
            );
            assert_eq!(
                a["decision"],
                if i == 4 { "review" } else { "allow" },
                "{a}"
            );
        }
        // A repeated transaction id is not counted again on its entities.
        let again = decide_with(
            &interceptor,
            "d4",
            "ring4",
            "2026-03-01T10:04:00Z",
            r#","device_id":"dev-9""#,
        );
        assert_eq!(again["duplicate"], true);
        // Three transactions on a terminal in a day: tagged on the third.
        for i in 0..3 {
            let a = decide_with(
                &interceptor,
                &format!("m{i}"),
                &format!("shopper{i}"),
                &format!("2026-03-01T11:0{i}:00Z"),
                r#","merchant_id":"term-1""#,
            );
            assert_eq!(rule_ids(&a, "tags") == vec!["busy_terminal"], i == 2, "{a}");
        }
        // Two of the terminal's three are reported as fraud, carrying its details.
        for id in ["m0", "m1"] {
            let customer = format!("shopper{}", &id[1..]);
            let report = format!(
                r#"{{"transaction_id":"{id}","customer_id":"{customer}","status":"fraud","timestamp":"2026-03-01T11:0{}:00Z","merchant_id":"term-1"}}"#,
                &id[1..]
            );
            interceptor
                .record_outcome(&txn::parse_outcome(report.as_bytes()).unwrap())
                .unwrap();
        }
        // Within a week the frauds are not mature: the terminal is not yet judged.
        let early = decide_with(
            &interceptor,
            "m3",
            "shopper9",
            "2026-03-05T11:00:00Z",
            r#","merchant_id":"term-1""#,
        );
        assert_eq!(early["decision"], "allow", "{early}");
        // After it, 2 frauds in 4 matured transactions: 50%, denied.
        let late = decide_with(
            &interceptor,
            "m4",
            "shopper8",
            "2026-03-09T11:00:00Z",
            r#","merchant_id":"term-1""#,
        );
        assert_eq!(late["decision"], "deny", "{late}");
        assert_eq!(
            rule_ids(&late, "reasons"),
            vec!["compromised_terminal"],
            "{late}"
        );
        // The customer with a confirmed fraud is tagged on their next transaction.
        let next = decide_with(&interceptor, "s0b", "shopper0", "2026-03-02T11:00:00Z", "");
        assert_eq!(
            rule_ids(&next, "tags"),
            vec!["customer_with_fraud"],
            "{next}"
        );
        // A fraud report that names nothing held is refused.
        let nothing = txn::parse_outcome(
            br#"{"transaction_id":"zz","customer_id":"nobody","status":"fraud"}"#,
        )
        .unwrap();
        assert!(interceptor.record_outcome(&nothing).is_err());
        // Fraud details are refused on other statuses.
        assert!(
            txn::parse_outcome(
                br#"{"transaction_id":"zz","customer_id":"c","status":"settled","merchant_id":"m"}"#
            )
            .is_err()
        );
        assert_eq!(interceptor.entities().len(), 2, "one device, one terminal");
    }

    /// Entity features through the interceptor against a brute-force count over every input
    /// so far, with the documented hourly resolution.
    mod entity_reference {
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::*;

        const H: i64 = 3_600_000_000;
        /// 2026-03-01T00:00:00Z.
        const T0: i64 = 1_772_323_200_000_000;

        /// (id, threshold, what) — every rule a tag, so that its value is visible.
        const RULES: &str = r#"
timezone: UTC
rules:
  - { id: m_count, action: tag, when: { count: { by: merchant_id, window: 6h, at_least: 3 } } }
  - { id: m_sum, action: tag, when: { sum: { by: merchant_id, window: 1d, at_least: "60" } } }
  - { id: d_distinct, action: tag, when: { distinct_customers: { by: device_id, window: 1d, at_least: 3 } } }
  - { id: m_fraud, action: tag, when: { fraud_count: { by: merchant_id, window: 2d, mature_after: 6h, at_least: 1 } } }
  - { id: m_rate, action: tag, when: { fraud_rate: { by: merchant_id, window: 2d, mature_after: 6h, min_count: 2, at_least: 0.4 } } }
  - { id: c_fraud, action: tag, when: { fraud_count: { window: 1d, at_least: 1 } } }
"#;

        #[derive(Debug, Clone)]
        enum Op {
            /// Advance time, then decide: customer, merchant, device, amount (units).
            Decide(i64, u8, Option<u8>, Option<u8>, u16),
            /// Report the n-th earlier decision (mod their number) as fraud.
            Fraud(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0i64..4 * H, 0u8..5, proptest::option::of(0u8..3), proptest::option::of(0u8..3), 1u16..60)
                    .prop_map(|(dt, c, m, d, a)| Op::Decide(dt, c, m, d, a)),
                1 => (0usize..1000).prop_map(Op::Fraud),
            ]
        }

        struct Past {
            at: i64,
            id: String,
            customer: String,
            merchant: Option<String>,
            device: Option<String>,
            amount: i64,
        }

        fn hour(at: i64) -> i64 {
            at.div_euclid(H)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn entity_features_match_a_brute_force_count(ops in proptest::collection::vec(op(), 1..60)) {
                let rules = LiveRules::new(RULES.as_bytes(), "test").unwrap();
                let interceptor = Interceptor::new(Store::new(StoreConfig::default()), rules);
                let mut past: Vec<Past> = Vec::new();
                // Fraud reports as counted: (merchant, transaction) → its time.
                let mut merchant_frauds: BTreeMap<(String, String), i64> = BTreeMap::new();
                let mut customer_frauds: BTreeSet<String> = BTreeSet::new();
                let mut t = T0;
                for op in ops {
                    match op {
                        Op::Fraud(n) => {
                            if past.is_empty() {
                                continue;
                            }
                            let p = &past[n % past.len()];
                            let mut body = serde_json::json!({
                                "transaction_id": p.id, "customer_id": p.customer, "status": "fraud",
                                "timestamp": crate::txn::format_timestamp(p.at),
                            });
                            if let Some(m) = &p.merchant {
                                body["merchant_id"] = m.clone().into();
                                merchant_frauds.entry((m.clone(), p.id.clone())).or_insert(p.at);
                            }
                            let text = body.to_string();
                            interceptor.record_outcome(&txn::parse_outcome(text.as_bytes()).unwrap()).unwrap();
                            customer_frauds.insert(p.id.clone());
                        }
                        Op::Decide(dt, c, m, d, a) => {
                            t += dt;
                            let me = Past {
                                at: t,
                                id: format!("t{}", past.len()),
                                customer: format!("c{c}"),
                                merchant: m.map(|m| format!("m{m}")),
                                device: d.map(|d| format!("d{d}")),
                                amount: i64::from(a) * 100,
                            };
                            let mut body = serde_json::json!({
                                "transaction_id": me.id, "customer_id": me.customer,
                                "timestamp": crate::txn::format_timestamp(t), "amount": a.to_string(),
                            });
                            if let Some(m) = &me.merchant { body["merchant_id"] = m.clone().into(); }
                            if let Some(d) = &me.device { body["device_id"] = d.clone().into(); }
                            let (_, answer) = decide(&interceptor, &body.to_string());
                            past.push(me);
                            let me = past.last().unwrap();
                            let tags: BTreeSet<String> = answer["tags"].as_array().unwrap()
                                .iter().map(|v| v.as_str().unwrap().to_string()).collect();

                            let on_merchant = |from: i64, to: i64| -> (i64, i64) {
                                let Some(m) = &me.merchant else { return (0, 0) };
                                past.iter()
                                    .filter(|p| p.merchant.as_ref() == Some(m))
                                    .filter(|p| hour(p.at) > hour(from) && hour(p.at) <= hour(to))
                                    .fold((0, 0), |(n, s), p| (n + 1, s + p.amount))
                            };
                            let frauds = |from: i64, to: i64| -> i64 {
                                let Some(m) = &me.merchant else { return 0 };
                                merchant_frauds.iter()
                                    .filter(|((mm, _), at)| mm == m && hour(**at) > hour(from) && hour(**at) <= hour(to))
                                    .count() as i64
                            };
                            let mut want = BTreeSet::new();
                            if me.merchant.is_some() {
                                if on_merchant(t - 6 * H, t).0 >= 3 { want.insert("m_count"); }
                                if on_merchant(t - 24 * H, t).1 >= 6_000 { want.insert("m_sum"); }
                                let (from, to) = (t - 6 * H - 48 * H, t - 6 * H);
                                let f = frauds(from, to);
                                if f >= 1 { want.insert("m_fraud"); }
                                let n = on_merchant(from, to).0;
                                if n >= 2 && f * 10 >= 4 * n { want.insert("m_rate"); }
                            }
                            if let Some(d) = &me.device {
                                let mut last: BTreeMap<&str, i64> = BTreeMap::new();
                                for p in past.iter().filter(|p| p.device.as_ref() == Some(d)) {
                                    let e = last.entry(p.customer.as_str()).or_insert(p.at);
                                    *e = (*e).max(p.at);
                                }
                                if last.values().filter(|&&at| at > t - 24 * H && at <= t).count() >= 3 {
                                    want.insert("d_distinct");
                                }
                            }
                            if past.iter().any(|p| p.customer == me.customer && customer_frauds.contains(&p.id)
                                && p.at > t - 24 * H && p.at <= t) {
                                want.insert("c_fraud");
                            }
                            let want: BTreeSet<String> = want.into_iter().map(String::from).collect();
                            prop_assert_eq!(&tags, &want, "at {} for {}: {}", t, me.id, answer);
                        }
                    }
                }
            }
        }
    }
}

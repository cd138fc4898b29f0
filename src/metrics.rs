//! Prometheus metrics, exported by `GET /metrics` on the admin listener through the
//! `prometheus-client` crate (OpenMetrics text).
//!
//! Counters on the hot path are resolved once (decisions by outcome) or looked up only when a
//! rule matches (hits by rule id and mode); gauges that mirror the store are read at scrape
//! time, so recording a decision costs a few atomic increments and one histogram observation.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::interceptor::DecideSummary;
use crate::live_rules::LoadedRules;
use crate::reload::ReloadTrigger;
use crate::rules::Action;
use crate::state::Store;
use crate::state::persist::RecoveryReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleHitLabels {
    rule: String,
    mode: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TagLabels {
    tag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    trigger: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RulesInfoLabels {
    version: String,
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyFailureLabels {
    cause: &'static str,
    policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: &'static str,
}

/// Fleet mode's metrics (registered always; zero when fleet mode is off). Fleet tasks update
/// them directly; each is one atomic.
#[derive(Debug)]
pub struct FleetMetrics {
    /// 1 while the NATS connection is up.
    pub connected: Gauge,
    /// Changes not replicated because the publish queue was full.
    pub dropped: Counter,
    /// Changes waiting in the publish queue (sampled per batch).
    pub queue_depth: Gauge,
    /// Batches sent again because JetStream did not acknowledge them.
    pub publish_retries: Counter,
    /// Other replicas' changes applied.
    pub applied: Counter,
    /// Messages that were not one intact change frame, skipped.
    pub rejected: Counter,
    /// Time from a change's publication to its application here, seconds.
    pub lag_seconds: Histogram,
    /// `publish_decisions`: decision lines not published (queue full or not acknowledged).
    pub decisions_dropped: Counter,
    /// Fleet snapshots this replica stored.
    pub snapshots_written: Counter,
    /// Changes that had aged out of the stream after the newest state this replica could load
    /// when it joined: lost to it.
    pub catchup_gap: Gauge,
}

impl FleetMetrics {
    fn register(registry: &mut Registry) -> FleetMetrics {
        let m = FleetMetrics {
            connected: Gauge::default(),
            dropped: Counter::default(),
            queue_depth: Gauge::default(),
            publish_retries: Counter::default(),
            applied: Counter::default(),
            rejected: Counter::default(),
            decisions_dropped: Counter::default(),
            snapshots_written: Counter::default(),
            catchup_gap: Gauge::default(),
            lag_seconds: Histogram::new([
                1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0,
            ]),
        };
        registry.register(
            "tripwire_fleet_connected",
            "Fleet mode: 1 while the NATS connection is up",
            m.connected.clone(),
        );
        registry.register(
            "tripwire_fleet_dropped",
            "Fleet mode: changes not replicated because the publish queue was full",
            m.dropped.clone(),
        );
        registry.register(
            "tripwire_fleet_queue_depth",
            "Fleet mode: changes waiting to be published",
            m.queue_depth.clone(),
        );
        registry.register(
            "tripwire_fleet_publish_retries",
            "Fleet mode: batches published again because JetStream did not acknowledge them",
            m.publish_retries.clone(),
        );
        registry.register(
            "tripwire_fleet_applied",
            "Fleet mode: other replicas' changes applied",
            m.applied.clone(),
        );
        registry.register(
            "tripwire_fleet_rejected",
            "Fleet mode: stream messages that were not one intact change, skipped",
            m.rejected.clone(),
        );
        registry.register(
            "tripwire_fleet_decisions_dropped",
            "Fleet mode with publish_decisions: decision lines not published (queue full or not acknowledged)",
            m.decisions_dropped.clone(),
        );
        registry.register(
            "tripwire_fleet_snapshots_written",
            "Fleet mode: fleet state snapshots this replica stored",
            m.snapshots_written.clone(),
        );
        registry.register(
            "tripwire_fleet_catchup_gap",
            "Fleet mode: changes aged out of the stream after the newest state this replica could load when it joined (lost to it)",
            m.catchup_gap.clone(),
        );
        registry.register_with_unit(
            "tripwire_fleet_replication_lag",
            "Fleet mode: time from a change's publication to its application on this replica",
            Unit::Seconds,
            m.lag_seconds.clone(),
        );
        m
    }
}

/// Every metric tripwire exports.
pub struct Metrics {
    /// Fleet mode's metrics.
    pub fleet: FleetMetrics,
    registry: Registry,
    decisions: [Counter; 3],
    duplicates: Counter,
    rejected: Family<RejectLabels, Counter>,
    rule_hits: Family<RuleHitLabels, Counter>,
    decide_seconds: Histogram,
    tags: Family<TagLabels, Counter>,
    scores: Histogram,
    /// The live scores against the scorecard's development distribution.
    pub drift: crate::drift::ScoreDrift,
    score_psi: Gauge<f64, AtomicU64>,
    reloads: Family<ReloadLabels, Counter>,
    rules_version: Gauge,
    rules_info: Family<RulesInfoLabels, Gauge>,
    rules_count: Gauge,
    customers: Gauge,
    entities: Gauge,
    events: Gauge,
    evictions: Counter,
    idle_drops: Counter,
    connections_shed: Counter,
    decision_log_dropped: Counter,
    decision_log_written: Counter,
    journal_frames: Counter,
    journal_dropped: Counter,
    damaged_frames: Counter,
    damaged_bytes: Counter,
    missing_journals: Counter,
    proxy_requests: Family<ProxyLabels, Counter>,
    /// The counters of `proxy_requests` for forwarded_allow and forwarded_review, looked up
    /// once: nearly every request counts in one, and a look-up by label hashes the label.
    proxy_forwarded: [Counter; 2],
    proxy_failures: Family<ProxyFailureLabels, Counter>,
    upstream_seconds: Histogram,
    last_rules_info: parking_lot::Mutex<Option<RulesInfoLabels>>,
    log_dropped_seen: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Buckets of the decide latency histogram, seconds: 5 µs to 100 ms.
const LATENCY_BUCKETS: [f64; 14] = [
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    100e-3,
];

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let decision_family = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "tripwire_decisions",
            "Decisions answered, by decision",
            decision_family.clone(),
        );
        let decisions = [Action::Allow, Action::Review, Action::Deny].map(|a| {
            decision_family
                .get_or_create(&DecisionLabels {
                    decision: a.as_str(),
                })
                .clone()
        });
        let duplicates = Counter::default();
        registry.register(
            "tripwire_duplicate_transactions",
            "Decide requests for a transaction id already decided (answered with the first decision)",
            duplicates.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "tripwire_rejected_requests",
            "Requests refused before deciding, by reason",
            rejected.clone(),
        );
        let rule_hits = Family::<RuleHitLabels, Counter>::default();
        registry.register(
            "tripwire_rule_hits",
            "Rule matches, by rule id, mode (enforce or shadow) and action",
            rule_hits.clone(),
        );
        let decide_seconds = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "tripwire_decide_duration",
            "Time to decide in process: parse, lock, evaluate, record, answer",
            Unit::Seconds,
            decide_seconds.clone(),
        );
        let tags = Family::<TagLabels, Counter>::default();
        registry.register(
            "tripwire_tags",
            "Customer-operations tags added to answers, by tag",
            tags.clone(),
        );
        let score_psi = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "tripwire_score_psi",
            "Population stability index of the live scores (last 10,000 to 15,000) against the scorecard's development distribution: below 0.1 stable, 0.1 to 0.25 watch, above 0.25 rebuild",
            score_psi.clone(),
        );
        let scores = Histogram::new((300..=900).step_by(50).map(f64::from));
        registry.register(
            "tripwire_score",
            "Behaviour scores of decided transactions",
            scores.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "tripwire_rule_reloads",
            "Rule set reloads, by trigger and outcome (accepted or refused)",
            reloads.clone(),
        );
        let rules_version = Gauge::default();
        registry.register(
            "tripwire_rules_version",
            "Sequence number of the live rule set",
            rules_version.clone(),
        );
        let rules_info = Family::<RulesInfoLabels, Gauge>::default();
        registry.register(
            "tripwire_rules_info",
            "The live rule set's version and content hash (value 1)",
            rules_info.clone(),
        );
        let rules_count = Gauge::default();
        registry.register(
            "tripwire_rules",
            "Rules in the live rule set",
            rules_count.clone(),
        );
        let customers = Gauge::default();
        registry.register(
            "tripwire_customers",
            "Customers held in memory",
            customers.clone(),
        );
        let entities = Gauge::default();
        registry.register(
            "tripwire_entities",
            "Merchants, devices, IPs and channels held for `by:` windows",
            entities.clone(),
        );
        let events = Gauge::default();
        registry.register(
            "tripwire_events",
            "Transactions held in memory over all customers",
            events.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "tripwire_customer_evictions",
            "Customers evicted because the customer cap was reached",
            evictions.clone(),
        );
        let connections_shed = Counter::default();
        registry.register(
            "tripwire_connections_shed",
            "Stalled connections closed because a listener was at its connection limit",
            connections_shed.clone(),
        );
        let idle_drops = Counter::default();
        registry.register(
            "tripwire_customer_idle_drops",
            "Customers dropped because their history was older than every window",
            idle_drops.clone(),
        );
        let decision_log_dropped = Counter::default();
        registry.register(
            "tripwire_decision_log_dropped",
            "Decision log lines dropped because the writer could not keep up",
            decision_log_dropped.clone(),
        );
        let decision_log_written = Counter::default();
        registry.register(
            "tripwire_decision_log_written",
            "Decision log lines handed to the writer",
            decision_log_written.clone(),
        );
        let journal_frames = Counter::default();
        registry.register(
            "tripwire_state_journal_frames",
            "Changes journalled to the state directory",
            journal_frames.clone(),
        );
        let journal_dropped = Counter::default();
        registry.register(
            "tripwire_state_journal_dropped",
            "Changes not journalled because the journal writer fell too far behind",
            journal_dropped.clone(),
        );
        let damaged_frames = Counter::default();
        registry.register(
            "tripwire_state_damaged_frames",
            "Journal frames found damaged and skipped when state was recovered at start, their changes lost (counted from the frame headers that still make sense, at least one per damaged region); the journal was copied to corrupt/",
            damaged_frames.clone(),
        );
        let damaged_bytes = Counter::default();
        registry.register(
            "tripwire_state_damaged_bytes",
            "Journal bytes found damaged when state was recovered at start, skipped",
            damaged_bytes.clone(),
        );
        let missing_journals = Counter::default();
        registry.register(
            "tripwire_state_missing_journals",
            "Journal generations missing from the state directory when state was recovered at start (their changes are lost)",
            missing_journals.clone(),
        );
        let proxy_requests = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "tripwire_proxy_requests",
            "Proxy mode: requests by result (forwarded_allow, forwarded_review, denied, held, invalid_rejected, invalid_passed, passthrough, upstream_unreachable, upstream_timeout, upstream_error)",
            proxy_requests.clone(),
        );
        let proxy_forwarded = ["forwarded_allow", "forwarded_review"].map(|result| {
            proxy_requests
                .get_or_create(&ProxyLabels { result })
                .clone()
        });
        let proxy_failures = Family::<ProxyFailureLabels, Counter>::default();
        registry.register(
            "tripwire_proxy_internal_failures",
            "Proxy mode: requests tripwire could not decide, by cause (overload, internal_error) and the policy applied",
            proxy_failures.clone(),
        );
        let upstream_seconds = Histogram::new(
            LATENCY_BUCKETS
                .into_iter()
                .chain([0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        );
        registry.register_with_unit(
            "tripwire_proxy_upstream_duration",
            "Proxy mode: time from sending to the upstream to its response headers",
            Unit::Seconds,
            upstream_seconds.clone(),
        );
        Metrics {
            fleet: FleetMetrics::register(&mut registry),
            journal_frames,
            journal_dropped,
            damaged_frames,
            damaged_bytes,
            missing_journals,
            proxy_requests,
            proxy_forwarded,
            proxy_failures,
            upstream_seconds,
            registry,
            decisions,
            duplicates,
            rejected,
            rule_hits,
            decide_seconds,
            tags,
            scores,
            drift: crate::drift::ScoreDrift::default(),
            score_psi,
            reloads,
            rules_version,
            rules_info,
            rules_count,
            customers,
            entities,
            events,
            evictions,
            idle_drops,
            connections_shed,
            decision_log_dropped,
            decision_log_written,
            last_rules_info: parking_lot::Mutex::new(None),
            log_dropped_seen: AtomicU64::new(0),
        }
    }

    /// Records one answered decision.
    pub fn record_decision(&self, summary: &DecideSummary, seconds: f64) {
        let index = match summary.action {
            Action::Allow | Action::Tag => 0,
            Action::Review => 1,
            Action::Deny => 2,
        };
        if let Some(score) = summary.score {
            self.scores.observe(score as f64);
            if !summary.duplicate {
                self.drift.observe(&summary.rules, score);
            }
        }
        self.decisions[index].inc();
        self.decide_seconds.observe(seconds);
        if summary.duplicate {
            self.duplicates.inc();
            return;
        }
        let rules = &summary.rules.set.rules;
        for &i in summary.tags.iter() {
            self.tags
                .get_or_create(&TagLabels {
                    tag: rules[i as usize].id.to_string(),
                })
                .inc();
        }
        for (hits, mode) in [
            (&summary.hits, "enforce"),
            (&summary.shadow, "shadow"),
            (&summary.tags, "enforce"),
        ] {
            for &i in hits.iter() {
                let rule = &rules[i as usize];
                self.rule_hits
                    .get_or_create(&RuleHitLabels {
                        rule: rule.id.to_string(),
                        mode,
                        action: rule.action.as_str(),
                    })
                    .inc();
            }
        }
    }

    /// Updates `tripwire_score_psi` from the drift window under the live rules.
    pub fn refresh_drift(&self, rules: &LoadedRules) {
        if let Some(psi) = self.drift.report(rules).and_then(|r| r.psi) {
            self.score_psi.set(psi);
        }
    }

    /// Records a request refused before deciding (`bad_request`, `too_large`...).
    pub fn record_rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Records a reload attempt.
    pub fn record_reload(&self, trigger: ReloadTrigger, accepted: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                trigger: trigger.as_str(),
                outcome: if accepted { "accepted" } else { "refused" },
            })
            .inc();
    }

    /// Points the rules gauges at the live rule set.
    pub fn set_live_rules(&self, rules: &LoadedRules) {
        self.rules_version
            .set(i64::try_from(rules.version.seq).unwrap_or(i64::MAX));
        self.rules_count
            .set(i64::try_from(rules.set.rules().len()).unwrap_or(i64::MAX));
        let labels = RulesInfoLabels {
            version: rules.version.label.clone(),
            sha256: rules.version.sha256.clone(),
        };
        let mut last = self.last_rules_info.lock();
        if let Some(old) = last.take() {
            self.rules_info.remove(&old);
        }
        self.rules_info.get_or_create(&labels).set(1);
        *last = Some(labels);
    }

    /// Counts a proxied request by result.
    pub fn record_proxy(&self, result: &'static str) {
        self.proxy_requests
            .get_or_create(&ProxyLabels { result })
            .inc();
    }

    /// Counts a decided request forwarded to the upstream, under review or not.
    pub fn record_forwarded(&self, under_review: bool) {
        self.proxy_forwarded[usize::from(under_review)].inc();
    }

    /// Counts a request tripwire could not decide in proxy mode.
    pub fn record_proxy_failure(&self, cause: &'static str, policy: &'static str) {
        self.proxy_failures
            .get_or_create(&ProxyFailureLabels { cause, policy })
            .inc();
    }

    /// Records how long the upstream took to answer.
    pub fn observe_upstream(&self, seconds: f64) {
        self.upstream_seconds.observe(seconds);
    }

    /// Counts a stalled connection shed at the connection limit.
    pub fn record_connection_shed(&self) {
        self.connections_shed.inc();
    }

    /// Counts the damage that recovering persisted state found at start.
    pub fn record_recovery(&self, report: &RecoveryReport) {
        self.damaged_frames.inc_by(report.damaged_frames);
        self.damaged_bytes.inc_by(report.damaged_bytes);
        self.missing_journals.inc_by(report.missing_journal_count());
    }

    /// Counts a decision-log line handed to the writer.
    pub fn record_logged(&self) {
        self.decision_log_written.inc();
    }

    /// Renders every metric, refreshing those mirrored from the store, the journal and the
    /// decision log.
    pub fn render(
        &self,
        store: &Store,
        journal: Option<&crate::state::journal::Journal>,
        log_dropped_total: u64,
    ) -> String {
        if let Some(journal) = journal {
            catch_up(&self.journal_frames, journal.appended());
            catch_up(&self.journal_dropped, journal.dropped());
        }
        self.customers
            .set(i64::try_from(store.customers()).unwrap_or(i64::MAX));
        self.entities
            .set(i64::try_from(store.entities().len()).unwrap_or(i64::MAX));
        self.events
            .set(i64::try_from(store.events()).unwrap_or(i64::MAX));
        catch_up(&self.evictions, store.evictions());
        catch_up(&self.idle_drops, store.idle_drops());
        let seen = self
            .log_dropped_seen
            .swap(log_dropped_total, Ordering::Relaxed);
        if log_dropped_total > seen {
            self.decision_log_dropped.inc_by(log_dropped_total - seen);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Raises a counter mirroring a monotonic total kept elsewhere.
fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

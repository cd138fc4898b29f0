//! Compilation: [`ValidRules`] into the immutable [`RuleSet`] the engine runs.
//!
//! Everything the hot path needs is resolved here: distinct windows are deduplicated and sorted
//! so that one pass over a history fills every window's aggregates; hour ranges, amount lists
//! and amount statistics get their own small tables; each leaf points at a slot of precomputed
//! features by index; lists become sorted arrays; the condition trees are flattened into one
//! arena; the scorecard's bins are kept with their slots. A `RuleSet` is never mutated after
//! this; a new rule file makes a new one.

use super::ir::{
    AmountStat, Bin, Cond, EntityFeature, EntityMeasure, Feature, HistoryRatio, Leaf, LeafTest,
    ListId, Measure, TrendKind, ValidRules, Window, WindowMeasure,
};
use super::schema::{Action, Mode};
use super::zone::ZoneTable;

/// Most distinct (window, hour range) pairs read by `count_in_hours` / `sum_in_hours`.
pub const MAX_HOUR_WINDOWS: usize = 8;
/// Most distinct windows whose amount statistics are read.
pub const MAX_STAT_WINDOWS: usize = 8;
/// Most distinct entity features (`by:` windows and confirmed-fraud features).
pub const MAX_ENTITY_FEATURES: usize = 8;

/// Where a leaf reads its feature's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// An aggregate of window `i` of [`RuleSet::windows`].
    Window(WindowMeasure, u8),
    /// List count for pair `i` of [`RuleSet::list_windows`].
    ListCount(u8),
    /// Count or sum for pair `i` of [`RuleSet::hour_windows`].
    InHours(Measure, u8),
    /// A statistic for entry `i` of [`RuleSet::stat_windows`].
    Stat(AmountStat, u8),
    /// The amount against entry `i` of [`RuleSet::prior_windows`], with its minimum count.
    ToHistory(HistoryRatio, u8, u32),
    /// Entry `i` of [`RuleSet::entity_features`], with what it measures and its minimum count.
    Entity(EntityMeasure, u8, u32),
    /// The current amount.
    Amount,
    /// Local seconds of the day.
    LocalTime,
    /// Local hour.
    LocalHour,
    /// Metres from the previous geotagged transaction.
    DistanceKm,
    /// Metres per hour from the previous geotagged transaction.
    SpeedKmh,
    /// Microseconds since the credit grant.
    SinceCreditGrant,
    /// Amount / limit.
    AmountToLimit,
    /// The channel.
    Channel,
    /// The merchant.
    MerchantId,
    /// Consecutive increases.
    IncreasingStreak,
    /// Consecutive decreases.
    DecreasingStreak,
    /// Microseconds since the previous transaction.
    SinceLastTransaction,
    /// A monthly trend.
    Trend(TrendKind, Measure),
    /// Coefficient of variation of monthly counts.
    MonthlyCountCv,
    /// The score.
    Score,
}

/// A compiled leaf: where to read, how to judge, and the validated leaf for explanations.
#[derive(Clone, Copy, Debug)]
pub struct CompiledLeaf {
    /// Where the value is.
    pub slot: Slot,
    /// How it is judged.
    pub test: LeafTest,
    /// The leaf as validated, for messages.
    pub source: Leaf,
}

/// A node of the flattened condition arena.
#[derive(Clone, Copy, Debug)]
pub enum Node {
    /// Every child in `children[start..start+len]` holds.
    All {
        /// First child index in [`RuleSet::children`].
        start: u32,
        /// Number of children.
        len: u32,
    },
    /// Some child holds.
    Any {
        /// First child index in [`RuleSet::children`].
        start: u32,
        /// Number of children.
        len: u32,
    },
    /// The child node does not hold.
    Not(u32),
    /// A feature test.
    Leaf(CompiledLeaf),
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// Unique id.
    pub id: Box<str>,
    /// What the rule is for.
    pub description: Box<str>,
    /// What a match asks for.
    pub action: Action,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Root node in [`RuleSet::nodes`].
    pub root: u32,
    /// The condition reads the scorecard's score: a match names the characteristics that cost
    /// the most points (reason codes).
    pub reads_score: bool,
}

fn reads_score(cond: &Cond) -> bool {
    match cond {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().any(reads_score),
        Cond::Not(c) => reads_score(c),
        Cond::Leaf(leaf) => leaf.feature == Feature::Score,
    }
}

/// A compiled scorecard characteristic.
#[derive(Clone, Debug)]
pub struct CompiledCharacteristic {
    /// Where the value is.
    pub slot: Slot,
    /// The bins, ascending.
    pub bins: Vec<Bin>,
    /// Points when the value is missing.
    pub missing_points: i64,
}

/// A compiled scorecard.
#[derive(Clone, Debug)]
pub struct CompiledScorecard {
    /// Base score.
    pub base_score: i64,
    /// Characteristics.
    pub characteristics: Vec<CompiledCharacteristic>,
}

/// A list of amounts, as membership is tested: `list_count` tests every event of its window, so
/// a test is mostly a miss, told in a few instructions by a 64-bit summary of the members
/// before the members themselves are compared.
#[derive(Clone, Debug)]
pub struct AmountList {
    /// The members, minor units, sorted.
    members: Box<[i64]>,
    /// Bit `slot(m)` set for every member `m`: an amount whose bit is clear is no member.
    slots: u64,
}

impl AmountList {
    /// The list of `members` (minor units; sorted, as validation leaves them).
    pub fn new(members: Box<[i64]>) -> AmountList {
        debug_assert!(members.is_sorted());
        let slots = members.iter().fold(0, |bits, &m| bits | 1 << Self::slot(m));
        AmountList { members, slots }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[i64] {
        &self.members
    }

    /// Whether `amount` is a member.
    #[inline]
    pub fn contains(&self, amount: i64) -> bool {
        if self.slots >> Self::slot(amount) & 1 == 0 {
            return false;
        }
        // Lists are a handful of entries; a linear scan beats a binary search there.
        if self.members.len() <= 16 {
            self.members.contains(&amount)
        } else {
            self.members.binary_search(&amount).is_ok()
        }
    }

    /// Which of 64 slots an amount falls in: the top six bits of a multiplicative hash, since
    /// amounts cluster on round figures that their low bits would not tell apart.
    #[inline(always)]
    fn slot(amount: i64) -> u32 {
        ((amount as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as u32
    }
}

/// Which optional features any rule or the scorecard reads, so the engine computes only those.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// Local time of day or hour (also hour-range aggregates).
    pub local_time: bool,
    /// Distance or speed from the previous geotagged transaction.
    pub geo: bool,
    /// Increasing or decreasing streaks.
    pub streaks: bool,
    /// Time since the previous transaction.
    pub since_last: bool,
    /// Calendar-month buckets.
    pub months: bool,
    /// Entity kinds whose state is read (by [`EntityKind`](crate::state::entity::EntityKind)
    /// discriminant).
    pub entity_kinds: [bool; 4],
    /// Longest reach (window plus maturity) of an entity feature, microseconds.
    pub entity_reach: i64,
    /// Longest reach of a feature over the customer's own confirmed frauds.
    pub fraud_reach: i64,
    /// Which statistics of the earlier amounts (`amount_to_*`, `amount_zscore`) are read
    /// beyond their count and sum: the rest are left at zero.
    pub prior: PriorNeeds,
    /// The windows, of [`RuleSet::windows`] shortest first, up to the longest whose count of
    /// the current amount (`same_amount_count`) is read: counted in these alone, since the
    /// count depends on the amount decided and no running total can give it.
    pub same_amount_windows: u8,
}

/// The statistics of earlier amounts a rule set reads, beyond count and sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PriorNeeds {
    /// The median (`amount_to_median`): counting passes around a guess, a selection when the
    /// guess is far (`engine::features::median_x4`).
    pub median: bool,
    /// The largest (`amount_to_max`).
    pub max: bool,
    /// The sum of squares (`amount_zscore`).
    pub sum_sq: bool,
}

/// When rules read travel, the previous location matters for as long as any journey could be
/// too fast: half the earth's circumference at 900 km/h is about 22 hours.
pub const TRAVEL_HORIZON_MICROS: i64 = 24 * 3_600 * 1_000_000;

/// When rules read monthly trends or the time since the last transaction, a customer's state
/// matters for as long as the month buckets reach back: thirteen months of 31 days. Sweeping
/// earlier would wipe the trends of a customer who pauses for a season, and make a customer
/// silent for three months vanish from `?tag=` scans that look for exactly them.
pub const MONTHS_HORIZON_MICROS: i64 = 13 * 31 * 86_400 * 1_000_000;

/// An immutable, compiled rule set.
#[derive(Debug)]
pub struct RuleSet {
    /// The validated rules this was compiled from (for explanations and the reference).
    pub valid: ValidRules,
    /// The rules' time zone (`valid.timezone`) with its offsets precomputed, for time-of-day
    /// features and calendar months on the hot path.
    pub zone: ZoneTable,
    /// Distinct windows, shortest first.
    pub windows: Vec<Window>,
    /// Distinct (window index, list) pairs for `list_count`.
    pub list_windows: Vec<(u8, ListId)>,
    /// Distinct (window index, from, to) hour ranges for `*_in_hours`.
    pub hour_windows: Vec<(u8, u32, u32)>,
    /// Window indices whose amount statistics are read.
    pub stat_windows: Vec<u8>,
    /// Window indices whose statistics of the earlier transactions (the current one excluded)
    /// are read, by `amount_to_*` and `amount_zscore`.
    pub prior_windows: Vec<u8>,
    /// Distinct entity features: what the interceptor reads from the entity store (or, for
    /// the customer's own frauds, extraction from the ring) before evaluating.
    pub entity_features: Vec<EntityFeature>,
    /// Per list, its members as minor-unit amounts (empty unless used for amounts).
    pub amount_lists: Vec<AmountList>,
    /// Per list, its members as sorted strings.
    pub string_lists: Vec<Box<[Box<str>]>>,
    /// Condition arena.
    pub nodes: Vec<Node>,
    /// Child indices of `All`/`Any` nodes.
    pub children: Vec<u32>,
    /// Rules in file order.
    pub rules: Vec<CompiledRule>,
    /// The scorecard, if any.
    pub scorecard: Option<CompiledScorecard>,
    /// Optional features in use.
    pub needs: Needs,
    /// Longest window, microseconds: history older than this cannot change a window feature.
    pub horizon: i64,
}

impl RuleSet {
    /// The compiled rules, in file order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Longest window in microseconds (0 when no rule reads history).
    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    /// How far back, in event time, this rule set can read a customer's history: its longest
    /// window, a day when it reads travel, thirteen months when it reads monthly features or
    /// the time since the last transaction. History older than this cannot change a decision.
    pub fn retention(&self) -> i64 {
        let mut horizon = self.horizon;
        if self.needs.geo {
            horizon = horizon.max(TRAVEL_HORIZON_MICROS);
        }
        if self.needs.months || self.needs.since_last {
            horizon = horizon.max(MONTHS_HORIZON_MICROS);
        }
        horizon.max(self.needs.fraud_reach)
    }

    /// Worst-case evaluation work of one decision, in abstract units, for a ring of
    /// `ring_capacity` events: every event visited once with a step per window table entry,
    /// each statistics window sorting its events, then every condition node, rule and bin.
    pub fn cost(&self, ring_capacity: usize) -> u64 {
        let ring = ring_capacity as u64;
        let per_event = 1
            + self.windows.len() as u64
            + self.list_windows.len() as u64
            + self.hour_windows.len() as u64;
        let sort = (self.stat_windows.len() + self.prior_windows.len()) as u64
            * ring
            * u64::from(ring.max(2).ilog2());
        let bins: u64 = self
            .scorecard
            .iter()
            .flat_map(|s| &s.characteristics)
            .map(|c| c.bins.len() as u64 + 1)
            .sum();
        // An entity feature costs one shard lock and a walk over its hourly buckets.
        let entities =
            self.entity_features.len() as u64 * 64 + ring * u64::from(self.needs.fraud_reach > 0);
        ring * per_event
            + sort
            + entities
            + self.nodes.len() as u64
            + self.rules.len() as u64
            + bins
    }
}

struct Tables {
    windows: Vec<Window>,
    list_windows: Vec<(Window, ListId)>,
    hour_windows: Vec<(Window, u32, u32)>,
    stat_windows: Vec<Window>,
    prior_windows: Vec<Window>,
    entity_features: Vec<EntityFeature>,
}

fn gather(feature: Feature, t: &mut Tables) {
    if let Some(w) = feature.window() {
        t.windows.push(w);
    }
    match feature {
        Feature::ListCount(w, l) => t.list_windows.push((w, l)),
        Feature::InHours(_, w, from, to) => t.hour_windows.push((w, from, to)),
        Feature::Stat(_, w) => t.stat_windows.push(w),
        Feature::ToHistory(_, w, _) => t.prior_windows.push(w),
        Feature::ByEntity(e) => t.entity_features.push(e),
        _ => {}
    }
}

fn gather_cond(cond: &Cond, t: &mut Tables) {
    match cond {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| gather_cond(c, t)),
        Cond::Not(c) => gather_cond(c, t),
        Cond::Leaf(leaf) => gather(leaf.feature, t),
    }
}

/// Compiles validated rules.
pub fn compile(valid: &ValidRules) -> RuleSet {
    let mut t = Tables {
        windows: Vec::new(),
        list_windows: Vec::new(),
        hour_windows: Vec::new(),
        stat_windows: Vec::new(),
        prior_windows: Vec::new(),
        entity_features: Vec::new(),
    };
    for rule in &valid.rules {
        gather_cond(&rule.when, &mut t);
    }
    for c in valid.scorecard.iter().flat_map(|s| &s.characteristics) {
        gather(c.feature, &mut t);
    }
    for v in [&mut t.windows, &mut t.stat_windows, &mut t.prior_windows] {
        v.sort_unstable();
        v.dedup();
    }
    t.list_windows.sort_unstable();
    t.list_windows.dedup();
    t.hour_windows.sort_unstable();
    t.hour_windows.dedup();
    t.entity_features.sort_unstable();
    t.entity_features.dedup();

    let windows = t.windows.clone();
    let window_index = |w: Window| -> u8 {
        let i = windows
            .binary_search(&w)
            .expect("every window was gathered");
        u8::try_from(i).expect("validation caps distinct windows well below 256")
    };
    let mut set = RuleSet {
        valid: valid.clone(),
        zone: ZoneTable::new(&valid.timezone),
        windows: windows.clone(),
        list_windows: t
            .list_windows
            .iter()
            .map(|&(w, l)| (window_index(w), l))
            .collect(),
        hour_windows: t
            .hour_windows
            .iter()
            .map(|&(w, f, to)| (window_index(w), f, to))
            .collect(),
        stat_windows: t.stat_windows.iter().map(|&w| window_index(w)).collect(),
        prior_windows: t.prior_windows.iter().map(|&w| window_index(w)).collect(),
        entity_features: t.entity_features.clone(),
        amount_lists: valid
            .lists
            .iter()
            .map(|l| AmountList::new(l.amounts.iter().map(|a| a.minor()).collect()))
            .collect(),
        string_lists: valid
            .lists
            .iter()
            .map(|l| {
                let mut entries: Vec<Box<str>> =
                    l.entries.iter().map(|e| e.as_str().into()).collect();
                entries.sort_unstable();
                entries.dedup();
                entries.into_boxed_slice()
            })
            .collect(),
        nodes: Vec::new(),
        children: Vec::new(),
        rules: Vec::with_capacity(valid.rules.len()),
        scorecard: None,
        needs: Needs::default(),
        horizon: windows.last().map_or(0, |w| w.micros),
    };
    for rule in &valid.rules {
        let root = lower(&mut set, &rule.when, &t);
        set.rules.push(CompiledRule {
            id: rule.id.as_str().into(),
            description: rule.description.as_str().into(),
            action: rule.action,
            mode: rule.mode,
            root,
            reads_score: reads_score(&rule.when),
        });
    }
    if let Some(card) = &valid.scorecard {
        let characteristics = card
            .characteristics
            .iter()
            .map(|c| CompiledCharacteristic {
                slot: slot_for(&mut set, c.feature, &t),
                bins: c.bins.clone(),
                missing_points: c.missing_points,
            })
            .collect();
        set.scorecard = Some(CompiledScorecard {
            base_score: card.base_score,
            characteristics,
        });
    }
    set
}

fn small(i: usize) -> u8 {
    u8::try_from(i).expect("validation caps these tables well below 256")
}

fn slot_for(set: &mut RuleSet, feature: Feature, t: &Tables) -> Slot {
    let w = |w: Window| small(t.windows.binary_search(&w).expect("gathered"));
    let needs = &mut set.needs;
    match feature {
        Feature::Window(m, win) => {
            if m == WindowMeasure::SameAmountCount {
                needs.same_amount_windows = needs.same_amount_windows.max(w(win) + 1);
            }
            Slot::Window(m, w(win))
        }
        Feature::ListCount(win, list) => Slot::ListCount(small(
            t.list_windows
                .binary_search(&(win, list))
                .expect("gathered"),
        )),
        Feature::InHours(m, win, from, to) => {
            needs.local_time = true;
            Slot::InHours(
                m,
                small(
                    t.hour_windows
                        .binary_search(&(win, from, to))
                        .expect("gathered"),
                ),
            )
        }
        Feature::Stat(s, win) => Slot::Stat(
            s,
            small(t.stat_windows.binary_search(&win).expect("gathered")),
        ),
        Feature::ToHistory(r, win, min) => {
            match r {
                HistoryRatio::Mean => {}
                HistoryRatio::Median => needs.prior.median = true,
                HistoryRatio::Max => needs.prior.max = true,
                HistoryRatio::Zscore => needs.prior.sum_sq = true,
            }
            Slot::ToHistory(
                r,
                small(t.prior_windows.binary_search(&win).expect("gathered")),
                min,
            )
        }
        Feature::ByEntity(e) => {
            match e.by {
                Some(kind) => {
                    needs.entity_kinds[kind as usize] = true;
                    needs.entity_reach = needs.entity_reach.max(e.reach());
                }
                None => needs.fraud_reach = needs.fraud_reach.max(e.reach()),
            }
            Slot::Entity(
                e.measure,
                small(t.entity_features.binary_search(&e).expect("gathered")),
                e.min_count,
            )
        }
        Feature::Amount => Slot::Amount,
        Feature::LocalTime => {
            needs.local_time = true;
            Slot::LocalTime
        }
        Feature::LocalHour => {
            needs.local_time = true;
            Slot::LocalHour
        }
        Feature::DistanceKm => {
            needs.geo = true;
            Slot::DistanceKm
        }
        Feature::SpeedKmh => {
            needs.geo = true;
            Slot::SpeedKmh
        }
        Feature::SinceCreditGrant => Slot::SinceCreditGrant,
        Feature::AmountToLimit => Slot::AmountToLimit,
        Feature::Channel => Slot::Channel,
        Feature::MerchantId => Slot::MerchantId,
        Feature::IncreasingStreak => {
            needs.streaks = true;
            Slot::IncreasingStreak
        }
        Feature::DecreasingStreak => {
            needs.streaks = true;
            Slot::DecreasingStreak
        }
        Feature::SinceLastTransaction => {
            needs.since_last = true;
            Slot::SinceLastTransaction
        }
        Feature::Trend(k, m) => {
            needs.months = true;
            Slot::Trend(k, m)
        }
        Feature::MonthlyCountCv => {
            needs.months = true;
            Slot::MonthlyCountCv
        }
        Feature::Score => Slot::Score,
    }
}

fn lower(set: &mut RuleSet, cond: &Cond, t: &Tables) -> u32 {
    let node = match cond {
        Cond::All(cs) | Cond::Any(cs) => {
            let kids: Vec<u32> = cs.iter().map(|c| lower(set, c, t)).collect();
            let start = index(set.children.len());
            set.children.extend(kids);
            let len = index(cs.len());
            if matches!(cond, Cond::All(_)) {
                Node::All { start, len }
            } else {
                Node::Any { start, len }
            }
        }
        Cond::Not(c) => Node::Not(lower(set, c, t)),
        Cond::Leaf(leaf) => Node::Leaf(CompiledLeaf {
            slot: slot_for(set, leaf.feature, t),
            test: leaf.test,
            source: *leaf,
        }),
    };
    set.nodes.push(node);
    index(set.nodes.len() - 1)
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("rule set sizes are capped far below u32::MAX")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load_bytes;
    use crate::txn::MICROS_PER_SECOND;

    fn set(yaml: &str) -> RuleSet {
        load_bytes(yaml.as_bytes()).expect("test rules compile")
    }

    const MINUTE: i64 = 60 * MICROS_PER_SECOND;

    #[test]
    fn windows_are_deduplicated_sorted_and_the_horizon_is_the_longest() {
        let s = set(
            "timezone: UTC\nrules:\n  - id: a\n    action: review\n    when: { count: { window: 1h, at_least: 3 } }\n  - id: b\n    action: deny\n    when: { all: [ { sum: { window: 10m, at_least: \"100\" } }, { count: { window: 60m, at_least: 9 } } ] }\n",
        );
        let micros: Vec<i64> = s.windows.iter().map(|w| w.micros).collect();
        assert_eq!(
            micros,
            vec![10 * MINUTE, 60 * MINUTE],
            "1h and 60m are one window"
        );
        assert_eq!(s.horizon(), 60 * MINUTE);
        assert_eq!(s.rules().len(), 2);
        assert_eq!(&*s.rules()[1].id, "b");
    }

    #[test]
    fn a_rule_set_without_windows_reads_no_history() {
        let s = set(
            "timezone: UTC\nrules:\n  - id: big\n    action: review\n    when: { amount: { at_least: \"5000\" } }\n",
        );
        assert!(s.windows.is_empty());
        assert_eq!(s.horizon(), 0);
        let needs = s.needs;
        assert!(
            !(needs.local_time || needs.geo || needs.streaks || needs.since_last || needs.months)
        );
    }

    #[test]
    fn needs_name_exactly_the_optional_features_read() {
        let s = set(
            "timezone: Asia/Shanghai\nrules:\n  - id: night\n    action: review\n    when: { local_time: { from: \"01:00\", to: \"05:00\" } }\n  - id: travel\n    action: deny\n    when: { speed_kmh: { more_than: 900 } }\n",
        );
        assert!(s.needs.local_time);
        assert!(s.needs.geo);
        assert!(!s.needs.streaks && !s.needs.since_last && !s.needs.months);
        let trend = set(
            "timezone: UTC\nrules:\n  - id: up\n    action: review\n    when: { trend_mom: { of: sum, at_least: \"2\" } }\n",
        );
        assert!(trend.needs.months);
    }

    #[test]
    fn amount_lists_hold_sorted_minor_units_and_string_lists_sorted_unique_entries() {
        let s = set(
            "timezone: UTC\nlists:\n  probes: [\"499\", \"99\", \"99.00\"]\n  shops: [m2, m1, m2]\nrules:\n  - id: probe\n    action: review\n    when: { amount: { in: probes } }\n  - id: shop\n    action: review\n    when: { merchant_id: { in: shops } }\n",
        );
        let probes = s
            .valid
            .lists
            .iter()
            .position(|l| l.name == "probes")
            .unwrap();
        let shops = s
            .valid
            .lists
            .iter()
            .position(|l| l.name == "shops")
            .unwrap();
        assert_eq!(s.amount_lists[probes].members(), &[9_900, 49_900]);
        let list = &s.amount_lists[probes];
        assert!(list.contains(9_900) && list.contains(49_900));
        assert!(!list.contains(9_901) && !list.contains(0) && !list.contains(49_900 * 64));
        let names: Vec<&str> = s.string_lists[shops].iter().map(|e| &**e).collect();
        assert_eq!(names, vec!["m1", "m2"]);
    }

    #[test]
    fn the_cost_grows_with_the_ring_and_with_the_windows() {
        let one = set(
            "timezone: UTC\nrules:\n  - id: a\n    action: review\n    when: { count: { window: 1h, at_least: 3 } }\n",
        );
        let two = set(
            "timezone: UTC\nrules:\n  - id: a\n    action: review\n    when: { all: [ { count: { window: 1h, at_least: 3 } }, { count: { window: 1d, at_least: 9 } } ] }\n",
        );
        assert!(one.cost(64) < one.cost(128));
        assert!(one.cost(64) < two.cost(64));
        // One event visit per ring slot, one step per window, plus the nodes and the rule.
        assert_eq!(one.cost(64), 64 * 2 + 1 + 1);
    }
}

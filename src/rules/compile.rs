//! Compilation: [`ValidRules`] into the immutable [`RuleSet`] the engine runs.
//!
//! Everything the hot path needs is resolved here: distinct windows are deduplicated and sorted
//! so that one pass over a history fills every window's aggregates; each leaf points at a slot
//! of precomputed features by index; lists become sorted arrays; the condition trees are
//! flattened into one arena. A `RuleSet` is never mutated after this; a new rule file makes a
//! new one.

use jiff::tz::TimeZone;

use super::schema::{Action, Mode};
use super::validate::{Cond, Feature, Leaf, LeafTest, ListId, ValidRules, Window};

/// Where a leaf reads its feature's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Count in window `i` of [`RuleSet::windows`].
    Count(u8),
    /// Sum in window `i`.
    Sum(u8),
    /// Same-amount count in window `i`.
    SameAmountCount(u8),
    /// List count for pair `i` of [`RuleSet::list_windows`].
    ListCount(u8),
    /// Failed count in window `i`.
    FailedCount(u8),
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
}

/// Which optional features any rule reads, so the engine computes only those.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// Local time of day or hour.
    pub local_time: bool,
    /// Distance or speed from the previous geotagged transaction.
    pub geo: bool,
    /// Same-amount counts.
    pub same_amount: bool,
    /// Failed counts.
    pub failed: bool,
}

/// An immutable, compiled rule set.
#[derive(Debug)]
pub struct RuleSet {
    /// The validated rules this was compiled from (for explanations and the reference).
    pub valid: ValidRules,
    /// Time zone for time-of-day features.
    pub timezone: TimeZone,
    /// Distinct windows, shortest first.
    pub windows: Vec<Window>,
    /// Distinct (window index, list) pairs for `list_count`.
    pub list_windows: Vec<(u8, ListId)>,
    /// Per list, its members as sorted minor-unit amounts (empty unless used for amounts).
    pub amount_lists: Vec<Box<[i64]>>,
    /// Per list, its members as sorted strings.
    pub string_lists: Vec<Box<[Box<str>]>>,
    /// Condition arena.
    pub nodes: Vec<Node>,
    /// Child indices of `All`/`Any` nodes.
    pub children: Vec<u32>,
    /// Rules in file order.
    pub rules: Vec<CompiledRule>,
    /// Optional features in use.
    pub needs: Needs,
    /// Longest window, microseconds: history older than this cannot change a decision.
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

    /// Worst-case evaluation work of one decision, in abstract units, for a ring of
    /// `ring_capacity` events: every event visited once with a step per window and per
    /// (list, window) pair, then every condition node and rule evaluated once.
    pub fn cost(&self, ring_capacity: usize) -> u64 {
        let per_event = 1 + self.windows.len() as u64 + self.list_windows.len() as u64;
        ring_capacity as u64 * per_event + self.nodes.len() as u64 + self.rules.len() as u64
    }
}

/// Compiles validated rules.
pub fn compile(valid: &ValidRules) -> RuleSet {
    let mut windows: Vec<Window> = Vec::new();
    let mut pairs: Vec<(Window, ListId)> = Vec::new();
    for rule in &valid.rules {
        gather(&rule.when, &mut windows, &mut pairs);
    }
    windows.sort_unstable();
    windows.dedup();
    pairs.sort_unstable();
    pairs.dedup();
    let window_index = |w: Window| -> u8 {
        let i = windows
            .binary_search(&w)
            .expect("every window was gathered above");
        u8::try_from(i).expect("validation caps distinct windows well below 256")
    };
    let list_windows: Vec<(u8, ListId)> =
        pairs.iter().map(|&(w, l)| (window_index(w), l)).collect();

    let mut set = RuleSet {
        valid: valid.clone(),
        timezone: valid.timezone.clone(),
        windows: windows.clone(),
        list_windows,
        amount_lists: valid
            .lists
            .iter()
            .map(|l| l.amounts.iter().map(|a| a.minor()).collect())
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
        needs: Needs::default(),
        horizon: windows.last().map_or(0, |w| w.micros),
    };
    for rule in &valid.rules {
        let root = lower(&mut set, &rule.when, &windows, &pairs);
        set.rules.push(CompiledRule {
            id: rule.id.as_str().into(),
            description: rule.description.as_str().into(),
            action: rule.action,
            mode: rule.mode,
            root,
        });
    }
    set
}

fn gather(cond: &Cond, windows: &mut Vec<Window>, pairs: &mut Vec<(Window, ListId)>) {
    match cond {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| gather(c, windows, pairs)),
        Cond::Not(c) => gather(c, windows, pairs),
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

fn lower(set: &mut RuleSet, cond: &Cond, windows: &[Window], pairs: &[(Window, ListId)]) -> u32 {
    let node = match cond {
        Cond::All(cs) | Cond::Any(cs) => {
            let kids: Vec<u32> = cs.iter().map(|c| lower(set, c, windows, pairs)).collect();
            let start = index(set.children.len());
            set.children.extend(kids);
            let len = index(cs.len());
            if matches!(cond, Cond::All(_)) {
                Node::All { start, len }
            } else {
                Node::Any { start, len }
            }
        }
        Cond::Not(c) => Node::Not(lower(set, c, windows, pairs)),
        Cond::Leaf(leaf) => {
            let w = |w: Window| -> u8 {
                u8::try_from(windows.binary_search(&w).expect("gathered"))
                    .expect("validation caps windows")
            };
            let slot = match leaf.feature {
                Feature::Count(win) => Slot::Count(w(win)),
                Feature::Sum(win) => Slot::Sum(w(win)),
                Feature::SameAmountCount(win) => {
                    set.needs.same_amount = true;
                    Slot::SameAmountCount(w(win))
                }
                Feature::ListCount(win, list) => Slot::ListCount(
                    u8::try_from(pairs.binary_search(&(win, list)).expect("gathered"))
                        .expect("validation caps list windows"),
                ),
                Feature::FailedCount(win) => {
                    set.needs.failed = true;
                    Slot::FailedCount(w(win))
                }
                Feature::Amount => Slot::Amount,
                Feature::LocalTime => {
                    set.needs.local_time = true;
                    Slot::LocalTime
                }
                Feature::LocalHour => {
                    set.needs.local_time = true;
                    Slot::LocalHour
                }
                Feature::DistanceKm => {
                    set.needs.geo = true;
                    Slot::DistanceKm
                }
                Feature::SpeedKmh => {
                    set.needs.geo = true;
                    Slot::SpeedKmh
                }
                Feature::SinceCreditGrant => Slot::SinceCreditGrant,
                Feature::AmountToLimit => Slot::AmountToLimit,
                Feature::Channel => Slot::Channel,
                Feature::MerchantId => Slot::MerchantId,
            };
            Node::Leaf(CompiledLeaf {
                slot,
                test: leaf.test,
                source: *leaf,
            })
        }
    };
    set.nodes.push(node);
    index(set.nodes.len() - 1)
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("rule set sizes are capped far below u32::MAX")
}

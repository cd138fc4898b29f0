//! Replay's entity pass taken entity by entity, a segment of rows at a time, when that gives the
//! ordered pass's values.
//!
//! The ordered entity pass (see [`super::split`]) walks the rows in time order and finds each
//! row's merchant (device, IP, channel) in a store of thousands; the merchant's previous
//! transaction is usually thousands of rows back, so nearly every row misses the cache several
//! times (the record, the oldest and newest hours, the window's first and last hours). On a
//! 1.7 M-row card export it was a third of the replay's CPU.
//!
//! An entity's windows depend on its own transactions and fraud reports alone, in their order,
//! as long as the store never drops an entity to stay within its cap. Then the same values come
//! from taking a segment of rows (a few weeks of a large export) entity by entity: each entity's
//! rows of the segment in time order, its fraud reports coming due between them where the
//! ordered pass would count them. An entity's record is then read once a segment instead of
//! once a row, and entities are numbered beforehand, so it is found without a look-up; records
//! are kept between segments, so each segment's values can be handed on, and forgotten, as the
//! customer parts take them. Whether the store would drop an entity is known before the pass,
//! from the distinct entities; when it would, replay runs the ordered pass.

use std::collections::VecDeque;

use smallvec::SmallVec;

use crate::interceptor;
use crate::rules::RuleSet;
use crate::rules::compile::MAX_ENTITY_FEATURES;
use crate::state::entity::{EntityKind, EntityRecord, EntityValue};
use crate::state::{Store, StoreConfig};
use crate::txn::EventTime;

use super::input::Row;
use super::{ReplayConfig, join};

/// No entity: the row does not name one of the kind.
const NONE: u32 = u32::MAX;

/// The pass between segments: every row's entity of each kind the rules read, and each
/// entity's state so far.
pub(crate) struct ByEntity {
    kinds: Vec<KindPass>,
    /// Entity features the rules read (values a row).
    features: usize,
    /// Hashes customers and transactions as the replay's stores do.
    hashes: Store,
    /// What the pass reads of each row of the segment, in row order.
    named: Vec<Named>,
    /// The same, a kind's rows grouped by entity, and where each entity's start.
    grouped: Vec<Named>,
    starts: Vec<u32>,
}

/// One entity kind the rules read.
struct KindPass {
    kind: EntityKind,
    /// The features it answers.
    of_kind: Vec<usize>,
    /// Whether one of them reads the entities' distinct customers: only then are they kept.
    distinct_read: bool,
    /// Each row's entity of this kind, numbered in the order first seen ([`NONE`] for none).
    entity_of: Vec<u32>,
    /// Each entity's state.
    held: Vec<Held>,
}

/// One entity's state between segments.
#[derive(Default)]
struct Held {
    record: EntityRecord,
    /// Fraud reports on its rows not yet due: when they come due, and the row.
    due: VecDeque<(EventTime, u32)>,
}

/// What the pass reads of a row, copied out of the row in row order, then copied again into
/// entity order as the rows are grouped: the pass takes the rows in entity order, and reading
/// the rows themselves there (and their texts, for the customer's hash) missed the cache on
/// nearly every one, as did reading these copies in row order through a list of indices.
#[derive(Clone, Copy, Default)]
struct Named {
    /// The row's index in its segment.
    k: u32,
    fraud: bool,
    at: EventTime,
    amount: i64,
    customer: u64,
}

/// What one thread found in its run of rows for one entity kind: the entities in the order
/// first seen, and each row's among them ([`NONE`] for a row naming none).
pub(crate) struct Found<'r> {
    keys: Vec<&'r str>,
    entity_of: Vec<u32>,
}

/// The entity kinds the rules read windows of.
pub(crate) fn kinds_read(set: &RuleSet) -> Vec<EntityKind> {
    EntityKind::ALL
        .into_iter()
        .filter(|&kind| set.needs.entity_kinds[kind as usize])
        .collect()
}

/// Finds the entities of some kinds named by a run of rows, a row at a time. Replay's plan
/// runs one on each of its threads, in the pass over the rows it makes anyway (see
/// `super::split::plan`).
pub(crate) struct Finder<'r, 'k> {
    kinds: &'k [EntityKind],
    /// Each kind's entities so far, by their bytes, held in the map itself: a look-up compares
    /// them there, not in the row that first named the entity, which is long out of cache.
    index: Vec<ahash::AHashMap<SmallVec<[u8; 24]>, u32>>,
    found: Vec<Found<'r>>,
}

impl<'r, 'k> Finder<'r, 'k> {
    /// A finder of `kinds`, for a run of about `rows` rows.
    pub(crate) fn new(kinds: &'k [EntityKind], rows: usize) -> Finder<'r, 'k> {
        Finder {
            kinds,
            index: kinds.iter().map(|_| Default::default()).collect(),
            found: kinds
                .iter()
                .map(|_| Found {
                    keys: Vec::new(),
                    entity_of: Vec::with_capacity(rows),
                })
                .collect(),
        }
    }

    /// The run's next row.
    #[inline]
    pub(crate) fn add(&mut self, row: &'r Row) {
        for ((&kind, index), found) in self.kinds.iter().zip(&mut self.index).zip(&mut self.found) {
            let g = match row.entity_key(kind) {
                None => NONE,
                Some(key) => match index.get(key.as_bytes()) {
                    Some(&g) => g,
                    None => {
                        // A run is part of a history numbered in 32 bits (see `prepare`).
                        let g = found.keys.len() as u32;
                        found.keys.push(key);
                        index.insert(SmallVec::from_slice(key.as_bytes()), g);
                        g
                    }
                },
            };
            found.entity_of.push(g);
        }
    }

    /// What was found, a kind at a time.
    pub(crate) fn finish(self) -> Vec<Found<'r>> {
        self.found
    }
}

/// One kind's entities numbered across the runs (in row order): the distinct keys, and each
/// row's entity.
fn number<'r>(runs: Vec<&Found<'r>>) -> (Vec<&'r str>, Vec<u32>) {
    let mut index: ahash::AHashMap<&'r str, u32> = ahash::AHashMap::new();
    let mut keys = Vec::new();
    let mut entity_of = Vec::with_capacity(runs.iter().map(|r| r.entity_of.len()).sum());
    for found in runs {
        let numbers: Vec<u32> = found
            .keys
            .iter()
            .map(|&key| {
                *index.entry(key).or_insert_with(|| {
                    keys.push(key);
                    keys.len() as u32 - 1
                })
            })
            .collect();
        entity_of.extend(
            found
                .entity_of
                .iter()
                .map(|&g| if g == NONE { NONE } else { numbers[g as usize] }),
        );
    }
    (keys, entity_of)
}

impl ByEntity {
    /// Numbers every row's entities, a thread a kind, from `found`: what a [`Finder`] found in
    /// each run of the rows, in row order, for the kinds of [`kinds_read`]. `None` when the
    /// ordered pass's store (built with `seed`, as the replay's stores are) would drop an
    /// entity, which makes a value depend on other entities' transactions.
    pub(crate) fn prepare(
        rows: &[Row],
        config: &ReplayConfig,
        set: &RuleSet,
        seed: u64,
        found: &[Vec<Found<'_>>],
    ) -> Option<ByEntity> {
        // Rows and entities are numbered in 32 bits; a history that long (over 4 billion rows)
        // takes the ordered pass.
        if u32::try_from(rows.len()).is_err() {
            return None;
        }
        let hashes = Store::for_one_run(
            StoreConfig {
                max_customers: 1,
                ring_capacity: config.ring_capacity,
            },
            seed,
        );
        let read = kinds_read(set);
        // Each kind's entities numbered across the runs, a thread a kind.
        let mut per_kind: Vec<Vec<&Found<'_>>> = read.iter().map(|_| Vec::new()).collect();
        for found in found {
            for (kind, found) in per_kind.iter_mut().zip(found) {
                kind.push(found);
            }
        }
        let numbered: Vec<(Vec<&str>, Vec<u32>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = per_kind
                .into_iter()
                .map(|runs| scope.spawn(move || number(runs)))
                .collect();
            handles.into_iter().map(join).collect()
        });
        let every_entity = read
            .iter()
            .zip(&numbered)
            .flat_map(|(&kind, (keys, _))| keys.iter().map(move |&key| (kind, key)));
        if !hashes.entities().would_hold_all(every_entity) {
            return None;
        }
        let features = set.entity_features.len();
        let kinds = read
            .into_iter()
            .zip(numbered)
            .map(|(kind, (keys, entity_of))| KindPass {
                kind,
                of_kind: (0..features)
                    .filter(|&k| set.entity_features[k].by == Some(kind))
                    .collect(),
                distinct_read: interceptor::reads_distinct(set, kind),
                entity_of,
                held: keys.iter().map(|_| Held::default()).collect(),
            })
            .collect();
        Some(ByEntity {
            kinds,
            features,
            hashes,
            named: Vec::new(),
            grouped: Vec::new(),
            starts: Vec::new(),
        })
    }

    /// The entity values of `rows[first..end]`, the segment after the last one asked for (or
    /// the first), in row order, one per entity feature a row.
    pub(crate) fn segment(
        &mut self,
        rows: &[Row],
        first: usize,
        end: usize,
        set: &RuleSet,
        config: &ReplayConfig,
    ) -> Vec<EntityValue> {
        let ByEntity {
            kinds,
            features,
            hashes,
            named,
            grouped,
            starts,
        } = self;
        let features = *features;
        let segment = &rows[first..end];
        // A row's customer is hashed only when some kind keeps its entities' customers.
        let customers_read = kinds.iter().any(|pass| pass.distinct_read);
        named.clear();
        named.extend(segment.iter().enumerate().map(|(k, row)| Named {
            // A segment is part of a history numbered in 32 bits (see `prepare`).
            k: k as u32,
            fraud: row.label == Some(true),
            at: row.at,
            amount: row.amount.minor(),
            customer: if customers_read {
                hashes.customer_hash(row.customer_id())
            } else {
                0
            },
        }));
        let mut values = vec![EntityValue::default(); segment.len() * features];
        let mut read = [EntityValue::default(); MAX_ENTITY_FEATURES];
        for pass in kinds.iter_mut() {
            // The segment's rows grouped by entity: a stable counting sort, so each entity's
            // rows stay in row order.
            let entity_of = &pass.entity_of[first..end];
            starts.clear();
            starts.resize(pass.held.len() + 1, 0);
            for &g in entity_of.iter().filter(|&&g| g != NONE) {
                starts[g as usize + 1] += 1;
            }
            for g in 1..starts.len() {
                starts[g] += starts[g - 1];
            }
            grouped.clear();
            grouped.resize(starts[pass.held.len()] as usize, Named::default());
            for (row, &g) in named.iter().zip(entity_of) {
                if g != NONE {
                    let next = &mut starts[g as usize];
                    grouped[*next as usize] = *row;
                    *next += 1;
                }
            }
            // `starts[g]` is now where entity g's rows end, and where entity g + 1's start.
            let mut from = 0;
            // The customer goes with the row only when this kind keeps distinct customers.
            let kind = (pass.kind, pass.distinct_read);
            for (held, &to) in pass.held.iter_mut().zip(starts.iter()) {
                for row in &grouped[from..to as usize] {
                    let k = row.k as usize;
                    entity_row(held, row, rows, kind, set, hashes, &mut read);
                    let slots = &mut values[k * features..(k + 1) * features];
                    for &f in &pass.of_kind {
                        slots[f] = read[f];
                    }
                    if let Some(delay) = config.label_delay
                        && row.fraud
                    {
                        held.due
                            .push_back((row.at.saturating_add(delay), (first + k) as u32));
                    }
                }
                from = to as usize;
            }
        }
        values
    }
}

/// One entity's next row: first the fraud reports on its earlier rows that have come due by
/// then (the ordered pass counts a report before the first row at or after its due time,
/// whichever entity that row names), then the row recorded and the windows read into `read`.
/// The same calls, in the same order, as the ordered pass makes on this entity, but that the
/// customer is left out where no rule reads the kind's distinct customers.
fn entity_row(
    held: &mut Held,
    row: &Named,
    rows: &[Row],
    (kind, distinct_read): (EntityKind, bool),
    set: &RuleSet,
    hashes: &Store,
    read: &mut [EntityValue; MAX_ENTITY_FEATURES],
) {
    let record = &mut held.record;
    while held.due.front().is_some_and(|&(at, _)| at <= row.at) {
        let (_, j) = held.due.pop_front().expect("checked");
        let fraud = &rows[j as usize];
        record.prune(interceptor::entity_keep_from(set, fraud.at));
        record.record_fraud(
            fraud.at,
            hashes.txn_hash(fraud.customer_id(), fraud.transaction_id()),
        );
    }
    record.prune(interceptor::entity_keep_from(set, row.at));
    let customer = distinct_read.then_some(row.customer);
    interceptor::record_with_entity(record, kind, set, row.at, row.amount, customer, read);
}

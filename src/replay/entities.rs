//! Replay's entity pass taken entity by entity, when that gives the ordered pass's values.
//!
//! The ordered entity pass (see [`super::split`]) walks the rows in time order and finds each
//! row's merchant (device, IP, channel) in a store of thousands; the merchant's previous
//! transaction is usually thousands of rows back, so nearly every row misses the cache several
//! times (the record, the oldest and newest hours, the window's first hour). On a 1.7 M-row card
//! export it was a third of the replay's CPU.
//!
//! An entity's windows depend on its own transactions and fraud reports alone, in their order,
//! as long as the store never drops an entity to stay within its cap. Then the same values come
//! from taking the entities one at a time, each with its own rows in time order and its own
//! fraud reports coming due between them where the ordered pass would count them: the record
//! stays in cache and needs no look-up, and entities are shared out between threads. Whether
//! the store would drop one is known before the pass, from the distinct entities; when it
//! would, replay runs the ordered pass.

use std::collections::VecDeque;

use crate::interceptor::{self};
use crate::rules::RuleSet;
use crate::rules::compile::MAX_ENTITY_FEATURES;
use crate::state::entity::{EntityKind, EntityRecord, EntityValue};
use crate::state::{Store, StoreConfig};
use crate::txn::EventTime;

use super::ReplayConfig;
use super::input::Row;

/// The entity values every row read: `set.entity_features.len()` of them a row, in row order.
pub(crate) struct EntityValues {
    values: Vec<EntityValue>,
    features: usize,
}

impl EntityValues {
    /// The values row `i` read, one per entity feature.
    pub(crate) fn of_row(&self, i: usize) -> &[EntityValue] {
        &self.values[i * self.features..(i + 1) * self.features]
    }
}

/// What the pass reads of a row naming an entity, copied out of the row in row order: the
/// pass takes rows in entity order, and reading the rows themselves there (and their texts,
/// for the customer's hash) missed the cache on nearly every one.
#[derive(Clone, Copy, Default)]
struct Named {
    row: u32,
    fraud: bool,
    at: EventTime,
    amount: i64,
    customer: u64,
}

/// The rows that name entities of one kind, grouped by entity: `named[starts[g]..starts[g +
/// 1]]` are entity `g`'s rows, in row order.
struct Groups<'r> {
    keys: Vec<&'r str>,
    starts: Vec<u32>,
    named: Vec<Named>,
}

/// No entity: the row does not name one of the kind.
const NONE: u32 = u32::MAX;

/// What one thread found in its run of rows for one entity kind: the entities in the order
/// first seen, and each row's among them ([`NONE`] for a row naming none).
#[derive(Default)]
struct Found<'r> {
    keys: Vec<&'r str>,
    entity_of: Vec<u32>,
}

/// Finds the entities of `kinds` named by `rows`, a run of rows.
fn find<'r>(rows: &'r [Row], kinds: &[EntityKind]) -> Vec<Found<'r>> {
    kinds
        .iter()
        .map(|&kind| {
            let mut index: ahash::AHashMap<&'r str, u32> = ahash::AHashMap::new();
            let mut found = Found {
                keys: Vec::new(),
                entity_of: Vec::with_capacity(rows.len()),
            };
            for row in rows {
                let g = entity_key(row, kind).map_or(NONE, |key| {
                    *index.entry(key).or_insert_with(|| {
                        found.keys.push(key);
                        found.keys.len() as u32 - 1
                    })
                });
                found.entity_of.push(g);
            }
            found
        })
        .collect()
}

impl<'r> Groups<'r> {
    /// The groups of one kind from what each run of rows found, the runs in row order (each
    /// `run` rows long), with what the pass reads of each row copied out of `rows`.
    fn merge(rows: &[Row], run: usize, runs: Vec<Found<'r>>, hashes: &Store) -> Groups<'r> {
        let mut index: ahash::AHashMap<&'r str, u32> = ahash::AHashMap::new();
        let mut keys = Vec::new();
        // Each run's entities as numbered here.
        let numbered: Vec<Vec<u32>> = runs
            .iter()
            .map(|found| {
                found
                    .keys
                    .iter()
                    .map(|&key| {
                        *index.entry(key).or_insert_with(|| {
                            keys.push(key);
                            keys.len() as u32 - 1
                        })
                    })
                    .collect()
            })
            .collect();
        // A counting sort by entity, stable, so each entity's rows stay in row order.
        let mut starts = vec![0u32; keys.len() + 1];
        for (found, numbers) in runs.iter().zip(&numbered) {
            for &g in found.entity_of.iter().filter(|&&g| g != NONE) {
                starts[numbers[g as usize] as usize + 1] += 1;
            }
        }
        for g in 1..starts.len() {
            starts[g] += starts[g - 1];
        }
        let mut next = starts.clone();
        let mut named = vec![Named::default(); starts[keys.len()] as usize];
        for (t, (found, numbers)) in runs.iter().zip(&numbered).enumerate() {
            for (k, &g) in found.entity_of.iter().enumerate() {
                if g == NONE {
                    continue;
                }
                let i = t * run + k;
                let row = &rows[i];
                let g = numbers[g as usize] as usize;
                named[next[g] as usize] = Named {
                    row: i as u32,
                    fraud: row.label == Some(true),
                    at: row.at,
                    amount: row.amount.minor(),
                    customer: hashes.customer_hash(row.customer_id()),
                };
                next[g] += 1;
            }
        }
        Groups {
            keys,
            starts,
            named,
        }
    }

    fn of_entity(&self, g: usize) -> &[Named] {
        &self.named[self.starts[g] as usize..self.starts[g + 1] as usize]
    }
}

fn entity_key(row: &Row, kind: EntityKind) -> Option<&str> {
    match kind {
        EntityKind::Merchant => row.merchant_id(),
        EntityKind::Device => row.device_id(),
        EntityKind::Ip => row.ip(),
        EntityKind::Channel => row.channel(),
    }
}

/// The entity values of every row, computed entity by entity on `threads` threads, or `None`
/// when the ordered pass's store (built with `seed`, as the replay's stores are) would drop an
/// entity, which makes a value depend on other entities' transactions.
pub(crate) fn by_entity(
    rows: &[Row],
    config: &ReplayConfig,
    set: &RuleSet,
    seed: u64,
    threads: usize,
) -> Option<EntityValues> {
    // Rows are numbered in 32 bits here; a history that long (over 4 billion rows) takes the
    // ordered pass.
    if u32::try_from(rows.len()).is_err() {
        return None;
    }
    let features = set.entity_features.len();
    let hashes = Store::with_seed(
        StoreConfig {
            max_customers: 1,
            ring_capacity: config.ring_capacity,
        },
        seed,
    );
    let read: Vec<EntityKind> = EntityKind::ALL
        .into_iter()
        .filter(|&kind| set.needs.entity_kinds[kind as usize])
        .collect();
    // Each thread finds the entities of a run of rows; the runs are then merged, per kind.
    let run = rows.len().div_ceil(threads.max(1)).max(1);
    let runs: Vec<Vec<Found<'_>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(run)
            .map(|chunk| {
                let read = &read;
                scope.spawn(move || find(chunk, read))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut per_kind: Vec<Vec<Found<'_>>> = read.iter().map(|_| Vec::new()).collect();
    for found in runs {
        for (kind, found) in per_kind.iter_mut().zip(found) {
            kind.push(found);
        }
    }
    // A thread a kind.
    let kinds: Vec<(EntityKind, Groups<'_>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = read
            .iter()
            .zip(per_kind)
            .map(|(&kind, runs)| {
                let hashes = &hashes;
                scope.spawn(move || (kind, Groups::merge(rows, run, runs, hashes)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let every_entity = kinds
        .iter()
        .flat_map(|(kind, groups)| groups.keys.iter().map(move |key| (*kind, *key)));
    if !hashes.entities().would_hold_all(every_entity) {
        return None;
    }
    let mut values = vec![EntityValue::default(); rows.len() * features];
    // Each kind's groups are dropped once its values are in place.
    for (kind, groups) in kinds {
        let (kind, groups) = (&kind, &groups);
        // The features read by this kind, and each entity's rows' values for them, in the
        // groups' order; threads take runs of entities with about as many rows each.
        let of_kind: Vec<usize> = (0..features)
            .filter(|&k| set.entity_features[k].by == Some(*kind))
            .collect();
        let width = of_kind.len();
        let mut grouped = vec![EntityValue::default(); groups.named.len() * width];
        let threads = threads.clamp(1, groups.keys.len().max(1));
        let mut bounds = vec![0usize];
        for t in 1..threads {
            let target = (groups.named.len() * t / threads) as u32;
            let g = groups.starts.partition_point(|&s| s < target);
            bounds.push(g.max(*bounds.last().expect("starts with 0")));
        }
        bounds.push(groups.keys.len());
        std::thread::scope(|scope| {
            let mut rest = grouped.as_mut_slice();
            for span in bounds.windows(2) {
                let (first, end) = (span[0], span[1]);
                let len = (groups.starts[end] - groups.starts[first]) as usize * width;
                let (mine, later) = rest.split_at_mut(len);
                rest = later;
                let (hashes, of_kind, kind) = (&hashes, &of_kind, *kind);
                scope.spawn(move || {
                    let mut out = mine.chunks_exact_mut(width.max(1));
                    let mut due = VecDeque::new();
                    for g in first..end {
                        entity_rows(
                            rows,
                            groups.of_entity(g),
                            kind,
                            set,
                            config,
                            hashes,
                            &mut due,
                            |values| {
                                let slots = out.next().expect("a slot per row");
                                for (slot, &k) in slots.iter_mut().zip(of_kind) {
                                    *slot = values[k];
                                }
                            },
                        );
                    }
                });
            }
        });
        // Into row order.
        for (n, read) in groups.named.iter().zip(grouped.chunks_exact(width.max(1))) {
            let i = n.row as usize;
            let row = &mut values[i * features..(i + 1) * features];
            for (&k, value) in of_kind.iter().zip(read) {
                row[k] = *value;
            }
        }
    }
    Some(EntityValues { values, features })
}

/// One entity's rows, `mine`, in row order: before each, the fraud reports on its earlier rows
/// that have come due by then (the ordered pass counts a report before the first row at or
/// after its due time, whichever entity that row names), then the row recorded and the
/// windows read, handed to `read`. The same calls, in the same order, as the ordered pass
/// makes on this entity.
#[allow(clippy::too_many_arguments)]
fn entity_rows(
    rows: &[Row],
    mine: &[Named],
    kind: EntityKind,
    set: &RuleSet,
    config: &ReplayConfig,
    hashes: &Store,
    due: &mut VecDeque<(EventTime, usize)>,
    mut read: impl FnMut(&[EntityValue; MAX_ENTITY_FEATURES]),
) {
    let mut record = EntityRecord::default();
    let mut values = [EntityValue::default(); MAX_ENTITY_FEATURES];
    due.clear();
    for n in mine {
        while due.front().is_some_and(|&(at, _)| at <= n.at) {
            let (_, j) = due.pop_front().expect("checked");
            let fraud = &rows[j];
            record.prune(interceptor::entity_keep_from(set, fraud.at));
            record.record_fraud(
                fraud.at,
                hashes.txn_hash(fraud.customer_id(), fraud.transaction_id()),
            );
        }
        record.prune(interceptor::entity_keep_from(set, n.at));
        interceptor::record_with_entity(
            &mut record,
            kind,
            set,
            n.at,
            n.amount,
            n.customer,
            &mut values,
        );
        read(&values);
        if let Some(delay) = config.label_delay
            && n.fraud
        {
            due.push_back((n.at.saturating_add(delay), n.row as usize));
        }
    }
}

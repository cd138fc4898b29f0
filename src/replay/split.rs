//! Replay split across threads, with the decisions of the one-thread replay.
//!
//! Customers are independent: each customer thread decides the customers of some store shards
//! with a store of its own, built with the same configuration and hash seed, so each of its
//! shards sees exactly the transactions, and makes exactly the evictions, that shard of one
//! store would. What customers share is entity state (merchants, devices, IPs, channels for
//! `by:` windows): one ordered pass keeps it, recording every transaction with its entities
//! and reading their windows in the one-thread order, and hands each customer thread the
//! values its rows would have read. Fraud labels come due in both in event-time order: the
//! entity pass counts them on entities, the customer's own thread marks the customer's event.
//!
//! Only a customer's own state can tell one thing the entity pass needs: whether a row is a
//! duplicate, which must not be recorded with its entities. A row can be a duplicate only when
//! an earlier row had the same customer and transaction id, so the split is used only when no
//! such pair repeats in the input (the usual export); otherwise replay runs on one thread.
//!
//! Results come back to the calling thread in row order, so reports and decision files are
//! those of the one-thread replay byte for byte. One caveat, shared with the one-thread replay
//! itself: past the customer cap (10 million by default) or the entity cap, which customer or
//! entity is evicted depends on the run's hash keys, drawn afresh each run in both.

use std::collections::VecDeque;
use std::sync::mpsc;

use crate::engine::Decision;
use crate::interceptor::{self, Interceptor};
use crate::live_rules::LiveRules;
use crate::rules::compile::MAX_ENTITY_FEATURES;
use crate::rules::{Action, RuleSet};
use crate::state::entity::EntityValue;
use crate::state::{Store, StoreConfig};
use crate::txn::EventTime;

use super::input::Row;
use super::{Kept, ReplayConfig, ReplayError};

/// Rows handed between threads at a time.
const CHUNK: usize = 4096;

/// How a replay is split: the customer thread of each row, when the split applies.
pub(crate) struct Plan {
    /// The customer thread deciding each row.
    part: Vec<u8>,
    /// Customer threads.
    threads: usize,
    /// The hash seed every thread's store is built with.
    seed: u64,
}

/// Customer threads to use: `asked` when given; otherwise one per core, less the one the
/// entity pass keeps busy when the rules read entities, at most 8. Which is faster on 2 cores
/// depends on the rules' balance, so the default keeps the one that never oversubscribes: on
/// the 1.69 M-row card export, two customer threads beside the entity pass took 0.95 × the time
/// of one with the shipped rules (more customer features) and 1.07 × with the card example's
/// (lighter customer work, the entity pass the longer thread); see BENCHMARKS.md, replay.
fn customer_threads(asked: Option<usize>, entity_pass: bool) -> usize {
    if let Some(n) = asked {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores - usize::from(entity_pass && cores > 1)).min(8)
}

/// The split for `rows`, or `None` when replay must run on one thread: a (customer,
/// transaction id) pair repeats, the input is too small to be worth threads, or `--threads 0`.
pub(crate) fn plan(rows: &[Row], config: &ReplayConfig, set: &RuleSet) -> Option<Plan> {
    let threads = customer_threads(config.threads, !set.entity_features.is_empty());
    if threads == 0 || rows.len() < 2 * CHUNK {
        return None;
    }
    // A fresh seed a run, as a store's own hash keys are.
    let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0);
    // Built as the customer threads' stores are, so that it agrees with them on shards.
    let store = Store::with_seed(store_config(config, config.max_customers), seed);
    let shards = store.shard_count();
    let pairs = ahash::RandomState::new();
    let mut pair_hashes = Vec::with_capacity(rows.len());
    let mut part = Vec::with_capacity(rows.len());
    for row in rows {
        pair_hashes.push(pairs.hash_one((row.customer_id(), row.transaction_id())));
        part.push((store.shard_of(row.customer_id()) * threads / shards) as u8);
    }
    if any_repeats(&pair_hashes) {
        // Possibly a duplicate (or two pairs whose hashes collide): one thread decides.
        return None;
    }
    Some(Plan {
        part,
        threads,
        seed,
    })
}

/// Whether any of the hashes repeats. They are spread over 256 buckets by their top byte, and
/// each bucket is checked with a set small enough to stay in cache: one set over every row's
/// hash (1.7 M in a large export) missed the cache on nearly every insert, and this runs
/// before any thread starts deciding.
fn any_repeats(hashes: &[u64]) -> bool {
    let bucket = |h: u64| (h >> 56) as usize;
    let mut starts = [0usize; 257];
    for &h in hashes {
        starts[bucket(h) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts;
    let mut by_bucket = vec![0u64; hashes.len()];
    for &h in hashes {
        let b = bucket(h);
        by_bucket[next[b]] = h;
        next[b] += 1;
    }
    let mut seen = ahash::AHashSet::new();
    starts.windows(2).any(|w| {
        seen.clear();
        by_bucket[w[0]..w[1]].iter().any(|&h| !seen.insert(h))
    })
}

fn store_config(config: &ReplayConfig, max_customers: usize) -> StoreConfig {
    StoreConfig {
        max_customers,
        ring_capacity: config.ring_capacity,
    }
}

/// One rule set's replay: the rules' text (each thread compiles its own), their name, the rows
/// in event-time order and the settings.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub rules: &'a [u8],
    pub which: &'static str,
    pub rows: &'a [Row],
    pub config: &'a ReplayConfig,
}

/// Runs one rule set over the rows as [`super::run_one`] does, on the threads of `plan`.
/// `set` is the caller's compiled copy of the rules, handed to `each`.
pub(crate) fn run<T: Send>(
    plan: &Plan,
    job: Job<'_>,
    set: &RuleSet,
    extract: &(impl Fn(&Row, Result<&Decision, Action>, &RuleSet) -> T + Sync),
    mut each: impl FnMut(&Row, T, &RuleSet) -> Result<(), ReplayError>,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Kept>, ReplayError> {
    let Job {
        rules,
        which,
        rows,
        config,
    } = job;
    let features = set.entity_features.len();
    std::thread::scope(|scope| {
        // Entity values for each customer thread, a chunk of rows at a time.
        let mut given_tx = Vec::new();
        let mut given_rx = Vec::new();
        for _ in 0..plan.threads {
            let (tx, rx) = mpsc::sync_channel::<Vec<EntityValue>>(16);
            given_tx.push(tx);
            given_rx.push(rx);
        }
        if features > 0 {
            let entity_set = LiveRules::new(rules, which)
                .map_err(|error| ReplayError::Rules { which, error })?;
            std::thread::Builder::new()
                .name("replay-entities".into())
                .spawn_scoped(scope, move || {
                    entity_pass(plan, &entity_set.load().set, rows, config, given_tx)
                })
                .map_err(ReplayError::Output)?;
        } else {
            drop(given_tx);
        }
        let mut results = Vec::new();
        for (p, given) in given_rx.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Result<Vec<(Action, T)>, ReplayError>>();
            results.push(rx);
            let given = (features > 0).then_some(given);
            std::thread::Builder::new()
                .name(format!("replay-customers-{p}"))
                .spawn_scoped(scope, move || {
                    if let Err(e) = customer_pass(plan, p, job, given, extract, &tx) {
                        let _ = tx.send(Err(e));
                    }
                })
                .map_err(ReplayError::Output)?;
        }
        // Results in row order: the next row's thread is the one waited on.
        let mut pending: Vec<std::vec::IntoIter<(Action, T)>> =
            (0..plan.threads).map(|_| Vec::new().into_iter()).collect();
        let mut kept = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let p = plan.part[i] as usize;
            let (action, t) = loop {
                if let Some(next) = pending[p].next() {
                    break next;
                }
                match results[p].recv() {
                    Ok(Ok(chunk)) => pending[p] = chunk.into_iter(),
                    Ok(Err(e)) => return Err(e),
                    // This thread stopped early because another failed and the entity pass
                    // stopped with it: that failure is the one to report. (A panic is
                    // propagated by the scope when the threads are joined.)
                    Err(_) => {
                        return Err(results
                            .iter()
                            .flat_map(|r| r.try_iter())
                            .find_map(Result::err)
                            .unwrap_or_else(|| {
                                ReplayError::Output(std::io::Error::other(
                                    "a replay thread stopped before its last row",
                                ))
                            }));
                    }
                }
            };
            kept.push(Kept { action });
            // An error here drops the receivers: the threads stop at their next send.
            each(row, t, set)?;
            if i % 65_536 == 0 {
                progress.set_position(i as u64);
            }
        }
        Ok(kept)
    })
}

/// The ordered pass over entity state: due fraud labels counted, then each row recorded with
/// its entities and their windows read, in row order, as the one-thread replay does.
fn entity_pass(
    plan: &Plan,
    set: &RuleSet,
    rows: &[Row],
    config: &ReplayConfig,
    given: Vec<mpsc::SyncSender<Vec<EntityValue>>>,
) {
    let store = Store::with_seed(store_config(config, 1), plan.seed);
    let features = set.entity_features.len();
    let mut due: VecDeque<(EventTime, usize)> = VecDeque::new();
    for (c, chunk) in rows.chunks(CHUNK).enumerate() {
        let mut out: Vec<Vec<EntityValue>> = (0..plan.threads)
            .map(|_| Vec::with_capacity(CHUNK * features / plan.threads + features))
            .collect();
        for (k, row) in chunk.iter().enumerate() {
            let i = c * CHUNK + k;
            if config.label_delay.is_some() {
                while due.front().is_some_and(|&(at, _)| at <= row.at) {
                    let (_, j) = due.pop_front().expect("checked");
                    let fraud = &rows[j];
                    let txn = fraud.txn();
                    let mut keys = [None; 4];
                    interceptor::count_fraud_on_entities(
                        store.entities(),
                        set,
                        fraud.at,
                        store.txn_hash(fraud.customer_id(), fraud.transaction_id()),
                        |kind| txn.entity_key(kind),
                        &mut keys,
                    );
                }
            }
            let txn = row.txn();
            let mut values = [EntityValue::default(); MAX_ENTITY_FEATURES];
            let mut keys = [None; 4];
            interceptor::record_entities(
                store.entities(),
                set,
                &txn,
                || store.customer_hash(row.customer_id()),
                &mut values,
                &mut keys,
            );
            out[plan.part[i] as usize].extend_from_slice(&values[..features]);
            if let Some(delay) = config.label_delay
                && row.label == Some(true)
            {
                due.push_back((row.at.saturating_add(delay), i));
            }
        }
        for (tx, values) in given.iter().zip(out) {
            if tx.send(values).is_err() {
                return; // the replay stopped
            }
        }
    }
}

/// One customer thread: the rows of its shards, in row order, with their due fraud labels
/// marked on the customer's events first; results sent a chunk at a time.
fn customer_pass<T: Send>(
    plan: &Plan,
    p: usize,
    job: Job<'_>,
    given: Option<mpsc::Receiver<Vec<EntityValue>>>,
    extract: &(impl Fn(&Row, Result<&Decision, Action>, &RuleSet) -> T + Sync),
    results: &mpsc::Sender<Result<Vec<(Action, T)>, ReplayError>>,
) -> Result<(), ReplayError> {
    let Job {
        rules,
        which,
        rows,
        config,
    } = job;
    let live = LiveRules::new(rules, which).map_err(|error| ReplayError::Rules { which, error })?;
    let loaded = live.load_full();
    let set = &loaded.set;
    let features = set.entity_features.len();
    let interceptor = Interceptor::new(
        Store::with_seed(store_config(config, config.max_customers), plan.seed),
        live,
    );
    let mut decision = Decision::empty();
    let mut due: VecDeque<(EventTime, usize)> = VecDeque::new();
    for (c, chunk) in rows.chunks(CHUNK).enumerate() {
        let values = match &given {
            Some(rx) => match rx.recv() {
                Ok(values) => values,
                Err(_) => return Ok(()), // the replay stopped
            },
            None => Vec::new(),
        };
        let mut values = values.chunks_exact(features.max(1));
        let mut out = Vec::with_capacity(CHUNK / plan.threads + 1);
        for (k, row) in chunk.iter().enumerate() {
            let i = c * CHUNK + k;
            if plan.part[i] as usize != p {
                continue;
            }
            if config.label_delay.is_some() {
                while due.front().is_some_and(|&(at, _)| at <= row.at) {
                    let (_, j) = due.pop_front().expect("checked");
                    let fraud = &rows[j];
                    interceptor.mark_fraud(
                        fraud.customer_id(),
                        interceptor
                            .as_ref()
                            .txn_hash(fraud.customer_id(), fraud.transaction_id()),
                    );
                }
            }
            let row_values = if features > 0 {
                Some(
                    values
                        .next()
                        .expect("the entity pass sends a value set per row"),
                )
            } else {
                None
            };
            let decided = interceptor
                .replay_with(set, &row.txn(), row.outcome, row_values, &mut decision)
                .map(|()| &decision);
            out.push((Kept::of(decided).action, extract(row, decided, set)));
            if let Some(delay) = config.label_delay
                && row.label == Some(true)
            {
                due.push_back((row.at.saturating_add(delay), i));
            }
        }
        if results.send(Ok(out)).is_err() {
            return Ok(()); // the replay stopped
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::any_repeats;

    #[test]
    fn a_repeated_hash_is_found_in_whichever_bucket_it_falls() {
        assert!(!any_repeats(&[]));
        let spread: Vec<u64> = (0..5_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        assert!(!any_repeats(&spread));
        for at in [0, 1, 2_500, 4_999] {
            let mut repeated = spread.clone();
            repeated.push(spread[at]);
            repeated.swap(0, 5_000);
            assert!(any_repeats(&repeated), "the repeat of entry {at}");
        }
        // Equal top bytes, different hashes: no repeat.
        assert!(!any_repeats(&[7 << 56, (7 << 56) | 1, (7 << 56) | 2]));
    }
}

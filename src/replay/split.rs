//! Replay split across threads, with the decisions of the one-thread replay.
//!
//! Customers are independent: each customer part decides the customers of some store shards
//! with a store of its own, built with the same configuration and hash seed, so each of its
//! shards sees exactly the transactions, and makes exactly the evictions, that shard of one
//! store would. What customers share is entity state (merchants, devices, IPs, channels for
//! `by:` windows). One entity pass keeps it and hands each customer part the values its rows
//! would have read. It takes a segment of rows at a time entity by entity (see
//! [`super::entities`]), which gives the one-thread values as long as the store would never
//! drop an entity to stay within its cap; otherwise it goes row by row over one store,
//! recording every transaction with its entities and reading their windows in the one-thread
//! order. Fraud labels come due in event-time order: the entity pass counts them on entities,
//! the customer's own part marks the customer's event.
//!
//! The entity pass and the parts each run in order, a chunk of rows (or, for the pass entity
//! by entity, a segment) at a time, on a pool of at most one thread per core: a free thread
//! takes the next task that is due, the entity pass's first (see [`Pool`]).
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
use std::sync::{Arc, mpsc};

use parking_lot::{Condvar, Mutex};

use crate::engine::Decision;
use crate::interceptor::{self, Interceptor};
use crate::live_rules::{LiveRules, LoadedRules};
use crate::rules::compile::MAX_ENTITY_FEATURES;
use crate::rules::{Action, RuleSet};
use crate::state::entity::EntityValue;
use crate::state::{Store, StoreConfig};
use crate::txn::EventTime;

use super::entities::{self, ByEntity};
use super::input::Row;
use super::{Kept, ReplayConfig, ReplayError, fresh_seed, join};

/// Rows in a chunk: the unit of work a thread takes and hands on.
const CHUNK: usize = 4096;

/// How a replay is split: the customer part of each row, when the split applies.
pub(crate) struct Plan<'r> {
    /// The customer part deciding each row.
    part: Vec<u8>,
    /// Customer parts: each decides the customers of some store shards, in row order.
    parts: usize,
    /// Threads sharing the parts and the entity pass.
    workers: usize,
    /// The hash seed every part's store is built with.
    seed: u64,
    /// Whether entity values may be found entity by entity (see `super::entities`) rather
    /// than by the ordered pass; always, but for the test comparing the two.
    by_entity: bool,
    /// Chunks in a segment of the pass entity by entity: [`SEGMENT_CHUNKS`], but in that test.
    segment_chunks: usize,
    /// The entities each thread of the plan found in its run of rows, for the pass entity by
    /// entity (see [`entities::Finder`]); none when the rules read no entity windows. Taken by
    /// the replay that uses the plan, and freed once numbered.
    found: Vec<Vec<entities::Found<'r>>>,
}

/// Customer parts and worker threads: `asked` parts when given, else one per core, at most
/// 8; as many workers as there are parts and an entity pass to run, at most one per core. A
/// worker takes whichever chunk of work is due, the entity pass first (see [`Pool`]), so no
/// core idles while work that may run is left, whichever side the rules load more. Before, on 2 cores, one customer
/// thread ran beside the entity pass by default: with the shipped rules the customer thread
/// was the longer one and the entity pass idled a third of the time, and a second customer
/// thread, competing for the cores with the entity pass, was faster with the shipped rules
/// (0.95 ×) and slower with the card example's (1.07 ×). The pool took 0.89 × and 1.02 × the
/// old default's time on the same export (BENCHMARKS.md, replay).
fn parts_and_workers(asked: Option<usize>, entity_pass: bool) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = asked.unwrap_or(cores.min(8));
    (parts, cores.min(parts + usize::from(entity_pass)).max(1))
}

/// The split for `rows`, or `None` when replay must run on one thread: a (customer,
/// transaction id) pair repeats, the input is too small to be worth threads, or `--threads 0`.
pub(crate) fn plan<'r>(rows: &'r [Row], config: &ReplayConfig, set: &RuleSet) -> Option<Plan<'r>> {
    let (parts, workers) = parts_and_workers(config.threads, !set.entity_features.is_empty());
    if parts == 0 || rows.len() < 2 * CHUNK {
        return None;
    }
    let seed = fresh_seed();
    // Built as the customer parts' stores are, so that it agrees with them on shards.
    let store = Store::with_seed(store_config(config, config.max_customers), seed);
    let shards = store.shard_count();
    let pairs = ahash::RandomState::new();
    let mut pair_hashes = vec![0u64; rows.len()];
    let mut part = vec![0u8; rows.len()];
    // Each row hashed twice, and its entities found, a run of rows a thread: nothing else runs
    // yet. One pass over the rows for both: on a large export, reading the rows from memory
    // took longer than the work done with them.
    let kinds = entities::kinds_read(set);
    let run = rows.len().div_ceil(workers);
    let found: Vec<Vec<entities::Found<'r>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(run)
            .zip(pair_hashes.chunks_mut(run))
            .zip(part.chunks_mut(run))
            .map(|((rows, pair_hashes), part)| {
                let (store, pairs, kinds) = (&store, &pairs, &kinds);
                scope.spawn(move || {
                    let mut finder = entities::Finder::new(kinds, rows.len());
                    for ((row, pair_hash), part) in rows.iter().zip(pair_hashes).zip(part) {
                        *pair_hash = pairs.hash_one((row.customer_id(), row.transaction_id()));
                        *part = (store.shard_of(row.customer_id()) * parts / shards) as u8;
                        finder.add(row);
                    }
                    finder.finish()
                })
            })
            .collect();
        handles.into_iter().map(join).collect()
    });
    if any_repeats(&pair_hashes, workers) {
        // Possibly a duplicate (or two pairs whose hashes collide): one thread decides.
        return None;
    }
    Some(Plan {
        part,
        parts,
        workers,
        seed,
        by_entity: true,
        segment_chunks: SEGMENT_CHUNKS,
        found,
    })
}

/// Whether any of the hashes repeats. They are spread over 256 buckets by their top byte, and
/// each bucket is checked with a set small enough to stay in cache: one set over every row's
/// hash (1.7 M in a large export) missed the cache on nearly every insert, and this runs
/// before any thread starts deciding; the buckets are checked on `threads` threads.
fn any_repeats(hashes: &[u64], threads: usize) -> bool {
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
    // The buckets checked on `threads` threads, a run of buckets each.
    let per_thread = 256usize.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let checks: Vec<_> = (0..256)
            .step_by(per_thread)
            .map(|first| {
                let (starts, by_bucket) = (&starts, &by_bucket);
                scope.spawn(move || {
                    let mut seen = ahash::AHashSet::new();
                    starts[first..=(first + per_thread).min(256)]
                        .windows(2)
                        .any(|w| {
                            seen.clear();
                            by_bucket[w[0]..w[1]].iter().any(|&h| !seen.insert(h))
                        })
                })
            })
            .collect();
        // Every thread joined, a panic passed on.
        let repeats: Vec<bool> = checks.into_iter().map(join).collect();
        repeats.contains(&true)
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
    mut plan: Plan<'_>,
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
    let compile =
        || LiveRules::new(rules, which).map_err(|error| ReplayError::Rules { which, error });
    // Freed once the entity pass has numbered them.
    let found = std::mem::take(&mut plan.found);
    let plan = &plan;
    // The entity pass, and how far, in chunks, it may run ahead of the slowest part.
    let (entity, entity_lead) = if set.entity_features.is_empty() {
        (None, 0)
    } else {
        let live = compile()?;
        // Entity by entity when that gives the ordered pass's values (see `super::entities`).
        let way = match plan
            .by_entity
            .then(|| ByEntity::prepare(rows, config, set, plan.seed, &found))
            .flatten()
        {
            Some(by_entity) => EntityWay::ByEntity(Box::new(by_entity)),
            None => EntityWay::Ordered {
                store: Box::new(Store::for_one_run(store_config(config, 1), plan.seed)),
                due: VecDeque::new(),
            },
        };
        let lead = match way {
            EntityWay::Ordered { .. } => ENTITY_LEAD,
            EntityWay::ByEntity(_) => 2 * plan.segment_chunks,
        };
        let pass = EntityPass {
            loaded: live.load_full(),
            way,
        };
        (Some(Mutex::new(pass)), lead)
    };
    drop(found);
    let mut results = Vec::new();
    let mut parts = Vec::new();
    for _ in 0..plan.parts {
        let (tx, rx) = mpsc::channel::<Vec<(Action, T)>>();
        results.push(rx);
        let live = compile()?;
        parts.push(Mutex::new(CustomerPass {
            loaded: live.load_full(),
            interceptor: Interceptor::new(
                Store::for_one_run(store_config(config, config.max_customers), plan.seed),
                live,
            ),
            decision: Decision::empty(),
            due: VecDeque::new(),
            results: Some(tx),
        }));
    }
    let pool = Pool {
        plan,
        rows,
        config,
        chunks: rows.len().div_ceil(CHUNK),
        entity,
        entity_lead,
        parts,
        schedule: Mutex::new(Schedule {
            entity_next: 0,
            entity_busy: false,
            parts: (0..plan.parts)
                .map(|_| PartProgress {
                    next: 0,
                    busy: false,
                    values: VecDeque::new(),
                })
                .collect(),
            stopped: false,
        }),
        changed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        let pool = &pool;
        // Stops the workers however this returns: an error here (a thread that could not be
        // started, a result the caller refuses), or the last row taken.
        struct StopOnDrop<'p, 'a, T>(&'p Pool<'a, T>);
        impl<T> Drop for StopOnDrop<'_, '_, T> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let _stop = StopOnDrop(pool);
        for w in 0..plan.workers {
            std::thread::Builder::new()
                .name(format!("replay-worker-{w}"))
                .spawn_scoped(scope, move || pool.work(extract))
                .map_err(ReplayError::Output)?;
        }
        // Results in row order: the next row's part is the one waited on.
        let mut pending: Vec<std::vec::IntoIter<(Action, T)>> =
            (0..plan.parts).map(|_| Vec::new().into_iter()).collect();
        let mut kept = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let p = plan.part[i] as usize;
            let (action, t) = loop {
                if let Some(next) = pending[p].next() {
                    break next;
                }
                match results[p].recv() {
                    Ok(chunk) => pending[p] = chunk.into_iter(),
                    // A worker panicked (the scope propagates it when the threads are joined).
                    Err(_) => {
                        return Err(ReplayError::Output(std::io::Error::other(
                            "a replay thread stopped before its last row",
                        )));
                    }
                }
            };
            kept.push(Kept { action });
            each(row, t, set)?;
            if i % 65_536 == 0 {
                progress.set_position(i as u64);
            }
        }
        Ok(kept)
    })
}

/// How far, in chunks, the ordered entity pass may run ahead of the slowest customer part (the
/// values it hands on are held until then).
const ENTITY_LEAD: usize = 16;

/// Chunks in a segment of the entity pass taken entity by entity (131,072 rows: on a large card
/// export nine days, in which a terminal has about nine rows), once the first few, shorter ones
/// are done; it may run two segments ahead.
const SEGMENT_CHUNKS: usize = 32;

/// The work of one replay, in chunks: the entity pass and each customer part are each done in
/// order, one chunk at a time, by whichever worker is free. The pass comes first whenever it
/// may run, since every part waits on it; the part furthest behind comes next. So no core idles
/// while work that may run is left, whatever the rules' balance between the two, and no other
/// worker competes with the ordered pass for a core (the calling thread, taking results in row
/// order, is the only thread beside them).
struct Pool<'a, T> {
    plan: &'a Plan<'a>,
    rows: &'a [Row],
    config: &'a ReplayConfig,
    chunks: usize,
    /// The entity pass, when the rules read entity windows.
    entity: Option<Mutex<EntityPass>>,
    /// How far, in chunks, the entity pass may run ahead of the slowest part (0: no pass).
    entity_lead: usize,
    parts: Vec<Mutex<CustomerPass<T>>>,
    schedule: Mutex<Schedule>,
    /// Signalled whenever a chunk is done or the replay stops.
    changed: Condvar,
}

/// Who is doing what. Each pass's own state is locked by the worker the schedule gave it to,
/// so those locks are contended only when a worker panics (see [`Pool::work`]).
struct Schedule {
    /// The entity pass's next chunk.
    entity_next: usize,
    entity_busy: bool,
    parts: Vec<PartProgress>,
    /// The caller stopped taking results (an error, or every row taken).
    stopped: bool,
}

struct PartProgress {
    /// The part's next chunk.
    next: usize,
    busy: bool,
    /// Entity values for its next chunks, from the entity pass.
    values: VecDeque<Vec<EntityValue>>,
}

/// One chunk of work, as the schedule hands it out.
enum Task {
    Entity(usize),
    Part(usize, usize, Vec<EntityValue>),
}

/// The entity pass between its tasks.
struct EntityPass {
    loaded: Arc<LoadedRules>,
    way: EntityWay,
}

/// How the entity pass goes.
enum EntityWay {
    /// Row by row over one store, a chunk a task.
    Ordered {
        store: Box<Store>,
        /// Fraud labels coming due: when, and the row.
        due: VecDeque<(EventTime, usize)>,
    },
    /// Entity by entity, a segment of chunks a task (see [`SEGMENT_CHUNKS`]).
    ByEntity(Box<ByEntity>),
}

/// One customer part between its chunks.
struct CustomerPass<T> {
    loaded: Arc<LoadedRules>,
    interceptor: Interceptor,
    decision: Decision,
    /// Fraud labels coming due: when, and the row.
    due: VecDeque<(EventTime, usize)>,
    /// Where its results go; `None` once a worker panicked.
    results: Option<mpsc::Sender<Vec<(Action, T)>>>,
}

impl<T> Pool<'_, T> {
    /// Chunk `c`: the index of its first row, and its rows.
    fn chunk(&self, c: usize) -> (usize, &[Row]) {
        let first = c * CHUNK;
        (
            first,
            &self.rows[first..(first + CHUNK).min(self.rows.len())],
        )
    }

    /// Stops the workers at their next task.
    fn stop(&self) {
        self.schedule.lock().stopped = true;
        self.changed.notify_all();
    }
}

impl<T: Send> Pool<'_, T> {
    /// A worker: takes the next task the schedule allows, until none is left.
    fn work(&self, extract: &(impl Fn(&Row, Result<&Decision, Action>, &RuleSet) -> T + Sync)) {
        // A panic here must not leave the caller waiting for results that will never come:
        // the parts' senders are dropped, which ends the caller's wait, and the others stop.
        struct OnPanic<'p, 'a, T>(&'p Pool<'a, T>);
        impl<T> Drop for OnPanic<'_, '_, T> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    for part in &self.0.parts {
                        part.lock().results = None;
                    }
                    self.0.stop();
                }
            }
        }
        let _on_panic = OnPanic(self);
        while let Some(task) = self.next_task() {
            match task {
                Task::Entity(c) => {
                    let chunks = self.entity_task(c);
                    let mut schedule = self.schedule.lock();
                    schedule.entity_next += chunks.len();
                    schedule.entity_busy = false;
                    for values in chunks {
                        for (part, values) in schedule.parts.iter_mut().zip(values) {
                            part.values.push_back(values);
                        }
                    }
                }
                Task::Part(p, c, values) => {
                    let sent = self.part_chunk(p, c, &values, extract);
                    let mut schedule = self.schedule.lock();
                    schedule.parts[p].next += 1;
                    schedule.parts[p].busy = false;
                    if !sent {
                        schedule.stopped = true;
                    }
                }
            }
            self.changed.notify_all();
        }
    }

    /// Waits for a task, or `None` when all are done or the replay stopped.
    fn next_task(&self) -> Option<Task> {
        let mut schedule = self.schedule.lock();
        loop {
            if schedule.stopped {
                return None;
            }
            let slowest = schedule.parts.iter().map(|p| p.next).min().unwrap_or(0);
            if self.entity.is_some()
                && !schedule.entity_busy
                && schedule.entity_next < self.chunks
                && schedule.entity_next < slowest + self.entity_lead
            {
                schedule.entity_busy = true;
                return Some(Task::Entity(schedule.entity_next));
            }
            let ready = |part: &PartProgress| {
                !part.busy
                    && part.next < self.chunks
                    && (self.entity.is_none() || !part.values.is_empty())
            };
            if let Some((p, part)) = schedule
                .parts
                .iter_mut()
                .enumerate()
                .filter(|(_, part)| ready(part))
                .min_by_key(|(_, part)| part.next)
            {
                part.busy = true;
                let values = part.values.pop_front().unwrap_or_default();
                return Some(Task::Part(p, part.next, values));
            }
            if slowest >= self.chunks {
                return None;
            }
            self.changed.wait(&mut schedule);
        }
    }

    /// The entity pass's task starting at chunk `c`: each part's values for each chunk the task
    /// covers (one for the ordered pass, a segment entity by entity), in order.
    fn entity_task(&self, c: usize) -> Vec<Vec<Vec<EntityValue>>> {
        let mut pass = self
            .entity
            .as_ref()
            .expect("entity tasks only when there is a pass")
            .lock();
        let EntityPass { loaded, way } = &mut *pass;
        let set = &loaded.set;
        let (plan, rows, config) = (self.plan, self.rows, self.config);
        let features = set.entity_features.len();
        let out = |chunk: &[Row]| -> Vec<Vec<EntityValue>> {
            (0..plan.parts)
                .map(|_| Vec::with_capacity(chunk.len() * features / plan.parts + features))
                .collect()
        };
        match way {
            EntityWay::Ordered { store, due } => {
                let (first, chunk) = self.chunk(c);
                let mut out = out(chunk);
                for i in first..first + chunk.len() {
                    let values = ordered_row(set, config, rows, store, due, i);
                    out[plan.part[i] as usize].extend_from_slice(&values[..features]);
                }
                vec![out]
            }
            EntityWay::ByEntity(by_entity) => {
                // Segments double from one chunk up to their size: the parts wait on the
                // first, so it is short, and each takes the pass less time than the parts take
                // on the one before.
                let end = (c + plan.segment_chunks.min(c.max(1))).min(self.chunks);
                let first = c * CHUNK;
                let values =
                    by_entity.segment(rows, first, (end * CHUNK).min(rows.len()), set, config);
                let mut values = values.chunks_exact(features.max(1));
                (c..end)
                    .map(|cc| {
                        let (first, chunk) = self.chunk(cc);
                        let mut out = out(chunk);
                        for i in first..first + chunk.len() {
                            let row_values = values.next().expect("values for every row");
                            out[plan.part[i] as usize].extend_from_slice(row_values);
                        }
                        out
                    })
                    .collect()
            }
        }
    }

    /// Chunk `c` of customer part `p`: its rows in row order, with their due fraud labels
    /// marked on the customer's events first; the results sent on. Returns whether the caller
    /// still takes them.
    fn part_chunk(
        &self,
        p: usize,
        c: usize,
        values: &[EntityValue],
        extract: &(impl Fn(&Row, Result<&Decision, Action>, &RuleSet) -> T + Sync),
    ) -> bool {
        let mut pass = self.parts[p].lock();
        let CustomerPass {
            loaded,
            interceptor,
            decision,
            due,
            results,
        } = &mut *pass;
        let set = &loaded.set;
        let (plan, rows, config) = (self.plan, self.rows, self.config);
        let features = set.entity_features.len();
        let mut values = values.chunks_exact(features.max(1));
        let (first, chunk) = self.chunk(c);
        // Sized to the part's rows: a guess could fall short, and growing copied the results.
        let mine = plan.part[first..first + chunk.len()]
            .iter()
            .filter(|&&q| usize::from(q) == p)
            .count();
        let mut out = Vec::with_capacity(mine);
        for (k, row) in chunk.iter().enumerate() {
            let i = first + k;
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
            let row_values = (features > 0).then(|| {
                values
                    .next()
                    .expect("the entity pass gives a value set per row")
            });
            let decided = interceptor
                .replay_with(
                    set,
                    &row.txn(),
                    row.outcome,
                    interceptor::Known {
                        entities: row_values,
                        // The split is used only when no (customer, transaction id) repeats.
                        first_of_its_id: true,
                    },
                    decision,
                )
                .map(|()| &*decision);
            out.push((Kept::of(decided).action, extract(row, decided, set)));
            if let Some(delay) = config.label_delay
                && row.label == Some(true)
            {
                due.push_back((row.at.saturating_add(delay), i));
            }
        }
        results.as_ref().is_some_and(|r| r.send(out).is_ok())
    }
}

/// The ordered pass's row `i`: due fraud labels counted, then the row recorded with its
/// entities and their windows read, as the one-thread replay does.
fn ordered_row(
    set: &RuleSet,
    config: &ReplayConfig,
    rows: &[Row],
    store: &Store,
    due: &mut VecDeque<(EventTime, usize)>,
    i: usize,
) -> [EntityValue; MAX_ENTITY_FEATURES] {
    let row = &rows[i];
    if config.label_delay.is_some() {
        while due.front().is_some_and(|&(at, _)| at <= row.at) {
            let (_, j) = due.pop_front().expect("checked");
            let fraud = &rows[j];
            let mut keys = [None; 4];
            interceptor::count_fraud_on_entities(
                store.entities(),
                set,
                fraud.at,
                store.txn_hash(fraud.customer_id(), fraud.transaction_id()),
                |kind| fraud.entity_key(kind),
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
    if let Some(delay) = config.label_delay
        && row.label == Some(true)
    {
        due.push_back((row.at.saturating_add(delay), i));
    }
    values
}

#[cfg(test)]
mod tests {
    use super::any_repeats;

    #[test]
    fn a_repeated_hash_is_found_in_whichever_bucket_it_falls() {
        // On one thread, and on threads of a bucket or two each and of an uneven share.
        for threads in [1, 3, 200] {
            assert!(!any_repeats(&[], threads));
            let spread: Vec<u64> = (0..5_000u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            assert!(!any_repeats(&spread, threads));
            for at in [0, 1, 2_500, 4_999] {
                let mut repeated = spread.clone();
                repeated.push(spread[at]);
                repeated.swap(0, 5_000);
                assert!(any_repeats(&repeated, threads), "the repeat of entry {at}");
            }
            // The last bucket's.
            assert!(any_repeats(&[u64::MAX, 1, u64::MAX], threads));
            // Equal top bytes, different hashes: no repeat.
            assert!(!any_repeats(
                &[7 << 56, (7 << 56) | 1, (7 << 56) | 2],
                threads
            ));
        }
    }

    /// Entity values found entity by entity are the ordered pass's: on a card history with
    /// entity windows and fraud labels coming due, every decision, with every feature it read,
    /// is the same both ways. (Replay's tests compare either with the one-thread replay.)
    #[test]
    fn entity_values_found_entity_by_entity_are_the_ordered_pass_values() {
        use super::super::generate::GenConfig;
        use super::super::{generate_card, input};
        use super::{Action, Decision, Job, Row, RuleSet, plan, run};
        use crate::live_rules::LiveRules;

        let dir = std::env::temp_dir().join(format!("tripwire-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("card.csv");
        let gen_config = GenConfig {
            customers: 300,
            days: 30,
            seed: 11,
            per_pattern: 3,
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        generate_card::generate(&gen_config, &mut file).unwrap();
        drop(file);
        let (mut rows, bad) = input::read(&[csv], &input::Mapping::default(), true).unwrap();
        assert!(bad.is_empty());
        super::super::sort(&mut rows);
        let rules = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/card/rules.yaml"
        ))
        .unwrap();
        let live = LiveRules::new(&rules, "live").unwrap();
        let set = &live.load_full().set;
        assert!(!set.entity_features.is_empty());
        let config = super::ReplayConfig {
            label_delay: Some(7 * 86_400_000_000),
            threads: Some(2),
            ..Default::default()
        };
        let terminal = set
            .rules()
            .iter()
            .position(|r| &*r.id == "compromised_terminal")
            .unwrap() as u16;
        let decide = |plan: super::Plan| {
            let job = Job {
                rules: &rules,
                which: "live",
                rows: &rows,
                config: &config,
            };
            let mut decided = Vec::new();
            let extract = |_: &Row, d: Result<&Decision, Action>, _: &RuleSet| {
                d.map(|d| {
                    let read = (d.action, &d.hits, &d.shadow, &d.tags, &d.features);
                    let terminal_fired = [&d.hits, &d.shadow, &d.tags]
                        .iter()
                        .any(|hits| hits.contains(&terminal));
                    (format!("{read:?}"), terminal_fired)
                })
            };
            let each = |_: &Row, d, _: &RuleSet| {
                decided.push(d);
                Ok(())
            };
            run(
                plan,
                job,
                set,
                &extract,
                each,
                &indicatif::ProgressBar::hidden(),
            )
            .unwrap();
            decided
        };
        // A plan a replay, as a replay's own.
        let plan = || plan(&rows, &config, set).expect("the history splits");
        assert!(
            rows.len() < super::SEGMENT_CHUNKS * super::CHUNK,
            "one segment"
        );
        let by_entity = decide(plan());
        // Segments of one chunk: entities' records and fraud reports carried between them.
        let mut in_segments = plan();
        in_segments.segment_chunks = 1;
        let in_segments = decide(in_segments);
        let mut ordered = plan();
        ordered.by_entity = false;
        let ordered = decide(ordered);
        assert_eq!(by_entity.len(), rows.len());
        assert!(by_entity == ordered, "the two passes disagree");
        assert!(
            in_segments == ordered,
            "the two passes disagree, in segments"
        );
        assert!(
            by_entity.iter().any(|d| d.as_ref().is_ok_and(|d| d.1)),
            "an entity window fired"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! State kept per merchant, device, IP address and channel: what `by:` windows read.
//!
//! One merchant or device can carry millions of transactions a month, so an entity keeps no
//! events: it keeps **hourly buckets** (transactions, their sum, confirmed frauds among them),
//! only for hours that had any, and only as far back as the live rules read (their longest
//! `window` + `mature_after`). An entity window (t − w, t] therefore counts whole hours: the
//! buckets from the hour holding t − w (exclusive) to the hour holding t (inclusive); the
//! resolution is one hour. The buckets hold running totals, so a window is the difference of
//! two of them, found in a step or two, however many hours it spans. It also keeps the
//! distinct customers seen most recently (up to [`MAX_DISTINCT`], with the time each was last
//! seen), exact for windows that held no more than that many, and the transaction hashes of the
//! last [`FRAUD_MEMORY`] fraud reports, so a report repeated is counted once.
//!
//! The store is sharded like the customer store; an entity is found under one shard lock. The
//! number of entities is capped (`max_entities`); past it, the least recently active of the
//! first 32 entities of the shard's table is dropped (an approximate LRU, as Redis samples).
//!
//! Bytes per entity, measured: 400 with one active hour, 1,217 with 24 active hours and eight
//! customers (`cargo bench --bench memory -- --entities 200000 --hours 24 --distinct 8`).

use std::collections::VecDeque;

use hashbrown::HashTable;
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::txn::EventTime;

/// Microseconds in an hour: the resolution of entity windows.
pub const BUCKET_MICROS: i64 = 3_600_000_000;
/// Most distinct customers an entity remembers.
pub const MAX_DISTINCT: usize = 64;
/// Fraud reports an entity remembers, to count a repeated report once.
pub const FRAUD_MEMORY: usize = 32;

/// What an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EntityKind {
    /// A merchant or terminal (`merchant_id`).
    Merchant = 0,
    /// A device (`device_id`).
    Device = 1,
    /// An IP address (`ip`).
    Ip = 2,
    /// A channel (`channel`).
    Channel = 3,
}

impl EntityKind {
    /// Every kind, in order.
    pub const ALL: [EntityKind; 4] = [
        EntityKind::Merchant,
        EntityKind::Device,
        EntityKind::Ip,
        EntityKind::Channel,
    ];

    /// The field naming it, as written in `by:`.
    pub fn field(self) -> &'static str {
        match self {
            EntityKind::Merchant => "merchant_id",
            EntityKind::Device => "device_id",
            EntityKind::Ip => "ip",
            EntityKind::Channel => "channel",
        }
    }
}

/// One hour of an entity's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Hours since the epoch.
    pub hour: i64,
    /// Transactions.
    pub count: u32,
    /// Confirmed frauds among them.
    pub fraud: u32,
    /// Their amounts, minor units.
    pub sum: i64,
}

/// Transactions, frauds and amounts summed over every hour up to and including `hour`, since the
/// entity was first held. They wrap, so only the difference of two means anything; it is exact
/// while a window holds fewer than 2³² transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Running {
    hour: i64,
    count: u32,
    fraud: u32,
    sum: i64,
}

impl Running {
    fn add(&mut self, count: u32, fraud: u32, sum: i64) {
        self.count = self.count.wrapping_add(count);
        self.fraud = self.fraud.wrapping_add(fraud);
        self.sum = self.sum.wrapping_add(sum);
    }

    /// Transactions, sum and frauds of the hours after `earlier`'s up to this one's.
    fn since(self, earlier: Running) -> (u32, i64, u32) {
        (
            self.count.wrapping_sub(earlier.count),
            self.sum.wrapping_sub(earlier.sum),
            self.fraud.wrapping_sub(earlier.fraud),
        )
    }
}

/// One entity's state.
#[derive(Debug)]
pub struct EntityRecord {
    /// Running totals at each active hour, oldest first. A window's totals are the difference
    /// of two entries, so a 28-day window of a merchant active every hour costs two look-ups
    /// instead of a walk over 672 hours. A transaction in the newest hour adds to the last
    /// entry only; one counted in an older hour (a fraud report, a late arrival) adds to every
    /// entry from its hour on, which is rare.
    running: VecDeque<Running>,
    /// The hour of `running`'s oldest entry (`i64::MAX` when it has none), kept beside it:
    /// pruning, done before every look-up, then reads the record's own memory instead of the
    /// deque's buffer, which on a large store is a cache miss on nearly every look-up.
    oldest_hour: i64,
    /// The running totals just before the oldest hour held: what pruning dropped.
    base: Running,
    /// (customer hash, last seen) of the most recently seen distinct customers.
    pub customers: SmallVec<[(u64, EventTime); 4]>,
    /// Transaction hashes of the latest fraud reports.
    frauds: SmallVec<[u64; 4]>,
    last_active: EventTime,
}

impl Default for EntityRecord {
    fn default() -> EntityRecord {
        EntityRecord {
            running: VecDeque::new(),
            oldest_hour: i64::MAX,
            base: Running::default(),
            customers: SmallVec::new(),
            frauds: SmallVec::new(),
            last_active: EventTime::default(),
        }
    }
}

/// The hour holding `at`.
#[inline]
pub fn hour_of(at: EventTime) -> i64 {
    at.div_euclid(BUCKET_MICROS)
}

/// Where `customer` is among `seen` (each hash is there at most once). At a busy merchant the
/// customer is usually not among the 64 kept, so the whole list is read, four entries at a
/// time ([`super::position_by_fours`]).
#[inline]
fn position_of(seen: &[(u64, EventTime)], customer: u64) -> Option<usize> {
    let is = |&(c, _): &(u64, EventTime)| c == customer;
    super::position_by_fours(seen, is, is)
}

/// The index of the first entry last seen earliest (`min_by_key`'s answer), for a non-empty
/// list: four running minima over every fourth entry, so that the comparisons do not wait on
/// each other, then the least of the four, the lower index on a tie.
#[inline]
fn first_oldest(seen: &[(u64, EventTime)]) -> usize {
    let Some(first) = seen.first() else {
        return 0;
    };
    // (last seen, index) of the least so far in each lane. Every lane starts at the first
    // entry, which wins every tie as the lowest index; within a lane only a strictly earlier
    // time replaces the one held, so each lane holds its own first oldest.
    let mut lanes = [(first.1, 0usize); 4];
    let mut chunks = seen.chunks_exact(4);
    for (k, chunk) in chunks.by_ref().enumerate() {
        for (l, (lane, entry)) in lanes.iter_mut().zip(chunk).enumerate() {
            if entry.1 < lane.0 {
                *lane = (entry.1, 4 * k + l);
            }
        }
    }
    let mut oldest = lanes.into_iter().min().unwrap_or((first.1, 0));
    let done = seen.len() - chunks.remainder().len();
    for (i, entry) in chunks.remainder().iter().enumerate() {
        if entry.1 < oldest.0 {
            oldest = (entry.1, done + i);
        }
    }
    oldest.1
}

/// Steps a look-up walks from its first guess before it turns to a binary search.
const GUESS_WALK: usize = 8;

impl EntityRecord {
    /// Adds to the hour `hour`, creating it if it had nothing.
    fn add(&mut self, hour: i64, count: u32, fraud: u32, sum: i64) {
        // Transactions come in nearly time order: the hour is almost always the newest held or
        // a newer one, found without a search.
        let newest = self.running.back().copied();
        match newest {
            Some(last) if last.hour == hour => {
                self.running
                    .back_mut()
                    .expect("checked")
                    .add(count, fraud, sum);
                return;
            }
            Some(last) if last.hour > hour => {}
            _ => {
                let mut next = Running {
                    hour,
                    ..newest.unwrap_or(self.base)
                };
                next.add(count, fraud, sum);
                self.running.push_back(next);
                self.oldest_hour = self.oldest_hour.min(hour);
                return;
            }
        }
        let pos = self.running.partition_point(|b| b.hour < hour);
        if self.running[pos].hour != hour {
            let before = pos.checked_sub(1).map_or(self.base, |i| self.running[i]);
            self.running.insert(pos, Running { hour, ..before });
            self.oldest_hour = self.oldest_hour.min(hour);
        }
        for later in self.running.range_mut(pos..) {
            later.add(count, fraud, sum);
        }
    }

    /// The running totals of the hours up to and including `hour`.
    fn running_at(&self, hour: i64) -> Running {
        let (Some(first), Some(last)) = (self.running.front(), self.running.back()) else {
            return self.base;
        };
        if last.hour <= hour {
            // Windows mostly end in the newest hour held.
            return *last;
        }
        if first.hour > hour {
            return self.base;
        }
        // first.hour <= hour < last.hour. A busy entity is active nearly every hour, so the
        // entry's place is guessed from the hours; a short walk corrects the guess, and a binary
        // search takes over when the hours are uneven.
        let (offset, span) = ((hour - first.hour) as u64, (last.hour - first.hour) as u64);
        let len = self.running.len();
        // In 64 bits whenever the product fits, as it does for any real history (hours of ten
        // thousand years times as many entries): a 128-bit division is a library call.
        let guess = match offset.checked_mul(len as u64 - 1) {
            Some(product) => product / span,
            None => (u128::from(offset) * (len as u128 - 1) / u128::from(span)) as u64,
        } as usize;
        // The last entry at or before `hour`: index `i` with running[i].hour <= hour and
        // running[i + 1].hour > hour (the last entry is past `hour`, so i + 1 < len).
        let mut i = guess.min(len - 2);
        for _ in 0..GUESS_WALK {
            if self.running[i].hour > hour {
                i -= 1; // running[0].hour <= hour, so i > 0 here.
            } else if self.running[i + 1].hour <= hour {
                i += 1;
            } else {
                return self.running[i];
            }
        }
        self.running[self.running.partition_point(|b| b.hour <= hour) - 1]
    }

    /// Records a transaction of `customer` (its hash) at `at`.
    pub fn record(&mut self, at: EventTime, amount: i64, customer: u64) {
        self.record_activity(at, amount);
        match position_of(&self.customers, customer) {
            Some(seen) => self.customers[seen].1 = self.customers[seen].1.max(at),
            None => {
                if self.customers.len() >= MAX_DISTINCT {
                    let oldest = first_oldest(&self.customers);
                    self.customers.swap_remove(oldest);
                }
                self.customers.push((customer, at));
            }
        }
    }

    /// [`EntityRecord::record`] without the customer: for a caller that never reads this
    /// entity's distinct customers (replay, when no rule of its fixed rule set reads them of
    /// this kind). A terminal's customers are many, and finding one among the 64 kept was
    /// most of recording a transaction.
    pub fn record_activity(&mut self, at: EventTime, amount: i64) {
        self.add(hour_of(at), 1, 0, amount);
        self.last_active = self.last_active.max(at);
    }

    /// Records a confirmed fraud on the transaction `txn_hash` made at `at`; a report already
    /// counted is ignored. Returns whether it counted.
    pub fn record_fraud(&mut self, at: EventTime, txn_hash: u64) -> bool {
        if self.frauds.contains(&txn_hash) {
            return false;
        }
        if self.frauds.len() >= FRAUD_MEMORY {
            self.frauds.remove(0);
        }
        self.frauds.push(txn_hash);
        self.add(hour_of(at), 0, 1, 0);
        true
    }

    /// Transactions, sum and frauds in the hours (hour_of(from), hour_of(to)].
    pub fn totals(&self, from: EventTime, to: EventTime) -> (u32, i64, u32) {
        let (lo, hi) = (hour_of(from), hour_of(to));
        if hi <= lo {
            return (0, 0, 0);
        }
        self.running_at(hi).since(self.running_at(lo))
    }

    /// The active hours held, oldest first, each with its own totals.
    pub fn hours(&self) -> impl Iterator<Item = Bucket> + '_ {
        let mut before = self.base;
        self.running.iter().map(move |r| {
            let (count, sum, fraud) = r.since(before);
            before = *r;
            Bucket {
                hour: r.hour,
                count,
                fraud,
                sum,
            }
        })
    }

    /// Distinct customers last seen in (from, to].
    pub fn distinct_customers(&self, from: EventTime, to: EventTime) -> u32 {
        self.customers
            .iter()
            .filter(|(_, at)| *at > from && *at <= to)
            .count() as u32
    }

    /// Drops buckets wholly older than `keep_from`.
    pub fn prune(&mut self, keep_from: EventTime) {
        let lo = hour_of(keep_from);
        while self.oldest_hour < lo {
            self.base = self.running.pop_front().expect("an oldest hour is held");
            self.oldest_hour = self.running.front().map_or(i64::MAX, |b| b.hour);
        }
    }

    /// Appends the record, with its kind and key, in the snapshot format.
    pub fn encode(&self, kind: EntityKind, key: &str, out: &mut Vec<u8>) {
        out.push(kind as u8);
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&self.last_active.to_le_bytes());
        out.extend_from_slice(&(self.running.len() as u32).to_le_bytes());
        for b in self.hours() {
            out.extend_from_slice(&b.hour.to_le_bytes());
            out.extend_from_slice(&b.count.to_le_bytes());
            out.extend_from_slice(&b.fraud.to_le_bytes());
            out.extend_from_slice(&b.sum.to_le_bytes());
        }
        out.extend_from_slice(&(self.customers.len() as u16).to_le_bytes());
        for (c, at) in &self.customers {
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
        out.extend_from_slice(&(self.frauds.len() as u16).to_le_bytes());
        for h in &self.frauds {
            out.extend_from_slice(&h.to_le_bytes());
        }
    }

    /// Reads one record written by [`EntityRecord::encode`] from `read`, whose first byte (the
    /// kind) was read already.
    pub fn decode(
        kind: u8,
        read: &mut impl std::io::Read,
    ) -> Result<(EntityKind, String, EntityRecord), String> {
        fn take<const N: usize>(read: &mut impl std::io::Read) -> Result<[u8; N], String> {
            let mut b = [0u8; N];
            read.read_exact(&mut b).map_err(|e| e.to_string())?;
            Ok(b)
        }
        let kind = *EntityKind::ALL
            .get(usize::from(kind))
            .ok_or("an entity of an unknown kind")?;
        let mut key = vec![0u8; usize::from(u16::from_le_bytes(take(read)?))];
        read.read_exact(&mut key).map_err(|e| e.to_string())?;
        let key = String::from_utf8(key).map_err(|_| "an entity key is not UTF-8".to_string())?;
        let mut record = EntityRecord {
            last_active: i64::from_le_bytes(take(read)?),
            ..EntityRecord::default()
        };
        let buckets = u32::from_le_bytes(take(read)?);
        let mut previous = i64::MIN;
        for _ in 0..buckets {
            let b = Bucket {
                hour: i64::from_le_bytes(take(read)?),
                count: u32::from_le_bytes(take(read)?),
                fraud: u32::from_le_bytes(take(read)?),
                sum: i64::from_le_bytes(take(read)?),
            };
            if b.hour <= previous {
                return Err("an entity's hours are out of order".into());
            }
            previous = b.hour;
            // Hours strictly increase, so each one becomes a new newest entry.
            record.add(b.hour, b.count, b.fraud, b.sum);
        }
        for _ in 0..u16::from_le_bytes(take(read)?) {
            let c = u64::from_le_bytes(take(read)?);
            let at = i64::from_le_bytes(take(read)?);
            record.customers.push((c, at));
        }
        for _ in 0..u16::from_le_bytes(take(read)?) {
            record.frauds.push(u64::from_le_bytes(take(read)?));
        }
        if record.customers.len() > MAX_DISTINCT || record.frauds.len() > FRAUD_MEMORY {
            return Err("an entity remembers more than it can".into());
        }
        Ok((kind, key, record))
    }

    /// Bytes held, for the memory figures.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<EntityRecord>()
            + self.running.capacity() * std::mem::size_of::<Running>()
            + if self.customers.spilled() {
                self.customers.capacity() * 16
            } else {
                0
            }
            + if self.frauds.spilled() {
                self.frauds.capacity() * 8
            } else {
                0
            }
    }
}

/// What one entity feature read from its entity, for one decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityValue {
    /// Whether the transaction named the entity (otherwise the feature is missing).
    pub present: bool,
    /// Transactions in the window.
    pub count: u32,
    /// Their sum, minor units.
    pub sum: i64,
    /// Confirmed frauds among them.
    pub fraud: u32,
    /// Distinct customers in the window.
    pub distinct: u32,
}

/// An entity's id as held: inline up to 16 bytes (merchant and terminal ids, devices, IPv4
/// addresses, channels), so that confirming a match reads the table's own memory instead of
/// following a pointer to the key, a cache miss on nearly every look-up of a large store.
type HeldKey = SmallVec<[u8; 16]>;

/// One entity in its shard's table.
struct Held {
    kind: EntityKind,
    key: HeldKey,
    record: EntityRecord,
}

impl Held {
    #[inline]
    fn is(&self, kind: EntityKind, key: &str) -> bool {
        self.kind == kind && self.key.as_slice() == key.as_bytes()
    }
}

/// One table for every kind, found by the hash that picked the shard: each look-up hashes its
/// key once.
#[derive(Default)]
struct Shard {
    table: HashTable<Held>,
}

/// The sharded entity store.
pub struct EntityStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard_cap: usize,
    hasher: ahash::RandomState,
}

impl std::fmt::Debug for EntityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityStore")
            .field("shards", &self.shards.len())
            .field("entities", &self.len())
            .finish()
    }
}

impl EntityStore {
    /// A store of at most `max_entities` entities.
    pub fn new(max_entities: usize) -> EntityStore {
        let max = max_entities.max(1);
        let shards = (max / 256).clamp(1, 256).next_power_of_two();
        EntityStore {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard_cap: max.div_ceil(shards),
            hasher: ahash::RandomState::new(),
        }
    }

    /// A store like this one, empty, holding at most `max_entities`, with the same hash keys.
    pub fn emptied_with_cap(&self, max_entities: usize) -> EntityStore {
        EntityStore {
            hasher: self.hasher.clone(),
            ..EntityStore::new(max_entities)
        }
    }

    /// This store with hash keys from `seed` instead of the OS (only before any entity is
    /// held): the same entities then fall in the same shards, run after run.
    pub fn seeded(self, seed: u64) -> EntityStore {
        EntityStore {
            hasher: ahash::RandomState::with_seeds(seed ^ 6, seed ^ 7, seed ^ 8, seed ^ 9),
            ..self
        }
    }

    /// A key's hash, over its bytes: the same for the `&str` looked up and the bytes held.
    #[inline]
    fn hash(&self, kind: EntityKind, key: &[u8]) -> u64 {
        self.hasher.hash_one((kind as u8, key))
    }

    /// The index of a hash's shard (see [`super::shard_index`]).
    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        super::shard_index(hash, self.shards.len() as u64 - 1)
    }

    /// The shard of a hash.
    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[self.shard_of(hash)]
    }

    /// Whether this store, empty, would hold every one of `keys` (distinct entities) without
    /// dropping any: none of its shards would pass its share of the cap. Only then does each
    /// entity's state depend on its own transactions alone, which replay's entity pass taken
    /// entity by entity relies on.
    pub fn would_hold_all<'k>(
        &self,
        keys: impl IntoIterator<Item = (EntityKind, &'k str)>,
    ) -> bool {
        let mut held = vec![0usize; self.shards.len()];
        keys.into_iter().all(|(kind, key)| {
            let shard = self.shard_of(self.hash(kind, key.as_bytes()));
            held[shard] += 1;
            held[shard] <= self.per_shard_cap
        })
    }

    /// Runs `f` on the entity under its shard lock, creating it (and dropping an approximately
    /// least recently active one when the shard is full) if it does not exist. Buckets older
    /// than `keep_from` are dropped first.
    pub fn with_entity<R>(
        &self,
        kind: EntityKind,
        key: &str,
        keep_from: EventTime,
        f: impl FnOnce(&mut EntityRecord) -> R,
    ) -> R {
        let hash = self.hash(kind, key.as_bytes());
        let mut guard = self.shard(hash).lock();
        let shard = &mut *guard;
        // One lookup when the entity is held, as it nearly always is.
        if let Some(held) = shard.table.find_mut(hash, |h| h.is(kind, key)) {
            held.record.prune(keep_from);
            return f(&mut held.record);
        }
        if shard.table.len() >= self.per_shard_cap {
            let victim = shard
                .table
                .iter()
                .take(32)
                .min_by_key(|h| h.record.last_active)
                .map(|h| (h.kind, h.key.clone()));
            if let Some((kind, key)) = victim {
                let victim_hash = self.hash(kind, &key);
                if let Ok(entry) = shard
                    .table
                    .find_entry(victim_hash, |h| h.kind == kind && h.key == key)
                {
                    entry.remove();
                }
            }
        }
        let held = shard
            .table
            .insert_unique(
                hash,
                Held {
                    kind,
                    key: HeldKey::from_slice(key.as_bytes()),
                    record: EntityRecord::default(),
                },
                |h| self.hash(h.kind, &h.key),
            )
            .into_mut();
        held.record.prune(keep_from);
        f(&mut held.record)
    }

    /// Reads the entity, if held.
    pub fn with_existing<R>(
        &self,
        kind: EntityKind,
        key: &str,
        f: impl FnOnce(&EntityRecord) -> R,
    ) -> Option<R> {
        let hash = self.hash(kind, key.as_bytes());
        let shard = self.shard(hash).lock();
        shard
            .table
            .find(hash, |h| h.is(kind, key))
            .map(|h| f(&h.record))
    }

    /// Puts a record read from a snapshot in place (replacing one held under that key).
    pub fn insert(&self, kind: EntityKind, key: &str, record: EntityRecord) {
        let hash = self.hash(kind, key.as_bytes());
        let mut shard = self.shard(hash).lock();
        match shard
            .table
            .entry(hash, |h| h.is(kind, key), |h| self.hash(h.kind, &h.key))
        {
            hashbrown::hash_table::Entry::Occupied(mut held) => held.get_mut().record = record,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(Held {
                    kind,
                    key: HeldKey::from_slice(key.as_bytes()),
                    record,
                });
            }
        }
    }

    /// Drops every entity.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.lock() = Shard::default();
        }
    }

    /// Calls `f` with every entity of shard `i` (0..[`EntityStore::shard_count`]) under its
    /// lock, for snapshots.
    pub fn for_each_in_shard(&self, i: usize, mut f: impl FnMut(EntityKind, &str, &EntityRecord)) {
        let shard = self.shards[i].lock();
        for held in &shard.table {
            // Held keys are copied from `&str`s, so always UTF-8.
            if let Ok(key) = std::str::from_utf8(&held.key) {
                f(held.kind, key, &held.record);
            }
        }
    }

    /// Shards, for [`EntityStore::for_each_in_shard`].
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().table.len()).sum()
    }

    /// Whether no entity is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the entities (their place in the tables, their records' own allocations
    /// and long keys; not the tables' slack).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.table
                    .iter()
                    .map(|h| {
                        std::mem::size_of::<Held>() - std::mem::size_of::<EntityRecord>()
                            + if h.key.spilled() { h.key.capacity() } else { 0 }
                            + h.record.bytes()
                    })
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = BUCKET_MICROS;

    proptest! {
        /// The unrolled scans answer what `position` and `min_by_key` (first of the least)
        /// answer: few distinct times, so ties are common.
        #[test]
        fn scans_match_the_plain_ones(
            seen in proptest::collection::vec((0u64..80, 0i64..6), 0..=MAX_DISTINCT),
            customer in 0u64..80,
        ) {
            prop_assert_eq!(
                position_of(&seen, customer),
                seen.iter().position(|&(c, _)| c == customer)
            );
            if !seen.is_empty() {
                prop_assert_eq!(
                    first_oldest(&seen),
                    (0..seen.len()).min_by_key(|&i| seen[i].1).unwrap()
                );
            }
        }
    }

    #[test]
    fn windows_count_whole_hours_and_frauds_once() {
        let store = EntityStore::new(100);
        let t0 = 1_000 * H;
        store.with_entity(EntityKind::Merchant, "m1", 0, |r| {
            for i in 0..5 {
                r.record(t0 + i * H + 10, 100, i as u64);
            }
            assert!(r.record_fraud(t0 + H + 10, 77));
            assert!(
                !r.record_fraud(t0 + H + 10, 77),
                "a repeated report counts once"
            );
        });
        store.with_existing(EntityKind::Merchant, "m1", |r| {
            // From inside hour 1000 to inside hour 1004: hours 1001..=1004.
            assert_eq!(r.totals(t0 + 5, t0 + 4 * H + 20), (4, 400, 1));
            assert_eq!(r.totals(t0 + 2 * H, t0 + 4 * H), (2, 200, 0));
            assert_eq!(r.distinct_customers(t0 + 2 * H, t0 + 5 * H), 3);
        });
        assert!(
            store
                .with_existing(EntityKind::Device, "m1", |_| ())
                .is_none()
        );
        // Pruning drops the hours before the one holding `keep_from`.
        store.with_entity(EntityKind::Merchant, "m1", t0 + 3 * H, |r| {
            assert_eq!(r.hours().count(), 2);
        });
    }

    /// What an entity holds, kept the plain way: each hour's own totals, summed per window.
    #[derive(Default)]
    struct HourlyModel(std::collections::BTreeMap<i64, (u32, i64, u32)>);

    impl HourlyModel {
        fn totals(&self, from: EventTime, to: EventTime) -> (u32, i64, u32) {
            let (lo, hi) = (hour_of(from), hour_of(to));
            if hi <= lo {
                return (0, 0, 0);
            }
            self.0
                .range(lo + 1..=hi)
                .fold((0, 0, 0), |(c, s, f), (_, b)| (c + b.0, s + b.1, f + b.2))
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A transaction this many minutes after (or, negative, before) the latest.
        Txn(i64, i64),
        /// A fraud report on a transaction this many minutes before the latest.
        Fraud(i64),
        /// Pruning everything older than this many hours before the latest.
        Prune(i64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (-180i64..300, -5_000i64..100_000).prop_map(|(m, a)| Step::Txn(m, a)),
            1 => (0i64..6_000, 1i64..100).prop_map(|(m, a)| Step::Txn(m, a)),
            1 => (-18_000i64..0, 1i64..100).prop_map(|(m, a)| Step::Txn(m, a)),
            2 => (0i64..6_000).prop_map(Step::Fraud),
            1 => (24i64..200).prop_map(Step::Prune),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Running totals answer every window as summing the hours one by one does, through
        /// late arrivals (some older than what was pruned), reports on old hours, uneven gaps,
        /// pruning and a snapshot round trip.
        #[test]
        fn running_totals_answer_windows_as_hourly_sums(steps in proptest::collection::vec(step(), 1..150)) {
            let mut record = EntityRecord::default();
            let mut model = HourlyModel::default();
            let minute = BUCKET_MICROS / 60;
            let mut latest = 500_000 * H;
            let mut kept_from = i64::MIN;
            for (i, step) in steps.iter().enumerate() {
                match *step {
                    Step::Txn(m, amount) => {
                        // Unclamped: a transaction older than the pruned hours makes an hour
                        // of its own before the oldest held, as it always did.
                        let at = latest + m * minute;
                        latest = latest.max(at);
                        record.record(at, amount, i as u64 % 7);
                        let b = model.0.entry(hour_of(at)).or_default();
                        b.0 += 1;
                        b.1 += amount;
                    }
                    Step::Fraud(m) => {
                        let at = (latest - m * minute).max(kept_from);
                        proptest::prop_assert!(record.record_fraud(at, i as u64));
                        model.0.entry(hour_of(at)).or_default().2 += 1;
                    }
                    Step::Prune(h) => {
                        let keep_from = latest - h * H;
                        if keep_from > kept_from {
                            kept_from = keep_from;
                            record.prune(keep_from);
                            model.0.retain(|&hour, _| hour >= hour_of(keep_from));
                        }
                    }
                }
                proptest::prop_assert_eq!(
                    record.oldest_hour,
                    record.running.front().map_or(i64::MAX, |b| b.hour)
                );
                for (back, width) in [(0, 1), (0, 24), (7 * 24, 28 * 24), (3, 5), (40, 2), (0, 400)] {
                    let to = latest - back * H;
                    let from = to - width * H;
                    proptest::prop_assert_eq!(record.totals(from, to), model.totals(from, to));
                }
            }
            let held: Vec<Bucket> = record.hours().collect();
            let expected: Vec<Bucket> = model
                .0
                .iter()
                .map(|(&hour, &(count, sum, fraud))| Bucket { hour, count, fraud, sum })
                .collect();
            proptest::prop_assert_eq!(&held, &expected);
            let mut bytes = Vec::new();
            record.encode(EntityKind::Merchant, "m", &mut bytes);
            let (_, _, restored) = EntityRecord::decode(bytes[0], &mut &bytes[1..]).unwrap();
            proptest::prop_assert_eq!(restored.hours().collect::<Vec<_>>(), held);
            for back in 0..60 {
                let to = latest - back * H;
                let from = (to - 30 * H).max(kept_from);
                proptest::prop_assert_eq!(restored.totals(from, to), model.totals(from, to));
            }
        }
    }

    #[test]
    fn a_store_knows_which_entities_it_would_hold_without_dropping_one() {
        // One shard, holding 300.
        let store = EntityStore::new(300);
        let keys: Vec<String> = (0..301).map(|i| format!("m{i}")).collect();
        let all = |n: usize| keys[..n].iter().map(|k| (EntityKind::Merchant, k.as_str()));
        assert!(store.would_hold_all(all(300)));
        assert!(!store.would_hold_all(all(301)));
        // A larger store's shards fill unevenly: past some shard's share, not all are held.
        let store = EntityStore::new(100_000);
        let keys: Vec<String> = (0..100_001).map(|i| format!("d{i}")).collect();
        assert!(
            !store.would_hold_all(keys.iter().map(|k| (EntityKind::Device, k.as_str()))),
            "100,001 entities pass some shard's share of 100,000"
        );
    }

    /// With the same seed, a store's check names exactly the entity that would make another
    /// store drop one.
    #[test]
    fn a_seeded_store_drops_an_entity_exactly_where_its_twin_says_it_would() {
        let check = EntityStore::new(1_000).seeded(7);
        let keys: Vec<String> = (0..2_000).map(|i| format!("t{i}")).collect();
        let named = |n: usize| keys[..n].iter().map(|k| (EntityKind::Merchant, k.as_str()));
        let first_dropped = (1..=keys.len())
            .find(|&n| !check.would_hold_all(named(n)))
            .expect("2,000 entities pass some shard's share of 1,000");
        let store = EntityStore::new(1_000).seeded(7);
        for key in &keys[..first_dropped - 1] {
            store.with_entity(EntityKind::Merchant, key, 0, |r| r.record(H, 1, 1));
        }
        assert_eq!(store.len(), first_dropped - 1, "none dropped before");
        store.with_entity(EntityKind::Merchant, &keys[first_dropped - 1], 0, |r| {
            r.record(H, 1, 1)
        });
        assert_eq!(store.len(), first_dropped - 1, "one dropped for the next");
        // A resized store keeps its hash keys.
        let resized = store.emptied_with_cap(1_000);
        assert!(resized.would_hold_all(named(first_dropped - 1)));
        assert!(!resized.would_hold_all(named(first_dropped)));
    }

    #[test]
    fn the_store_stays_within_its_cap() {
        let store = EntityStore::new(300);
        for i in 0..2_000 {
            store.with_entity(
                EntityKind::Ip,
                &format!("10.0.{}.{}", i / 256, i % 256),
                0,
                |r| r.record(i * H, 1, 1),
            );
        }
        assert!(store.len() <= 300 + store.shards.len(), "{}", store.len());
    }
}

//! State kept per merchant, device, IP address and channel: what `by:` windows read.
//!
//! One merchant or device can carry millions of transactions a month, so an entity keeps no
//! events: it keeps **hourly buckets** (transactions, their sum, confirmed frauds among them),
//! only for hours that had any, and only as far back as the live rules read (their longest
//! `window` + `mature_after`). An entity window (t − w, t] therefore counts whole hours: the
//! buckets from the hour holding t − w (exclusive) to the hour holding t (inclusive); the
//! resolution is one hour. It also keeps the distinct customers seen most recently (up to
//! [`MAX_DISTINCT`], with the time each was last seen), exact for windows that held no more
//! than that many, and the transaction hashes of the last [`FRAUD_MEMORY`] fraud reports, so a
//! report repeated is counted once.
//!
//! The store is sharded like the customer store; an entity is found under one shard lock. The
//! number of entities is capped (`max_entities`); past it, the least recently active of a
//! sample of eight in the shard is dropped (the approximate LRU Redis uses).
//!
//! Bytes per entity, measured: 369 with one active hour, 1,186 with 24 active hours and eight
//! customers (`cargo bench --bench memory -- --entities 200000 --hours 24 --distinct 8`).

use std::collections::VecDeque;

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

/// One entity's state.
#[derive(Debug, Default)]
pub struct EntityRecord {
    /// Active hours, oldest first.
    pub buckets: VecDeque<Bucket>,
    /// (customer hash, last seen) of the most recently seen distinct customers.
    pub customers: SmallVec<[(u64, EventTime); 4]>,
    /// Transaction hashes of the latest fraud reports.
    frauds: SmallVec<[u64; 4]>,
    last_active: EventTime,
}

/// The hour holding `at`.
#[inline]
pub fn hour_of(at: EventTime) -> i64 {
    at.div_euclid(BUCKET_MICROS)
}

impl EntityRecord {
    fn bucket_mut(&mut self, hour: i64) -> &mut Bucket {
        // Transactions come in nearly time order: the hour is almost always the newest held or
        // a newer one, found without a search.
        match self.buckets.back().map(|b| b.hour) {
            Some(last) if last == hour => {
                return self.buckets.back_mut().expect("checked");
            }
            None => {}
            Some(last) if last > hour => {}
            Some(_) => {
                self.buckets.push_back(Bucket {
                    hour,
                    count: 0,
                    fraud: 0,
                    sum: 0,
                });
                return self.buckets.back_mut().expect("pushed");
            }
        }
        let pos = self.buckets.partition_point(|b| b.hour < hour);
        if self.buckets.get(pos).is_none_or(|b| b.hour != hour) {
            self.buckets.insert(
                pos,
                Bucket {
                    hour,
                    count: 0,
                    fraud: 0,
                    sum: 0,
                },
            );
        }
        &mut self.buckets[pos]
    }

    /// Records a transaction of `customer` (its hash) at `at`.
    pub fn record(&mut self, at: EventTime, amount: i64, customer: u64) {
        let b = self.bucket_mut(hour_of(at));
        b.count += 1;
        b.sum += amount;
        match self.customers.iter_mut().find(|(c, _)| *c == customer) {
            Some(seen) => seen.1 = seen.1.max(at),
            None => {
                if self.customers.len() >= MAX_DISTINCT
                    && let Some(oldest) =
                        (0..self.customers.len()).min_by_key(|&i| self.customers[i].1)
                {
                    self.customers.swap_remove(oldest);
                }
                self.customers.push((customer, at));
            }
        }
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
        self.bucket_mut(hour_of(at)).fraud += 1;
        true
    }

    /// Transactions, sum and frauds in the hours (hour_of(from), hour_of(to)].
    pub fn totals(&self, from: EventTime, to: EventTime) -> (u32, i64, u32) {
        let (lo, hi) = (hour_of(from), hour_of(to));
        // From the newest: windows end at or near the latest hour, and the buckets held reach
        // back no further than the longest window (pruned), so this walks what it sums and
        // little more, in memory order.
        self.buckets
            .iter()
            .rev()
            .skip_while(|b| b.hour > hi)
            .take_while(|b| b.hour > lo)
            .fold((0, 0, 0), |(c, s, f), b| {
                (c + b.count, s + b.sum, f + b.fraud)
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
        while self.buckets.front().is_some_and(|b| b.hour < lo) {
            self.buckets.pop_front();
        }
    }

    /// Appends the record, with its kind and key, in the snapshot format.
    pub fn encode(&self, kind: EntityKind, key: &str, out: &mut Vec<u8>) {
        out.push(kind as u8);
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&self.last_active.to_le_bytes());
        out.extend_from_slice(&(self.buckets.len() as u32).to_le_bytes());
        for b in &self.buckets {
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
            record.buckets.push_back(b);
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
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
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

/// One table per kind, so that a lookup borrows the key instead of building one.
struct Shard {
    maps: [ahash::AHashMap<Box<str>, EntityRecord>; 4],
}

impl Shard {
    fn len(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }
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
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        maps: Default::default(),
                    })
                })
                .collect(),
            per_shard_cap: max.div_ceil(shards),
            hasher: ahash::RandomState::new(),
        }
    }

    fn shard(&self, kind: EntityKind, key: &str) -> &Mutex<Shard> {
        let h = self.hasher.hash_one((kind as u8, key));
        &self.shards[(h as usize) & (self.shards.len() - 1)]
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
        let mut guard = self.shard(kind, key).lock();
        let shard = &mut *guard;
        // One lookup when the entity is held, as it nearly always is.
        if let Some(record) = shard.maps[kind as usize].get_mut(key) {
            record.prune(keep_from);
            return f(record);
        }
        if shard.len() >= self.per_shard_cap {
            let victim = shard
                .maps
                .iter()
                .enumerate()
                .flat_map(|(k, m)| {
                    m.iter()
                        .take(8)
                        .map(move |(key, r)| (k, key, r.last_active))
                })
                .min_by_key(|&(_, _, last)| last)
                .map(|(k, key, _)| (k, key.clone()));
            if let Some((k, victim)) = victim {
                shard.maps[k].remove(&victim);
            }
        }
        let record = shard.maps[kind as usize].entry(key.into()).or_default();
        record.prune(keep_from);
        f(record)
    }

    /// Reads the entity, if held.
    pub fn with_existing<R>(
        &self,
        kind: EntityKind,
        key: &str,
        f: impl FnOnce(&EntityRecord) -> R,
    ) -> Option<R> {
        let shard = self.shard(kind, key).lock();
        shard.maps[kind as usize].get(key).map(f)
    }

    /// Puts a record read from a snapshot in place (replacing one held under that key).
    pub fn insert(&self, kind: EntityKind, key: &str, record: EntityRecord) {
        let mut shard = self.shard(kind, key).lock();
        shard.maps[kind as usize].insert(key.into(), record);
    }

    /// Drops every entity.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().maps = Default::default();
        }
    }

    /// Calls `f` with every entity of shard `i` (0..[`EntityStore::shard_count`]) under its
    /// lock, for snapshots.
    pub fn for_each_in_shard(&self, i: usize, mut f: impl FnMut(EntityKind, &str, &EntityRecord)) {
        let shard = self.shards[i].lock();
        for (k, map) in shard.maps.iter().enumerate() {
            for (key, record) in map {
                f(EntityKind::ALL[k], key, record);
            }
        }
    }

    /// Shards, for [`EntityStore::for_each_in_shard`].
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no entity is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the entities' records (not the tables' own slack).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.maps
                    .iter()
                    .flat_map(|m| m.iter())
                    .map(|(k, r)| k.len() + r.bytes())
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = BUCKET_MICROS;

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
            assert_eq!(r.buckets.len(), 2);
        });
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

//! Per-customer state: a sharded map from customer id to a [`CustomerRecord`] (a ring of recent
//! events plus the credit line), bounded by a customer cap with least-recently-active eviction.
//!
//! Each shard is one `parking_lot` mutex over a hash table, a slab of records and an intrusive
//! recency list, so a lookup, an insert, an eviction and a touch are all O(1) and the customer
//! id is stored once. A decision takes exactly one shard lock and holds it only to read and
//! record; nothing here awaits, logs or allocates on the way unless a new customer arrives.

pub mod entity;
pub mod event;
pub mod journal;
pub mod months;
pub mod persist;
pub mod ring;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use hashbrown::HashTable;
use parking_lot::Mutex;
use smallvec::SmallVec;

pub use event::{Event, Outcome};
pub use ring::{Ring, RingTotals};

use crate::txn::{Amount, CreditLine, EventTime};

/// Sizing of the store.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Most customers held; beyond it the least recently active customer of a shard is evicted.
    pub max_customers: usize,
    /// Events kept per customer.
    pub ring_capacity: usize,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            max_customers: 1_000_000,
            ring_capacity: 64,
        }
    }
}

/// One customer's state.
#[derive(Debug)]
pub struct CustomerRecord {
    /// The customer id.
    pub key: CustomerKey,
    /// Recent events, arrival order.
    pub ring: Ring,
    /// Credit limit in minor units; 0 when no line is known (a line's limit is always > 0).
    credit_limit: i64,
    /// When the line was granted, event time.
    credit_granted_at: EventTime,
    /// Latest event time seen for the customer (transaction or credit grant).
    pub last_event_at: EventTime,
    /// Calendar-month totals, kept once a rule set reads monthly features.
    pub months: Option<months::MonthBuckets>,
    /// The median of the amounts the last decision compared with (see
    /// [`CustomerHistory::median_hint`]): a guess kept only to speed up the next one, never
    /// persisted or replicated, since a wrong guess costs time and changes nothing.
    pub median_hint: i64,
    newer: u32,
    older: u32,
}

/// A customer's state copied out of the store.
#[derive(Clone, Debug)]
pub struct CustomerCopy {
    /// The customer id.
    pub key: Box<str>,
    /// Events in arrival order.
    pub events: Vec<Event>,
    /// Whether they arrived in time order.
    pub in_time_order: bool,
    /// The credit line.
    pub credit_line: Option<CreditLine>,
    /// Monthly buckets, when kept.
    pub months: Option<months::MonthBuckets>,
}

impl CustomerCopy {
    /// The engine's view of the copy.
    pub fn history(&self) -> CustomerHistory<'_> {
        CustomerHistory {
            events: (&self.events, &[]),
            credit_line: self.credit_line,
            in_time_order: self.in_time_order,
            totals: Some(RingTotals::of(&self.events)),
            months: self.months.as_ref(),
            entities: &[],
            median_hint: 0,
        }
    }
}

/// Read-only view of a customer's history handed to the engine.
#[derive(Clone, Copy, Debug)]
pub struct CustomerHistory<'a> {
    /// Events in arrival order, older part first.
    pub events: (&'a [Event], &'a [Event]),
    /// The credit line, when known.
    pub credit_line: Option<CreditLine>,
    /// Events arrived in time order (each stamped no earlier than the one before), so a scan
    /// from the newest may stop at the first event older than every window.
    pub in_time_order: bool,
    /// What the events add up to, when known: the aggregates of any window holding them all,
    /// so that a scan in time order stops before such a window (see [`RingTotals`]).
    pub totals: Option<RingTotals>,
    /// Calendar-month totals, when kept.
    pub months: Option<&'a months::MonthBuckets>,
    /// The values of the rule set's entity features (`by:` a merchant, device...), one per
    /// entry of its `entity_features`, read by the interceptor from the entity store.
    pub entities: &'a [entity::EntityValue],
    /// A guess at the median of the earlier amounts a median feature reads (the customer's
    /// previous one): a median within an amount or two of it takes one to three counting
    /// passes instead of a selection. Any value gives the same features; 0 when unknown.
    pub median_hint: i64,
}

impl<'a> CustomerHistory<'a> {
    /// A history with no events and no credit line.
    pub const EMPTY: CustomerHistory<'static> = CustomerHistory {
        events: (&[], &[]),
        credit_line: None,
        in_time_order: true,
        totals: None,
        months: None,
        entities: &[],
        median_hint: 0,
    };

    /// A history over events in arrival order (older part first), checking their order.
    pub fn new(
        events: (&'a [Event], &'a [Event]),
        credit_line: Option<CreditLine>,
    ) -> CustomerHistory<'a> {
        let mut times = events.0.iter().chain(events.1).map(|e| e.at);
        let in_time_order = match times.next() {
            None => true,
            Some(first) => times
                .try_fold(first, |prev, at| (at >= prev).then_some(at))
                .is_some(),
        };
        CustomerHistory {
            events,
            credit_line,
            in_time_order,
            totals: Some(RingTotals::of(events.0.iter().chain(events.1))),
            months: None,
            entities: &[],
            median_hint: 0,
        }
    }
}

/// The shard of a hash: bits 32 and up. The shard's own table indexes by the low bits and
/// tags each slot with the top seven, so the shard is picked by neither: taken from the top
/// bits, every entry of a shard would share some of its tag bits, and a look-up would compare
/// keys of entries it could have passed over by their tags alone.
#[inline]
pub(crate) fn shard_index(hash: u64, mask: u64) -> usize {
    ((hash >> 32) & mask) as usize
}

/// A customer id, held in the record itself when it is at most 24 bytes long (most ids: card
/// numbers, account numbers, short UUIDs), else on the heap. A decision's look-up compares it
/// with the id asked for, so an id held apart from its record was one more cache miss on the
/// path to every customer's history.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey(SmallVec<[u8; 24]>);

impl CustomerKey {
    fn new(id: &str) -> CustomerKey {
        CustomerKey(SmallVec::from_slice(id.as_bytes()))
    }

    /// Whether this is the id `id`.
    #[inline]
    fn is(&self, id: &str) -> bool {
        self.0.as_slice() == id.as_bytes()
    }
}

impl std::ops::Deref for CustomerKey {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a customer key is built from a str")
    }
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl CustomerRecord {
    fn new(key: &str) -> CustomerRecord {
        CustomerRecord {
            key: CustomerKey::new(key),
            ring: Ring::default(),
            credit_limit: 0,
            credit_granted_at: 0,
            last_event_at: i64::MIN,
            months: None,
            median_hint: 0,
            newer: NIL,
            older: NIL,
        }
    }

    /// Records what the gateway reported on the transaction with this hash, if held: its
    /// event's outcome and, once it has failed, its calendar month's failures when months are
    /// kept here and `month_of` (an instant's month in the rule set's zone) is given. Returns
    /// whether the transaction was held.
    pub fn set_outcome(
        &mut self,
        txn_hash: u64,
        outcome: Outcome,
        month_of: Option<impl FnOnce(EventTime) -> i32>,
    ) -> bool {
        let Some(reported) = self.ring.set_outcome(txn_hash, outcome) else {
            return false;
        };
        if reported.newly_failed
            && let (Some(month_of), Some(months)) = (month_of, self.months.as_mut())
        {
            months.fail(month_of(reported.at));
        }
        true
    }

    /// The engine's view of this record.
    #[inline]
    pub fn history(&self) -> CustomerHistory<'_> {
        debug_assert_eq!(
            self.ring.totals(),
            RingTotals::of(self.ring.iter()),
            "the ring's totals follow its events"
        );
        CustomerHistory {
            events: self.ring.as_slices(),
            credit_line: self.credit_line(),
            in_time_order: self.ring.in_time_order(),
            totals: Some(self.ring.totals()),
            months: self.months.as_ref(),
            entities: &[],
            median_hint: self.median_hint,
        }
    }

    /// The customer's credit line, when known.
    #[inline]
    pub fn credit_line(&self) -> Option<CreditLine> {
        Amount::from_minor(self.credit_limit)
            .filter(|a| a.minor() > 0)
            .map(|limit| CreditLine {
                limit,
                granted_at: self.credit_granted_at,
            })
    }

    /// Takes a reported credit line unless the one held was granted later: a line granted
    /// earlier than the one held is a late, out-of-order message. Returns whether it was taken.
    pub fn offer_credit_line(&mut self, line: CreditLine) -> bool {
        let newer = self
            .credit_line()
            .is_none_or(|held| line.granted_at >= held.granted_at);
        if newer {
            self.credit_limit = line.limit.minor();
            self.credit_granted_at = line.granted_at;
            self.last_event_at = self.last_event_at.max(line.granted_at);
        }
        newer
    }

    /// Records an event unless one with the same transaction hash is held. Returns whether it
    /// was recorded.
    pub fn record(&mut self, event: Event, capacity: usize) -> bool {
        if self.ring.find(event.txn_hash()).is_some() {
            return false;
        }
        self.record_new(event, capacity);
        true
    }

    /// Records an event the caller has already checked is not held.
    pub fn record_new(&mut self, event: Event, capacity: usize) {
        self.ring.push(event, capacity);
        self.last_event_at = self.last_event_at.max(event.at);
    }
}

const NIL: u32 = u32::MAX;

/// Customer and transaction ids (with the separator) up to this many bytes are hashed in one
/// piece from the stack by [`Store::txn_hash`]; longer ones, rare, piece by piece.
const TXN_HASH_INLINE: usize = 128;

/// The index of the first of `items` that `is` holds for, as `items.iter().position(is)`
/// answers, for the scans of every decision that nearly always find nothing (a retry among a
/// customer's events, a customer among an entity's): `maybe`, which `is` implies and which is
/// cheap, is tested on four items together, a branch for four instead of one each, and `is`
/// only in a group where `maybe` held for one.
#[inline]
pub(crate) fn position_by_fours<T>(
    items: &[T],
    maybe: impl Fn(&T) -> bool,
    is: impl Fn(&T) -> bool,
) -> Option<usize> {
    let mut chunks = items.chunks_exact(4);
    for (k, chunk) in chunks.by_ref().enumerate() {
        let any = maybe(&chunk[0]) | maybe(&chunk[1]) | maybe(&chunk[2]) | maybe(&chunk[3]);
        if any && let Some(i) = chunk.iter().position(&is) {
            return Some(4 * k + i);
        }
    }
    let done = items.len() - chunks.remainder().len();
    chunks.remainder().iter().position(is).map(|i| done + i)
}

/// Two random 64-bit keys, from the same OS randomness that seeds ahash.
fn random_keys() -> (u64, u64) {
    (
        ahash::RandomState::new().hash_one(0x9e37_79b9_u64),
        ahash::RandomState::new().hash_one(0x7f4a_7c15_u64),
    )
}

struct Shard {
    table: HashTable<u32>,
    slots: Vec<Option<CustomerRecord>>,
    free: Vec<u32>,
    /// Most recently active.
    newest: u32,
    /// Least recently active: evicted first.
    oldest: u32,
    len: usize,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            len: 0,
        }
    }

    fn record(&self, slot: u32) -> &CustomerRecord {
        self.slots[slot as usize]
            .as_ref()
            .expect("linked slots are occupied")
    }

    fn record_mut(&mut self, slot: u32) -> &mut CustomerRecord {
        self.slots[slot as usize]
            .as_mut()
            .expect("linked slots are occupied")
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older) = {
            let r = self.record(slot);
            (r.newer, r.older)
        };
        if newer == NIL {
            self.newest = older;
        } else {
            self.record_mut(newer).older = older;
        }
        if older == NIL {
            self.oldest = newer;
        } else {
            self.record_mut(older).newer = newer;
        }
    }

    fn link_newest(&mut self, slot: u32) {
        let previous_newest = self.newest;
        {
            let r = self.record_mut(slot);
            r.newer = NIL;
            r.older = previous_newest;
        }
        if previous_newest == NIL {
            self.oldest = slot;
        } else {
            self.record_mut(previous_newest).newer = slot;
        }
        self.newest = slot;
    }

    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&s| {
                slots[s as usize].as_ref().is_some_and(|r| r.key.is(key))
            })
            .copied()
    }

    /// Removes a record from table, list and slab; returns it.
    fn remove(&mut self, slot: u32, hash: u64) -> CustomerRecord {
        self.unlink(slot);
        if let Ok(entry) = self.table.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.free.push(slot);
        self.len -= 1;
        self.slots[slot as usize]
            .take()
            .expect("removed slots are occupied")
    }
}

/// The sharded customer store.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    per_shard_cap: usize,
    hasher: ahash::RandomState,
    txn_keys: (u64, u64),
    /// Hashes transactions in place of the keyed SipHash, for a store that lives one run
    /// ([`Store::for_one_run`]).
    run_hasher: Option<ahash::RandomState>,
    config: StoreConfig,
    customers: AtomicUsize,
    events: AtomicUsize,
    evictions: AtomicU64,
    idle_drops: AtomicU64,
    watermark: AtomicI64,
    entities: entity::EntityStore,
}

/// Entities (merchants, devices, IPs, channels) a store holds at most, by default.
pub const DEFAULT_MAX_ENTITIES: usize = 1_000_000;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards.len())
            .field("config", &self.config)
            .field("customers", &self.customers())
            .finish()
    }
}

impl Store {
    /// An empty store. The shard count is a power of two chosen so that shards hold a few
    /// hundred customers at the cap: enough shards that customers rarely contend, few enough
    /// that per-shard eviction stays close to global least-recently-active order.
    pub fn new(config: StoreConfig) -> Store {
        let max_customers = config.max_customers.max(1);
        let shard_count = (max_customers / 256)
            .clamp(1, 1024)
            .next_power_of_two()
            .min(1024);
        Store {
            shards: (0..shard_count).map(|_| Mutex::new(Shard::new())).collect(),
            shard_mask: shard_count as u64 - 1,
            per_shard_cap: max_customers.div_ceil(shard_count),
            hasher: ahash::RandomState::new(),
            txn_keys: random_keys(),
            run_hasher: None,
            config,
            customers: AtomicUsize::new(0),
            events: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            idle_drops: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            entities: entity::EntityStore::new(DEFAULT_MAX_ENTITIES),
        }
    }

    /// A store whose hashes come from `seed` instead of the OS: the same inputs then take the
    /// same paths, run after run, and fall in the same shards of customers and entities. For
    /// instruction-count benchmarks and replay's parts and passes, which must agree on shards;
    /// a server uses [`Store::new`].
    pub fn with_seed(config: StoreConfig, seed: u64) -> Store {
        let mut store = Store::new(config);
        store.hasher = ahash::RandomState::with_seeds(seed, seed ^ 1, seed ^ 2, seed ^ 3);
        store.txn_keys = (seed ^ 4, seed ^ 5);
        store.entities = store.entities.seeded(seed);
        store
    }

    /// [`Store::with_seed`] for a store that lives one run and is never persisted or shared
    /// (replay's): transactions and customers are hashed with a hash seeded from `seed`
    /// instead of [`Store::txn_hash`]'s keyed SipHash, which is kept stable across versions
    /// and replicas for persisted state and costs three times as much. Within a run the two
    /// tell transactions apart alike: both are 64-bit hashes with keys of the run.
    pub fn for_one_run(config: StoreConfig, seed: u64) -> Store {
        let mut store = Store::with_seed(config, seed);
        store.run_hasher = Some(ahash::RandomState::with_seeds(
            seed ^ 6,
            seed ^ 7,
            seed ^ 8,
            seed ^ 9,
        ));
        store
    }

    /// The per-merchant, device, IP and channel state `by:` windows read.
    pub fn entities(&self) -> &entity::EntityStore {
        &self.entities
    }

    /// Holds at most `max` entities (only before any is recorded).
    pub fn set_max_entities(&mut self, max: usize) {
        self.entities = self.entities.emptied_with_cap(max);
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    fn hash(&self, customer_id: &str) -> u64 {
        self.hasher.hash_one(customer_id)
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[shard_index(hash, self.shard_mask)]
    }

    /// The shard holding `customer_id`, of [`Store::shard_count`]. Two stores built with the
    /// same configuration and seed ([`Store::with_seed`]) agree on it, and a shard's customers
    /// (and its evictions) depend only on the transactions of its own customers: replay splits
    /// customers across threads by shard, so that each thread's store behaves as those shards
    /// of one store would.
    pub fn shard_of(&self, customer_id: &str) -> usize {
        shard_index(self.hash(customer_id), self.shard_mask)
    }

    /// A keyed hash of a transaction id, for duplicate detection and outcome reports.
    ///
    /// SipHash-1-3 with secret keys: nobody can craft an id that collides with another
    /// transaction, and the value is stable across versions, so persisted state keeps matching.
    /// A store of one run ([`Store::for_one_run`]) uses its own seeded hash instead.
    pub fn txn_hash(&self, customer_id: &str, transaction_id: &str) -> u64 {
        use std::hash::Hasher;
        if let Some(run) = &self.run_hasher {
            return run.hash_one((customer_id, transaction_id));
        }
        let sip = siphasher::sip::SipHasher13::new_with_keys(self.txn_keys.0, self.txn_keys.1);
        // SipHash reads a stream of bytes: the hash of the pieces written one after the other
        // is the hash of their concatenation. Hashed in one piece from the stack, the common
        // case skips the hasher's buffering of each piece's tail.
        let (customer, transaction) = (customer_id.as_bytes(), transaction_id.as_bytes());
        let len = customer.len() + 1 + transaction.len();
        let mut joined = [0u8; TXN_HASH_INLINE];
        if len <= TXN_HASH_INLINE {
            joined[..customer.len()].copy_from_slice(customer);
            joined[customer.len()] = 0xff;
            joined[customer.len() + 1..len].copy_from_slice(transaction);
            return sip.hash(&joined[..len]);
        }
        let mut h = sip;
        h.write(customer);
        h.write_u8(0xff);
        h.write(transaction);
        h.finish()
    }

    /// A keyed hash of a customer id, for the distinct customers an entity remembers: the
    /// transaction hash of the empty transaction id, so it is stable across restarts and the
    /// same on every replica of a fleet (which share the keys).
    pub fn customer_hash(&self, customer_id: &str) -> u64 {
        self.txn_hash(customer_id, "")
    }

    /// The keys of [`Store::txn_hash`], persisted with the state (never that of a store of
    /// one run, whose hashes they do not give).
    pub fn txn_keys(&self) -> (u64, u64) {
        debug_assert!(
            self.run_hasher.is_none(),
            "a store of one run is not persisted"
        );
        self.txn_keys
    }

    /// Uses these keys for transaction hashes (restoring persisted state). Only valid before
    /// any event is recorded.
    pub fn set_txn_keys(&mut self, keys: (u64, u64)) {
        self.txn_keys = keys;
    }

    /// Runs `f` on the customer's record under its shard lock, creating the record (and
    /// evicting the shard's least recently active customer when full) if it does not exist.
    /// `f` returns the result and the change in the number of events held.
    pub fn with_customer<R>(
        &self,
        customer_id: &str,
        f: impl FnOnce(&mut CustomerRecord, usize) -> R,
    ) -> R {
        let hash = self.hash(customer_id);
        let mut shard = self.shard(hash).lock();
        let slot = match shard.find(hash, customer_id) {
            Some(slot) => {
                if shard.newest != slot {
                    shard.unlink(slot);
                    shard.link_newest(slot);
                }
                slot
            }
            None => self.insert(&mut shard, hash, customer_id),
        };
        let record = shard.record_mut(slot);
        let before = record.ring.len();
        let result = f(record, self.config.ring_capacity);
        let after = record.ring.len();
        if after != before {
            self.events
                .fetch_add(after.wrapping_sub(before), Ordering::Relaxed);
        }
        result
    }

    /// Runs `f` on the customer's record if it exists, without creating it or changing its
    /// recency.
    pub fn with_existing<R>(
        &self,
        customer_id: &str,
        f: impl FnOnce(&mut CustomerRecord) -> R,
    ) -> Option<R> {
        let hash = self.hash(customer_id);
        let mut shard = self.shard(hash).lock();
        let slot = shard.find(hash, customer_id)?;
        Some(f(shard.record_mut(slot)))
    }

    fn insert(&self, shard: &mut Shard, hash: u64, customer_id: &str) -> u32 {
        if shard.len >= self.per_shard_cap && shard.oldest != NIL {
            let victim = shard.oldest;
            let victim_hash = self.hash(&shard.record(victim).key);
            let evicted = shard.remove(victim, victim_hash);
            self.customers.fetch_sub(1, Ordering::Relaxed);
            self.events.fetch_sub(evicted.ring.len(), Ordering::Relaxed);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let record = CustomerRecord::new(customer_id);
        let slot = match shard.free.pop() {
            Some(slot) => {
                shard.slots[slot as usize] = Some(record);
                slot
            }
            None => {
                if shard.slots.len() == shard.slots.capacity() {
                    // Grow by a quarter, not double: the slab is most of a shard's fixed cost.
                    let extra = (shard.slots.len() / 4)
                        .clamp(16, self.per_shard_cap.max(16))
                        .max(1);
                    shard.slots.reserve_exact(extra);
                }
                shard.slots.push(Some(record));
                u32::try_from(shard.slots.len() - 1)
                    .expect("a shard holds far fewer than 2^32 customers")
            }
        };
        let hasher = &self.hasher;
        let slots = &shard.slots;
        shard.table.insert_unique(hash, slot, |&s| {
            hasher.hash_one(
                &*slots[s as usize]
                    .as_ref()
                    .expect("indexed slots are occupied")
                    .key,
            )
        });
        shard.link_newest(slot);
        shard.len += 1;
        self.customers.fetch_add(1, Ordering::Relaxed);
        slot
    }

    /// Advances the event-time watermark (the latest event time seen), used to find idle
    /// customers.
    pub fn observe_event_time(&self, at: EventTime) {
        // Read first: an event no newer than the newest seen then leaves the cache line shared
        // between the cores deciding, where an atomic write would take it over every time.
        if at > self.watermark.load(Ordering::Relaxed) {
            self.watermark.fetch_max(at, Ordering::Relaxed);
        }
    }

    /// The latest event time seen, if any.
    pub fn watermark(&self) -> Option<EventTime> {
        let w = self.watermark.load(Ordering::Relaxed);
        (w != i64::MIN).then_some(w)
    }

    /// Drops the history of customers whose last event is older than `cutoff`: such history
    /// can no longer fall inside any window. A customer with a credit line keeps the record
    /// (limit and grant time) without events; one without is removed. Walks one shard at a
    /// time, so decisions on other shards never wait. Returns the customers removed.
    pub fn sweep_idle(&self, cutoff: EventTime) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let mut slot = shard.oldest;
            while slot != NIL {
                let (newer, idle, has_line, events) = {
                    let r = shard.record(slot);
                    (
                        r.newer,
                        r.last_event_at < cutoff,
                        r.credit_line().is_some(),
                        r.ring.len(),
                    )
                };
                if idle {
                    if has_line {
                        shard.record_mut(slot).ring.clear();
                    } else {
                        let hash = self.hash(&shard.record(slot).key);
                        shard.remove(slot, hash);
                        self.customers.fetch_sub(1, Ordering::Relaxed);
                        self.idle_drops.fetch_add(1, Ordering::Relaxed);
                        removed += 1;
                    }
                    self.events.fetch_sub(events, Ordering::Relaxed);
                }
                slot = newer;
            }
        }
        removed
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Calls `f` on every customer of shard `shard`, under that shard's lock.
    pub fn for_each_in_shard(&self, shard: usize, mut f: impl FnMut(&CustomerRecord)) {
        let shard = self.shards[shard].lock();
        for record in shard.slots.iter().flatten() {
            f(record);
        }
    }

    /// Copies out the customers of shard `shard` (under its lock, briefly), so that they can
    /// be examined at leisure without holding up decisions.
    pub fn copy_shard(&self, shard: usize) -> Vec<CustomerCopy> {
        let shard = self.shards[shard].lock();
        shard
            .slots
            .iter()
            .flatten()
            .map(|r| CustomerCopy {
                key: (*r.key).into(),
                events: r.ring.iter().copied().collect(),
                in_time_order: r.ring.in_time_order(),
                credit_line: r.credit_line(),
                months: r.months.clone(),
            })
            .collect()
    }

    /// Drops every customer (a failed restore must not leave half a state).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.lock() = Shard::new();
        }
        self.entities.clear();
        self.customers.store(0, Ordering::Relaxed);
        self.events.store(0, Ordering::Relaxed);
        self.watermark.store(i64::MIN, Ordering::Relaxed);
    }

    /// Customers held.
    pub fn customers(&self) -> usize {
        self.customers.load(Ordering::Relaxed)
    }

    /// Events held over all customers.
    pub fn events(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// Customers evicted by the cap since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Customers dropped for idleness since start.
    pub fn idle_drops(&self) -> u64 {
        self.idle_drops.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Action;
    use crate::txn::Amount;

    #[test]
    fn txn_hash_is_the_hash_of_the_pieces_written_in_turn() {
        use std::hash::Hasher;
        let store = Store::new(StoreConfig::default());
        let (k0, k1) = store.txn_keys();
        for (customer, id) in [
            ("", ""),
            ("c1", "t1"),
            ("customer-0001", "txn-2026-12-06-000000001"),
            ("客户", "交易-1"),
            (&"c".repeat(70)[..], &"t".repeat(57)[..]),
            (&"c".repeat(70)[..], &"t".repeat(58)[..]),
            (&"c".repeat(128)[..], &"t".repeat(128)[..]),
        ] {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
            h.write(customer.as_bytes());
            h.write_u8(0xff);
            h.write(id.as_bytes());
            assert_eq!(store.txn_hash(customer, id), h.finish(), "{customer} {id}");
        }
    }

    fn push(store: &Store, id: &str, at: EventTime) {
        store.with_customer(id, |r, cap| {
            r.ring.push(
                Event::new(
                    at,
                    at as u64,
                    Amount::from_minor(100).unwrap(),
                    None,
                    Action::Allow,
                ),
                cap,
            );
            r.last_event_at = r.last_event_at.max(at);
        });
    }

    #[test]
    fn a_store_of_one_run_hashes_transactions_apart_with_the_seeded_stores_shards() {
        let config = StoreConfig::default();
        let run = Store::for_one_run(config, 7);
        // Replay's parts and passes each build their own from one seed: they agree.
        let other_part = Store::for_one_run(config, 7);
        assert_eq!(run.txn_hash("c1", "t1"), other_part.txn_hash("c1", "t1"));
        assert_ne!(run.txn_hash("c1", "t1"), run.txn_hash("c1", "t2"));
        assert_ne!(run.txn_hash("c1", "t1"), run.txn_hash("c2", "t1"));
        assert_ne!(
            run.txn_hash("c1", "t1"),
            run.txn_hash("c1t", "1"),
            "where the customer id ends counts"
        );
        assert_eq!(run.customer_hash("c1"), run.txn_hash("c1", ""));
        let seeded = Store::with_seed(config, 7);
        assert_ne!(
            run.txn_hash("c1", "t1"),
            seeded.txn_hash("c1", "t1"),
            "not the persisted keyed hash"
        );
        for id in ["c1", "c2", "a customer"] {
            assert_eq!(run.shard_of(id), seeded.shard_of(id));
        }
    }

    #[test]
    fn evicts_the_least_recently_active_customer_at_the_cap() {
        let store = Store::new(StoreConfig {
            max_customers: 3,
            ring_capacity: 4,
        });
        push(&store, "a", 1);
        push(&store, "b", 2);
        push(&store, "c", 3);
        push(&store, "a", 4); // a is now the most recent; b the least
        push(&store, "d", 5);
        assert_eq!(store.customers(), 3);
        assert_eq!(store.evictions(), 1);
        assert!(store.with_existing("b", |_| ()).is_none());
        for id in ["a", "c", "d"] {
            assert!(store.with_existing(id, |_| ()).is_some(), "{id} kept");
        }
        assert_eq!(store.events(), 4);
    }

    #[test]
    fn ring_capacity_bounds_events_per_customer() {
        let store = Store::new(StoreConfig {
            max_customers: 10,
            ring_capacity: 4,
        });
        for t in 0..10 {
            push(&store, "a", t);
        }
        assert_eq!(store.events(), 4);
        let times: Vec<i64> = store
            .with_existing("a", |r| r.ring.iter().map(|e| e.at).collect())
            .unwrap();
        assert_eq!(times, vec![6, 7, 8, 9]);
    }

    #[test]
    fn idle_sweep_drops_history_but_keeps_credit_lines() {
        let store = Store::new(StoreConfig::default());
        push(&store, "old", 10);
        push(&store, "lined", 10);
        store.with_existing("lined", |r| {
            r.offer_credit_line(CreditLine {
                limit: Amount::from_minor(1).unwrap(),
                granted_at: 0,
            });
        });
        push(&store, "fresh", 100);
        assert_eq!(store.sweep_idle(50), 1);
        assert!(store.with_existing("old", |_| ()).is_none());
        assert_eq!(store.with_existing("lined", |r| r.ring.len()), Some(0));
        assert_eq!(store.with_existing("fresh", |r| r.ring.len()), Some(1));
        assert_eq!(store.customers(), 2);
        assert_eq!(store.events(), 1);
    }

    /// Ids held in the record (up to 24 bytes) and on the heap (longer) are found again, told
    /// apart by their last byte, evicted by the cap, and copied out as they came in.
    #[test]
    fn short_and_long_customer_ids_are_found_and_evicted_alike() {
        let store = Store::new(StoreConfig {
            max_customers: 8,
            ring_capacity: 4,
        });
        // About that many bytes, the last two lengths in two-byte characters.
        let ids: Vec<String> = [
            (1, "x"),
            (23, "x"),
            (24, "x"),
            (25, "x"),
            (24, "é"),
            (128, "é"),
        ]
        .iter()
        .flat_map(|&(len, fill)| {
            ["a", "b"].map(|last| format!("{}{last}", fill.repeat((len - 1) / fill.len())))
        })
        .collect();
        assert_eq!(ids[5].len(), 24);
        assert_eq!(ids[7].len(), 25);
        for (t, id) in ids.iter().enumerate() {
            push(&store, id, t as i64);
        }
        assert_eq!(store.customers(), 8);
        assert_eq!(store.evictions(), 4);
        for (t, id) in ids.iter().enumerate() {
            let held = store.with_existing(id, |r| (r.key.to_string(), r.last_event_at));
            if t < 4 {
                assert_eq!(held, None, "{id} evicted");
            } else {
                assert_eq!(held, Some((id.clone(), t as i64)), "{id} found");
            }
        }
        let copied: std::collections::BTreeSet<String> = (0..store.shard_count())
            .flat_map(|shard| store.copy_shard(shard))
            .map(|c| c.key.to_string())
            .collect();
        assert_eq!(copied, ids[4..].iter().cloned().collect());
    }

    #[test]
    fn many_customers_survive_slot_reuse() {
        let store = Store::new(StoreConfig {
            max_customers: 300,
            ring_capacity: 2,
        });
        for i in 0..5_000 {
            push(&store, &format!("c{i}"), i);
        }
        assert!(store.customers() <= 300 + store.shards.len());
        for i in 4_900..5_000 {
            assert!(store.with_existing(&format!("c{i}"), |_| ()).is_some());
        }
    }
}

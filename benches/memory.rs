//! Resident memory per customer: fills the store (the server's own `Store`) to its cap with
//! full rings, then feeds as many customers again, and reads the process's resident set size
//! from /proc after each phase.
//!
//!     cargo bench --bench memory -- [--customers 1000000] [--ring 32]
//!
//! Prints one JSON object: the cap, the ring capacity, RSS before, after filling and after
//! over-feeding, bytes per customer, and the evictions counted by the store (those the
//! `tripwire_customer_evictions_total` metric reports).
//!
//!     cargo bench --bench memory -- --entities 200000 [--hours 24] [--distinct 8]
//!
//! measures entities instead (merchants, for `by:` windows): each with `--hours` active hours
//! and `--distinct` customers, and prints the bytes per entity.

use std::time::Instant;

use tripwire::rules::Action;
use tripwire::state::{Event, Store, StoreConfig};
use tripwire::txn::{Amount, GeoPoint};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn feed(store: &Store, from: usize, to: usize, ring: usize, months: bool) {
    for c in from..to {
        let id = format!("customer-{c:09}");
        store.with_customer(&id, |record, capacity| {
            for i in 0..ring as i64 {
                let event = Event::new(
                    1_772_359_200_000_000 + i * 60_000_000,
                    store.txn_hash(&id, &format!("t{i}")),
                    Amount::from_minor(10_000 + i).unwrap(),
                    (i % 2 == 0).then_some(GeoPoint {
                        lat: 31.2,
                        lon: 121.4,
                    }),
                    Action::Allow,
                );
                record.record(event, capacity);
                if months {
                    record
                        .months
                        .get_or_insert_with(Default::default)
                        .add(2026 * 12 + 2, event.amount_minor());
                }
            }
        });
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let entities = arg("--entities", 0);
    if entities > 0 {
        return entity_memory(entities, arg("--hours", 24), arg("--distinct", 8));
    }
    let customers = arg("--customers", 1_000_000);
    let ring = arg("--ring", 32);
    // With --months, every customer also keeps calendar-month buckets, as with rules that read
    // monthly trends (the shipped rules do).
    let months = std::env::args().any(|a| a == "--months");
    let before = rss_bytes();
    let store = Store::new(StoreConfig {
        max_customers: customers,
        ring_capacity: ring,
    });
    let started = Instant::now();
    feed(&store, 0, customers, ring, months);
    let filled = rss_bytes();
    let fill_seconds = started.elapsed().as_secs_f64();
    feed(&store, customers, 2 * customers, ring, months);
    let overfed = rss_bytes();
    let held = store.customers();
    println!(
        "{{\"cap\":{customers},\"ring\":{ring},\"months\":{months},\"customers_held\":{held},\"events_held\":{},\"evictions\":{},\"rss_before\":{before},\"rss_filled\":{filled},\"rss_overfed\":{overfed},\"bytes_per_customer_filled\":{:.0},\"bytes_per_customer_overfed\":{:.0},\"fill_seconds\":{fill_seconds:.1}}}",
        store.events(),
        store.evictions(),
        (filled - before) as f64 / held as f64,
        (overfed - before) as f64 / held as f64,
    );
}

/// RSS per entity: `n` merchants, each with `hours` active hours and `distinct` customers.
fn entity_memory(n: usize, hours: usize, distinct: usize) {
    use tripwire::state::entity::EntityKind;
    let store = Store::new(StoreConfig::default());
    let before = rss_bytes();
    let t0 = 1_772_359_200_000_000i64;
    for e in 0..n {
        let key = format!("term{e:08}");
        store
            .entities()
            .with_entity(EntityKind::Merchant, &key, i64::MIN, |r| {
                for h in 0..hours as i64 {
                    r.record(
                        t0 + h * 3_600_000_000,
                        1_000,
                        (h as u64) % distinct.max(1) as u64,
                    );
                }
            });
    }
    let after = rss_bytes();
    println!(
        "{{\"entities\":{n},\"hours\":{hours},\"distinct\":{distinct},\"rss_before\":{before},\"rss_after\":{after},\"bytes_per_entity\":{:.0},\"bytes_counted\":{:.0}}}",
        (after - before) as f64 / n as f64,
        store.entities().bytes() as f64 / n as f64,
    );
}

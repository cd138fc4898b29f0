//! A fixed workload of in-process decisions for counting instructions under callgrind:
//! `benches/scripts/instructions.py` runs it with collection switched on only inside
//! [`measured`], compares the count per decision with `benches/instructions-baseline.json`, and
//! fails on a regression over 5%. Instruction counts, unlike times, repeat exactly on a busy
//! machine.
//!
//! The store is seeded, so every run hashes, probes and evicts the same way.
//!
//! Two workloads: `--count` decides transactions that name no merchant; `--count
//! --busy-merchant` decides the same transactions at a merchant that has been active every hour
//! of the 35 days the shipped rules' merchant window reaches back (`compromised_merchant`: 28
//! days maturing after 7), what a decision at a large merchant or a busy terminal meets.

use std::hint::black_box;

use tripwire::interceptor::Interceptor;
use tripwire::live_rules::LiveRules;
use tripwire::state::{Store, StoreConfig};

const RULES: &[u8] = include_bytes!("../rules.yaml");
/// Decisions counted.
pub const DECISIONS: usize = 2_000;
const CUSTOMERS: usize = 100;

/// The first counted workload's first transaction, in seconds since the epoch.
const START: i64 = 1_772_359_200;
/// The busy merchant's history: one transaction an hour for this many hours before `START`.
const BUSY_HOURS: i64 = 35 * 24;

fn body(i: usize, merchant: Option<&str>) -> String {
    let at = START + (i / CUSTOMERS) as i64 * 180;
    let at = jiff::Timestamp::from_second(at).unwrap();
    let merchant = merchant.map_or(String::new(), |m| format!(r#","merchant_id":"{m}""#));
    format!(
        r#"{{"transaction_id":"t{i:08}","customer_id":"c{:04}","timestamp":"{at}","amount":"{}.{:02}","currency":"CNY","lat":31.2304,"lon":121.4737,"channel":"app"{merchant}}}"#,
        i % CUSTOMERS,
        10 + (i * 7919) % 900,
        i % 100
    )
}

/// The counted region: `DECISIONS` whole in-process decisions.
#[inline(never)]
fn measured(interceptor: &Interceptor, bodies: &[String], out: &mut Vec<u8>) {
    for b in bodies {
        out.clear();
        black_box(interceptor.decide(b.as_bytes(), out).unwrap().action);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--count") {
        // Run by `cargo bench` without the script: nothing to time here.
        return;
    }
    let interceptor = Interceptor::new(
        Store::with_seed(
            StoreConfig {
                max_customers: 10_000,
                ring_capacity: 64,
            },
            42,
        ),
        LiveRules::new(RULES, "rules.yaml").unwrap(),
    );
    let mut out = Vec::with_capacity(1024);
    let merchant = std::env::args()
        .any(|a| a == "--busy-merchant")
        .then_some("m-busy");
    if let Some(merchant) = merchant {
        // Other customers' transactions, one an hour, fill the merchant's hours.
        for h in 0..BUSY_HOURS {
            let at = jiff::Timestamp::from_second(START - (BUSY_HOURS - h) * 3600).unwrap();
            let b = format!(
                r#"{{"transaction_id":"w{h:08}","customer_id":"w{h:04}","timestamp":"{at}","amount":"10.00","currency":"CNY","merchant_id":"{merchant}"}}"#
            );
            out.clear();
            interceptor.decide(b.as_bytes(), &mut out).unwrap();
        }
    }
    // Warm: every customer gets a full ring first.
    let warm: Vec<String> = (0..CUSTOMERS * 64).map(|i| body(i, merchant)).collect();
    for b in &warm {
        out.clear();
        interceptor.decide(b.as_bytes(), &mut out).unwrap();
    }
    let bodies: Vec<String> = (CUSTOMERS * 64..CUSTOMERS * 64 + DECISIONS)
        .map(|i| body(i, merchant))
        .collect();
    measured(&interceptor, &bodies, &mut out);
    println!("{DECISIONS}");
}

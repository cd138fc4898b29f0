//! In-process cost of a decision, against two baselines measured in the same run:
//! one ahash map lookup, and a serde_json parse of a decide request into a typed struct.
//!
//!     cargo bench --bench decide
//!
//! Ratios between these lines are what BENCHMARKS.md reports; absolute times on a shared
//! machine are not.
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

mod support;
use serde::Deserialize;
use tripwire::engine;
use tripwire::interceptor::Interceptor;
use tripwire::live_rules::LiveRules;
use tripwire::rules::Action;
use tripwire::state::{CustomerHistory, Event, Store, StoreConfig};
use tripwire::txn::{self, Amount, GeoPoint};

const RULES: &[u8] = include_bytes!("../rules.yaml");
const CUSTOMERS: usize = 1_000;
const RING: usize = 64;
/// Distinct timestamps per customer timeline (three minutes apart: about 136 days). A
/// customer's step is `RING + n / CUSTOMERS` after `n` iterations; criterion's warm-up and
/// measurement run four to five million of them, past the 4,096 steps this once held, and a timeline
/// that wrapped round sent every customer's next transaction 8.5 days into the past (rings out
/// of time order, the general scan) for the rest of the run.
const TIMES: usize = 65_536;
/// 2026-03-01T10:00:00Z in microseconds.
const T0: i64 = 1_772_359_200_000_000;

#[derive(Deserialize)]
#[allow(dead_code)]
struct TypedRequest<'a> {
    transaction_id: &'a str,
    customer_id: &'a str,
    timestamp: &'a str,
    amount: &'a str,
    currency: Option<&'a str>,
    lat: Option<f64>,
    lon: Option<f64>,
}

/// A decide body whose transaction id, customer id and timestamp are patched in place, so
/// that building the next request costs a few copies, not a format.
struct BodyTemplate {
    bytes: Vec<u8>,
    txn_digits: std::ops::Range<usize>,
    customer_digits: std::ops::Range<usize>,
    timestamp: std::ops::Range<usize>,
    amount: std::ops::Range<usize>,
    /// RFC 3339 times three minutes apart from 2026-03-01T10:00:00+08:00, all 25 bytes long.
    times: Vec<[u8; 25]>,
}

impl BodyTemplate {
    fn new() -> BodyTemplate {
        let text = r#"{"transaction_id":"t000000000000","customer_id":"c000000","timestamp":"2026-03-01T18:00:00+08:00","amount":"120.50","currency":"CNY","lat":31.2304,"lon":121.4737,"channel":"app","merchant_id":"m-20931"}"#;
        let t = text.find("t000000000000").unwrap() + 1;
        let c = text.find("c000000").unwrap() + 1;
        let ts = text.find("2026-03-01T18:00:00+08:00").unwrap();
        let amount = text.find("120.50").unwrap();
        let start: jiff::Timestamp = "2026-03-01T10:00:00+08:00".parse().unwrap();
        let zone = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
        let times = (0..TIMES)
            .map(|i| {
                let at = start + jiff::SignedDuration::from_secs(180 * i as i64);
                let text = at
                    .to_zoned_datetime(zone.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string();
                text.as_bytes().try_into().expect("25-byte timestamps")
            })
            .collect();
        BodyTemplate {
            bytes: text.as_bytes().to_vec(),
            txn_digits: t..t + 12,
            customer_digits: c..c + 6,
            timestamp: ts..ts + 25,
            amount: amount..amount + 6,
            times,
        }
    }

    /// Transaction `txn` of `customer`, stamped at step `step` of the customer's own timeline,
    /// of one of seven amounts in turn (100.00 to 394.00, as in [`full_history`]): a customer's
    /// ten transactions in half an hour hold no amount three times, so the shipped rules'
    /// equal-amount rule does not deny every decision, as one fixed amount made it do.
    fn set(&mut self, txn: u64, customer: usize, step: usize) -> &[u8] {
        let minor = 10_000 + (step % 7) as u64 * 4_900;
        let amount = self.amount.clone();
        write_digits(&mut self.bytes[amount.start..amount.start + 3], minor / 100);
        write_digits(&mut self.bytes[amount.end - 2..amount.end], minor % 100);
        write_digits(&mut self.bytes[self.txn_digits.clone()], txn);
        write_digits(
            &mut self.bytes[self.customer_digits.clone()],
            customer as u64,
        );
        self.bytes[self.timestamp.clone()].copy_from_slice(&self.times[step % TIMES]);
        &self.bytes
    }
}

fn write_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn full_history() -> Vec<Event> {
    (0..RING as i64)
        .map(|i| {
            Event::new(
                T0 - (RING as i64 - i) * 45_000_000,
                i as u64,
                Amount::from_minor(10_000 + (i % 7) * 4_900).unwrap(),
                (i % 3 == 0).then_some(GeoPoint {
                    lat: 31.2 + i as f64 * 0.001,
                    lon: 121.47,
                }),
                Action::Allow,
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");

    let keys: Vec<String> = (0..CUSTOMERS).map(|i| format!("c{i:06}")).collect();
    let map: HashMap<String, u64, ahash::RandomState> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u64))
        .collect();
    let mut i = 0usize;
    group.bench_function("baseline_ahash_map_lookup", |b| {
        b.iter(|| {
            i = (i + 1) % CUSTOMERS;
            black_box(map.get(black_box(keys[i].as_str())))
        })
    });

    let mut template = BodyTemplate::new();
    let body = template.set(1, 1, 0).to_vec();
    group.bench_function("baseline_json_parse_request", |b| {
        b.iter(|| {
            let r: TypedRequest<'_> = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(r.amount.len())
        })
    });

    let live = LiveRules::new(RULES, "rules.yaml").unwrap();
    let rules = live.load_full();
    let events = full_history();
    let history = CustomerHistory::new((&events, &[]), None);
    let txn = txn::parse_decide(&body).unwrap();
    group.bench_function("evaluate_shipped_rules_full_ring", |b| {
        b.iter(|| {
            black_box(engine::evaluate(&rules.set, black_box(&history), black_box(&txn)).action)
        })
    });

    let interceptor = Interceptor::new(
        Store::new(StoreConfig {
            max_customers: CUSTOMERS * 2,
            ring_capacity: RING,
        }),
        LiveRules::new(RULES, "rules.yaml").unwrap(),
    );
    let mut out = Vec::with_capacity(1024);
    // Fill every customer's ring so the measured decisions scan full histories. Each
    // customer's transactions are three minutes apart, so most decisions allow and some (at
    // night, local time) review: the mix a gateway sees.
    let mut seq = 0u64;
    for step in 0..RING {
        for customer in 0..CUSTOMERS {
            seq += 1;
            out.clear();
            interceptor
                .decide(template.set(seq, customer, step), &mut out)
                .unwrap();
        }
    }
    let mut n = 0usize;
    group.bench_function("decide_in_process_full_ring", |b| {
        b.iter(|| {
            seq += 1;
            n += 1;
            let (customer, step) = (n % CUSTOMERS, RING + n / CUSTOMERS);
            out.clear();
            let summary = interceptor
                .decide(template.set(seq, customer, step), &mut out)
                .unwrap();
            black_box(summary.action)
        })
    });
    // What the measured decisions answered: a day of the same timelines (480 steps) for a
    // tenth of the customers, after the measurement.
    let mut mix = [0usize; 3];
    for day_step in 0..480 {
        for customer in (0..CUSTOMERS).step_by(10) {
            seq += 1;
            out.clear();
            let step = RING + n / CUSTOMERS + 1 + day_step;
            let summary = interceptor
                .decide(template.set(seq, customer, step), &mut out)
                .unwrap();
            mix[match summary.action {
                Action::Review => 1,
                Action::Deny => 2,
                _ => 0,
            }] += 1;
        }
    }
    eprintln!(
        "decide_in_process_full_ring answers over a day: {} allow, {} review, {} deny",
        mix[0], mix[1], mix[2]
    );

    // The worst case: every decision denies with two reasons to render (all of a customer's
    // transactions at one instant and one amount).
    let burst = Interceptor::new(
        Store::new(StoreConfig {
            max_customers: CUSTOMERS * 2,
            ring_capacity: RING,
        }),
        LiveRules::new(RULES, "rules.yaml").unwrap(),
    );
    for _ in 0..RING {
        for customer in 0..CUSTOMERS {
            seq += 1;
            out.clear();
            burst
                .decide(template.set(seq, customer, 0), &mut out)
                .unwrap();
        }
    }
    let mut customer = 0usize;
    group.bench_function("decide_in_process_deny_with_reasons", |b| {
        b.iter(|| {
            seq += 1;
            customer = (customer + 1) % CUSTOMERS;
            out.clear();
            let summary = burst
                .decide(template.set(seq, customer, 0), &mut out)
                .unwrap();
            black_box(summary.action)
        })
    });
    group.finish();
}

/// Fills `store` with `customers` customers of `RING` events each, straight through the store
/// (deciding 64 million transactions one by one would take minutes).
fn fill(store: &Store, customers: usize) {
    for c in 0..customers {
        let id = format!("c{c:06}");
        store.with_customer(&id, |record, capacity| {
            for (i, event) in full_history().into_iter().enumerate() {
                let event = event.with_txn_hash(store.txn_hash(&id, &format!("fill-{i}")));
                record.record(event, capacity);
            }
        });
    }
}

/// The same decision with 1,000 customers held and with 1,000,000: what cache misses cost.
fn scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    let mut template = BodyTemplate::new();
    let mut out = Vec::with_capacity(1024);
    let mut seq = 10_000_000u64;
    for customers in [1_000usize, 1_000_000] {
        let interceptor = Interceptor::new(
            Store::new(StoreConfig {
                max_customers: customers * 2,
                ring_capacity: RING,
            }),
            LiveRules::new(RULES, "rules.yaml").unwrap(),
        );
        fill(interceptor.store(), customers);
        let mut n = 0usize;
        // Customers are visited in a scrambled order so consecutive decisions share no lines.
        group.bench_function(format!("decide_{customers}_customers"), |b| {
            b.iter(|| {
                seq += 1;
                n += 1;
                let customer = n.wrapping_mul(2_654_435_761) % customers;
                out.clear();
                let summary = interceptor
                    .decide(template.set(seq, customer, RING + n / customers), &mut out)
                    .unwrap();
                black_box(summary.action)
            })
        });
    }
    group.finish();
}

/// Evaluation of 10 and of 50 generated rules against the same full history.
fn rule_count(c: &mut Criterion) {
    let mut group = c.benchmark_group("rule_count");
    let events = full_history();
    let history = CustomerHistory::new((&events, &[]), None);
    let body = BodyTemplate::new().set(1, 1, 0).to_vec();
    let txn = txn::parse_decide(&body).unwrap();
    for n in [10usize, 50] {
        let set = tripwire::rules::load_bytes(support::generated_rules(n).as_bytes()).unwrap();
        group.bench_function(format!("evaluate_{n}_rules"), |b| {
            b.iter(|| {
                black_box(engine::evaluate(&set, black_box(&history), black_box(&txn)).action)
            })
        });
    }
    group.finish();
}

/// The shipped rules (velocity and friends, plus in-loan tags and the scorecard) against the
/// basic interception rules alone (the shipped file up to its customer-operations section),
/// over the same full ring and 13 months of buckets.
fn in_loan(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_loan");
    let text = std::str::from_utf8(RULES).unwrap();
    let basic = text
        .split("  # ---- Customer operations")
        .next()
        .unwrap()
        .to_string();
    let events = full_history();
    let mut months = tripwire::state::months::MonthBuckets::default();
    for m in 0..13 {
        for k in 0..(5 + m) {
            months.add(2026 * 12 + 2 - m, 10_000 + i64::from(k) * 100);
        }
    }
    let mut history = CustomerHistory::new((&events, &[]), None);
    history.months = Some(&months);
    let body = BodyTemplate::new().set(1, 1, 0).to_vec();
    let txn = txn::parse_decide(&body).unwrap();
    for (name, yaml) in [
        ("basic_rules", basic.as_str()),
        ("full_rules_and_scorecard", text),
    ] {
        let set = tripwire::rules::load_bytes(yaml.as_bytes()).unwrap();
        group.bench_function(format!("evaluate_{name}"), |b| {
            b.iter(|| {
                black_box(engine::evaluate(&set, black_box(&history), black_box(&txn)).action)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, scale, rule_count, in_loan);
criterion_main!(benches);

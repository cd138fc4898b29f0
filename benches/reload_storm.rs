//! Decision latency while rules are being reloaded as fast as possible, against the same
//! decisions without reloads, alternating A B A B in one process.
//!
//!     cargo bench --bench reload_storm
//!
//! One thread decides for a fixed number of transactions and records each decision's latency
//! in an HdrHistogram; during the "storm" rounds another thread installs rule sets back to back,
//! alternating the shipped rules and a variant, each a complete
//! parse → validate → compile → ArcSwap store. Prints p50/p99/p99.9 per round and
//! the median of the per-pair p99 ratios.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use support::median;
use tripwire::interceptor::Interceptor;
use tripwire::live_rules::LiveRules;
use tripwire::state::{Store, StoreConfig};

const ROUNDS: usize = 5;
const DECISIONS: usize = 200_000;
const CUSTOMERS: usize = 10_000;

fn body(i: usize) -> String {
    format!(
        r#"{{"transaction_id":"t{i}","customer_id":"c{}","timestamp":"2026-03-0{}T{:02}:{:02}:00+08:00","amount":"{}.00","lat":31.23,"lon":121.47}}"#,
        i % CUSTOMERS,
        1 + i / (CUSTOMERS * 480) % 9,
        (i / CUSTOMERS / 20) % 24,
        (i / CUSTOMERS) % 20 * 3,
        10 + i % 500
    )
}

/// How rules are reloaded during a round.
#[derive(Clone, Copy, PartialEq)]
enum Storm {
    /// No reloads.
    Calm,
    /// One reload every 10 ms (100 a second): an operator's script gone wild.
    Paced,
    /// Reloads back to back on the other core: the worst case.
    BackToBack,
}

fn round(storm: Storm, round: usize) -> Histogram<u64> {
    let shipped = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml")).unwrap();
    let variant = String::from_utf8(shipped.clone())
        .unwrap()
        .replace("at_least: 5 }", "at_least: 6 }");
    let interceptor = Arc::new(Interceptor::new(
        Store::new(StoreConfig {
            max_customers: CUSTOMERS * 2,
            ring_capacity: 64,
        }),
        LiveRules::new(&shipped, "rules.yaml").unwrap(),
    ));
    let bodies: Vec<String> = (0..DECISIONS)
        .map(|i| body(i + round * DECISIONS))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reloads = Arc::new(AtomicU64::new(0));
    let reloader = (storm != Storm::Calm).then(|| {
        let (interceptor, stop, reloads) = (
            Arc::clone(&interceptor),
            Arc::clone(&stop),
            Arc::clone(&reloads),
        );
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let text: &[u8] = if i.is_multiple_of(2) {
                    variant.as_bytes()
                } else {
                    &shipped
                };
                interceptor.rules().install(text, "storm").unwrap();
                i += 1;
                if storm == Storm::Paced {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            reloads.store(i, Ordering::Relaxed);
        })
    });
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut out = Vec::with_capacity(1024);
    for b in &bodies {
        out.clear();
        let started = Instant::now();
        interceptor.decide(b.as_bytes(), &mut out).unwrap();
        histogram
            .record(started.elapsed().as_nanos() as u64)
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(handle) = reloader {
        handle.join().unwrap();
    }
    println!(
        "{:>12} round {round}: p50 {:>6} ns  p99 {:>6} ns  p99.9 {:>7} ns  max {:>8} ns  reloads {}",
        match storm {
            Storm::Calm => "calm",
            Storm::Paced => "paced 100/s",
            Storm::BackToBack => "back-to-back",
        },
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        reloads.load(Ordering::Relaxed)
    );
    histogram
}

fn main() {
    // `cargo test --benches` runs bench targets with --bench absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = support::generated_rules(1);
    let mut ratios: [[Vec<f64>; 3]; 2] = Default::default();
    for r in 0..ROUNDS {
        let calm = round(Storm::Calm, r);
        for (k, storm) in [Storm::Paced, Storm::BackToBack].into_iter().enumerate() {
            let stormy = round(storm, r);
            for (q, quantile) in [0.5, 0.99, 0.999].into_iter().enumerate() {
                ratios[k][q].push(
                    stormy.value_at_quantile(quantile) as f64
                        / calm.value_at_quantile(quantile) as f64,
                );
            }
        }
    }
    for (k, name) in ["paced 100/s", "back-to-back"].into_iter().enumerate() {
        let [p50, p99, p999] = ratios[k].clone();
        println!(
            "{name}: median of per-pair ratios against calm over {ROUNDS} rounds: p50 {:.2}x  p99 {:.2}x  p99.9 {:.2}x",
            median(p50),
            median(p99),
            median(p999)
        );
    }
}

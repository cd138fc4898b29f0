//! A seeded generator of realistic credit-line histories with labelled, injected fraud, for
//! tests and benches of replay (`tripwire gen`).
//!
//! Ordinary customers have a home city, a credit line granted long before, a daily rhythm
//! (08:00–22:00 local, at most a few transactions a day, at least an hour apart) and amounts with
//! cents, so that the shipped interception rules never fire on them. Fraud is injected on
//! dedicated customers, one pattern each, so that what the rules should catch is known exactly
//! and returned in the [`Manifest`]:
//!
//! - a night burst: five transactions two minutes apart from 02:00 local;
//! - impossible travel: a purchase at home, then one in another city 30 minutes later;
//! - an equal-amount run: three transactions of the same amount five minutes apart;
//! - a full-limit drawdown ten minutes after the line is granted;
//! - sensitive-amount probing: 99.00 then 499.00 twenty minutes apart.

use std::io::Write;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::txn::{Amount, EventTime};

/// Generator settings.
#[derive(Clone, Copy, Debug)]
pub struct GenConfig {
    /// Ordinary customers.
    pub customers: usize,
    /// Days of history.
    pub days: u32,
    /// Seed: the same seed gives the same history.
    pub seed: u64,
    /// Fraudsters per pattern (injected on their own customers).
    pub per_pattern: usize,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header.
    Csv,
    /// One JSON object a line.
    Jsonl,
}

/// What was generated, and what the shipped interception rules must therefore catch.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Manifest {
    /// Rows written.
    pub transactions: u64,
    /// Rows labelled fraud.
    pub fraud_transactions: u64,
    /// Night bursts (five transactions each: five `night_window` hits, one `velocity_burst`).
    pub night_bursts: u64,
    /// Impossible journeys (one `impossible_travel` hit each).
    pub impossible_travel: u64,
    /// Equal-amount runs (one `repeated_equal_amount` hit each).
    pub equal_amount_runs: u64,
    /// Full-limit drawdowns after a grant (one `full_limit_after_grant` hit each).
    pub full_limit_after_grant: u64,
    /// Sensitive-amount probes (one `sensitive_amounts` hit each).
    pub sensitive_probes: u64,
}

/// 2026-03-01T00:00:00+08:00 in microseconds: the first day of generated history.
pub const START: EventTime = 1_772_294_400_000_000;
const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Local time is UTC+8 (the shipped rules' Asia/Shanghai, which has no daylight saving).
const LOCAL: i64 = 8 * HOUR;

const CITIES: [(f64, f64); 8] = [
    (31.2304, 121.4737), // Shanghai
    (39.9042, 116.4074), // Beijing
    (23.1291, 113.2644), // Guangzhou
    (22.5431, 114.0579), // Shenzhen
    (30.5728, 104.0668), // Chengdu
    (34.3416, 108.9398), // Xi'an
    (45.8038, 126.5350), // Harbin
    (43.8256, 87.6168),  // Urumqi
];

struct Out {
    at: EventTime,
    transaction_id: String,
    customer_id: String,
    amount: i64,
    geo: (f64, f64),
    credit: Option<(i64, EventTime)>,
    outcome: &'static str,
    fraud: bool,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    transaction_id: &'a str,
    customer_id: &'a str,
    timestamp: String,
    amount: String,
    currency: &'a str,
    lat: f64,
    lon: f64,
    credit_limit: Option<String>,
    credit_granted_at: Option<String>,
    outcome: &'a str,
    is_fraud: u8,
    #[serde(skip_serializing_if = "str::is_empty")]
    pattern: &'a str,
}

/// The injected pattern a fraud row belongs to (its customer is `f-PATTERN-NNNNN`); empty for
/// legitimate rows. Written as the `pattern` column, for `replay --group-by pattern`.
fn pattern_of(r: &Out) -> &str {
    if !r.fraud {
        return "";
    }
    r.customer_id
        .strip_prefix("f-")
        .and_then(|rest| rest.rsplit_once('-'))
        .map_or("", |(pattern, _)| pattern)
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// An amount with cents (never one of the round sensitive amounts), 20.01 to 2,000.99.
fn amount(rng: &mut ChaCha8Rng) -> i64 {
    let units = 20 + below(rng, 1_981) as i64;
    let cents = 1 + below(rng, 99) as i64;
    units * 100 + cents
}

fn stamp(at: EventTime) -> String {
    let local = at + LOCAL;
    match jiff::Timestamp::from_microsecond(local) {
        Ok(ts) => format!("{}+08:00", ts.strftime("%Y-%m-%dT%H:%M:%S")),
        Err(_) => at.to_string(),
    }
}

/// Writes a history; returns what it holds.
pub fn generate(
    config: &GenConfig,
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<Manifest> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut rows: Vec<Out> = Vec::new();
    let mut next_id = 0u64;
    let mut id = || {
        next_id += 1;
        format!("t{next_id:09}")
    };
    let mut m = Manifest::default();

    for c in 0..config.customers {
        let customer = format!("c{c:07}");
        let home = CITIES[below(&mut rng, CITIES.len() as u64) as usize];
        let limit = (5_000 + below(&mut rng, 45_001) as i64) * 100;
        let granted = START - 100 * DAY;
        let per_day = 1 + below(&mut rng, 3);
        let mut first = true;
        for day in 0..i64::from(config.days) {
            // 0 to per_day transactions, at distinct hours between 08:00 and 21:59 local.
            let n = below(&mut rng, per_day + 1);
            let mut hours: Vec<i64> = Vec::new();
            while (hours.len() as u64) < n {
                let h = 8 + below(&mut rng, 14) as i64;
                if hours.iter().all(|&x| (x - h).abs() >= 2) {
                    hours.push(h);
                }
            }
            hours.sort_unstable();
            for h in hours {
                let at = START + day * DAY + h * HOUR + below(&mut rng, 59) as i64 * MINUTE;
                let jitter =
                    |rng: &mut ChaCha8Rng| (below(rng, 2_001) as f64 - 1_000.0) / 100_000.0;
                rows.push(Out {
                    at,
                    transaction_id: id(),
                    customer_id: customer.clone(),
                    amount: amount(&mut rng),
                    geo: (home.0 + jitter(&mut rng), home.1 + jitter(&mut rng)),
                    credit: first.then_some((limit, granted)),
                    outcome: if below(&mut rng, 100) < 3 {
                        "failed"
                    } else {
                        "settled"
                    },
                    fraud: false,
                });
                first = false;
            }
        }
    }

    let days = i64::from(config.days.max(1));
    for f in 0..config.per_pattern {
        let day = |rng: &mut ChaCha8Rng| START + below(rng, days as u64) as i64 * DAY;
        let home = CITIES[f % CITIES.len()];
        let mut push = |rows: &mut Vec<Out>,
                        rng: &mut ChaCha8Rng,
                        customer: &str,
                        at,
                        amount,
                        geo,
                        credit,
                        fraud| {
            let _ = rng;
            rows.push(Out {
                at,
                transaction_id: id(),
                customer_id: customer.to_string(),
                amount,
                geo,
                credit,
                outcome: "settled",
                fraud,
            });
        };

        // Night burst: five, two minutes apart, from 02:00 local.
        let customer = format!("f-night-{f:05}");
        let base = day(&mut rng) + 2 * HOUR;
        for i in 0..5 {
            let a = amount(&mut rng) + i;
            push(
                &mut rows,
                &mut rng,
                &customer,
                base + i * 2 * MINUTE,
                a,
                home,
                None,
                true,
            );
        }
        m.night_bursts += 1;

        // Impossible travel: home at noon, another city half an hour later.
        let customer = format!("f-travel-{f:05}");
        let base = day(&mut rng) + 12 * HOUR;
        let away = CITIES[(f + 4) % CITIES.len()];
        let a = amount(&mut rng);
        push(&mut rows, &mut rng, &customer, base, a, home, None, false);
        let a = amount(&mut rng);
        push(
            &mut rows,
            &mut rng,
            &customer,
            base + 30 * MINUTE,
            a,
            away,
            None,
            true,
        );
        m.impossible_travel += 1;

        // Equal-amount run: three of the same amount, five minutes apart.
        let customer = format!("f-equal-{f:05}");
        let base = day(&mut rng) + 14 * HOUR;
        let a = amount(&mut rng);
        for i in 0..3 {
            push(
                &mut rows,
                &mut rng,
                &customer,
                base + i * 5 * MINUTE,
                a,
                home,
                None,
                true,
            );
        }
        m.equal_amount_runs += 1;

        // Full-limit drawdown ten minutes after the grant.
        let customer = format!("f-grant-{f:05}");
        let granted = day(&mut rng) + 11 * HOUR;
        let limit = (10_000 + below(&mut rng, 40_001) as i64) * 100;
        push(
            &mut rows,
            &mut rng,
            &customer,
            granted + 10 * MINUTE,
            limit / 100 * 95,
            home,
            Some((limit, granted)),
            true,
        );
        m.full_limit_after_grant += 1;

        // Probing: 99.00 then 499.00 twenty minutes apart.
        let customer = format!("f-probe-{f:05}");
        let base = day(&mut rng) + 15 * HOUR;
        push(
            &mut rows, &mut rng, &customer, base, 9_900, home, None, true,
        );
        push(
            &mut rows,
            &mut rng,
            &customer,
            base + 20 * MINUTE,
            49_900,
            home,
            None,
            true,
        );
        m.sensitive_probes += 1;
    }

    rows.sort_by(|a, b| {
        a.at.cmp(&b.at)
            .then_with(|| a.transaction_id.cmp(&b.transaction_id))
    });
    m.transactions = rows.len() as u64;
    m.fraud_transactions = rows.iter().filter(|r| r.fraud).count() as u64;
    let money =
        |minor: i64| Amount::from_minor(minor).map_or_else(|| minor.to_string(), |a| a.to_string());
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "transaction_id",
                "customer_id",
                "timestamp",
                "amount",
                "currency",
                "lat",
                "lon",
                "credit_limit",
                "credit_granted_at",
                "outcome",
                "is_fraud",
                "pattern",
            ])?;
            for r in &rows {
                let (limit, granted) = match r.credit {
                    Some((l, g)) => (money(l), stamp(g)),
                    None => (String::new(), String::new()),
                };
                w.write_record([
                    r.transaction_id.as_str(),
                    r.customer_id.as_str(),
                    &stamp(r.at),
                    &money(r.amount),
                    "CNY",
                    &format!("{:.5}", r.geo.0),
                    &format!("{:.5}", r.geo.1),
                    &limit,
                    &granted,
                    r.outcome,
                    if r.fraud { "1" } else { "0" },
                    pattern_of(r),
                ])?;
            }
            w.flush()?;
        }
        Format::Jsonl => {
            for r in &rows {
                let row = JsonRow {
                    transaction_id: &r.transaction_id,
                    customer_id: &r.customer_id,
                    timestamp: stamp(r.at),
                    amount: money(r.amount),
                    currency: "CNY",
                    lat: (r.geo.0 * 1e5).round() / 1e5,
                    lon: (r.geo.1 * 1e5).round() / 1e5,
                    credit_limit: r.credit.map(|(l, _)| money(l)),
                    credit_granted_at: r.credit.map(|(_, g)| stamp(g)),
                    outcome: r.outcome,
                    is_fraud: u8::from(r.fraud),
                    pattern: pattern_of(r),
                };
                serde_json::to_writer(&mut *out, &row)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(m)
}

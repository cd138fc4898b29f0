//! `tripwire gen --profile card`: a card-transaction history shaped like public card-fraud data
//! sets, with fraud that only history-aware rules catch and legitimate look-alikes that make
//! precision and recall below 100% possible.
//!
//! Customers live on a 100 × 100 grid with twice as many terminals, each customer with a mean
//! amount (5 to 100), a spread of half the mean, a number of transactions a day (0 to 4 on
//! average) at terminals within 5 units of home,
//! and a device (1% of devices are shared by a family of two or three: legitimate). Fraud, as
//! labelled:
//!
//! - `amount`: any transaction over 220 (a card used for one large purchase);
//! - `terminal`: every day two terminals per 10,000 are compromised for 28 days: every
//!   transaction on them is fraud;
//! - `customer`: every day three customers per 5,000 are compromised for 14 days: a third of
//!   their transactions then are fraud, with amounts 3 to 6 times their usual;
//! - `ring`: a device used by six fraudulent customers within a day.
//!
//! Legitimate look-alikes: genuine large purchases (0.3% of transactions at 3 to 5 times the
//! customer's usual, capped under 220), night-shift workers (2% of customers transact between
//! 01:00 and 05:00), family devices, busy terminals (1% of terminals take ten times the
//! traffic), monthly equal-amount subscriptions. Amounts are written as an exporting tool
//! with binary floats would write 0.5% of them (`85.64999999999999`), to exercise replay's
//! normalisation.

use std::io::Write;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::Serialize;

use super::generate::{GenConfig, START};
use crate::txn::EventTime;

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Local time is UTC+8, as in the other profile.
const LOCAL: i64 = 8 * HOUR;

/// What the card profile generated.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CardManifest {
    /// Rows written.
    pub transactions: u64,
    /// Rows labelled fraud.
    pub fraud_transactions: u64,
    /// Fraud rows by pattern: amount, terminal, customer, ring.
    pub fraud_by_pattern: std::collections::BTreeMap<String, u64>,
    /// Legitimate look-alike rows by kind.
    pub look_alikes: std::collections::BTreeMap<String, u64>,
    /// Terminals, customers and devices.
    pub terminals: u64,
    /// Customers.
    pub customers: u64,
}

struct Row {
    at: EventTime,
    id: u64,
    customer: u32,
    terminal: u32,
    device: String,
    amount: i64,
    pattern: &'static str,
    look_alike: &'static str,
}

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = uniform(rng).max(1e-12);
    let u2 = uniform(rng);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn cents(units: f64) -> i64 {
    ((units * 100.0).round() as i64).max(1)
}

struct Customer {
    mean: f64,
    per_day: f64,
    terminals: Vec<u32>,
    device: String,
    night_shift: bool,
    subscription: Option<i64>,
}

/// Writes a card history (CSV); returns what it holds.
pub fn generate(config: &GenConfig, out: &mut dyn Write) -> std::io::Result<CardManifest> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0xca4d);
    let n_customers = config.customers.max(10);
    // Two terminals a customer, as in the public simulated data set this profile follows.
    let n_terminals = (n_customers * 2).max(10);
    let terminals: Vec<(f64, f64)> = (0..n_terminals)
        .map(|_| (uniform(&mut rng) * 100.0, uniform(&mut rng) * 100.0))
        .collect();
    let busy: Vec<bool> = (0..n_terminals)
        .map(|_| below(&mut rng, 100) == 0)
        .collect();
    let mut customers: Vec<Customer> = (0..n_customers)
        .map(|c| {
            let (x, y) = (uniform(&mut rng) * 100.0, uniform(&mut rng) * 100.0);
            let mut near: Vec<u32> = terminals
                .iter()
                .enumerate()
                .filter(|(_, t)| (t.0 - x).hypot(t.1 - y) < 5.0)
                .map(|(i, _)| i as u32)
                .collect();
            if near.is_empty() {
                near.push(below(&mut rng, n_terminals as u64) as u32);
            }
            // Busy terminals draw customers from everywhere.
            for (i, _) in busy.iter().enumerate().filter(|(_, b)| **b) {
                if below(&mut rng, 10) == 0 {
                    near.push(i as u32);
                }
            }
            let mean = 5.0 + uniform(&mut rng) * 95.0;
            Customer {
                mean,
                per_day: uniform(&mut rng) * 4.0,
                terminals: near,
                device: format!("d{c:07}"),
                night_shift: below(&mut rng, 50) == 0,
                subscription: (below(&mut rng, 20) == 0).then(|| cents(mean * 0.5)),
            }
        })
        .collect();
    // Family devices: 1% of customers share the device of the customer before them.
    for c in 1..customers.len() {
        if below(&mut rng, 100) == 0 {
            customers[c].device = customers[c - 1].device.clone();
        }
    }

    let days = i64::from(config.days.max(1));
    let scale = (n_customers as f64 / 5_000.0).max(0.2);
    // Compromised terminals: (terminal, from day) — 2 a day at 5,000 customers.
    let mut bad_terminals: Vec<(u32, i64)> = Vec::new();
    // Compromised customers: (customer, from day) — 3 a day at 5,000 customers.
    let mut bad_customers: Vec<(u32, i64)> = Vec::new();
    for day in 0..days {
        let k = (2.0 * scale).round().max(1.0) as usize;
        for _ in 0..k {
            bad_terminals.push((below(&mut rng, n_terminals as u64) as u32, day));
        }
        let k = (3.0 * scale).round().max(1.0) as usize;
        for _ in 0..k {
            bad_customers.push((below(&mut rng, n_customers as u64) as u32, day));
        }
    }
    let terminal_bad = |t: u32, day: i64| {
        bad_terminals
            .iter()
            .any(|&(bt, from)| bt == t && day >= from && day < from + 28)
    };
    let customer_bad = |c: u32, day: i64| {
        bad_customers
            .iter()
            .any(|&(bc, from)| bc == c && day >= from && day < from + 14)
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut next = 0u64;
    for (c, cust) in customers.iter().enumerate() {
        for day in 0..days {
            let expected = cust.per_day;
            let mut n = expected.floor() as u64;
            if uniform(&mut rng) < expected.fract() {
                n += 1;
            }
            for _ in 0..n {
                let secs = if cust.night_shift && below(&mut rng, 2) == 0 {
                    (1.0 + uniform(&mut rng) * 4.0) * 3_600.0
                } else {
                    (12.0 + normal(&mut rng) * 3.0).clamp(6.5, 23.5) * 3_600.0
                };
                let at = START + day * DAY + (secs * 1e6) as i64;
                let terminal =
                    cust.terminals[below(&mut rng, cust.terminals.len() as u64) as usize];
                let mut amount = cents((cust.mean + normal(&mut rng) * cust.mean / 2.0).abs());
                let mut look_alike = if cust.night_shift && secs < 5.0 * 3_600.0 {
                    "night_shift"
                } else {
                    ""
                };
                if below(&mut rng, 1_000) < 3 {
                    let factor = 3.0 + uniform(&mut rng) * 2.0;
                    amount = cents((cust.mean * factor).min(219.0));
                    look_alike = "large_purchase";
                }
                let mut pattern = "";
                if customer_bad(c as u32, day) && below(&mut rng, 3) == 0 {
                    amount = cents(cust.mean * (3.0 + uniform(&mut rng) * 3.0));
                    pattern = "customer";
                }
                if terminal_bad(terminal, day) {
                    pattern = "terminal";
                }
                if amount > 22_000 {
                    pattern = "amount";
                }
                next += 1;
                rows.push(Row {
                    at,
                    id: next,
                    customer: c as u32,
                    terminal,
                    device: cust.device.clone(),
                    amount,
                    pattern,
                    look_alike: if pattern.is_empty() { look_alike } else { "" },
                });
            }
            if let Some(sub) = cust.subscription
                && day % 30 == 3
            {
                next += 1;
                rows.push(Row {
                    at: START + day * DAY + 2 * HOUR,
                    id: next,
                    customer: c as u32,
                    terminal: cust.terminals[0],
                    device: cust.device.clone(),
                    amount: sub,
                    pattern: "",
                    look_alike: "subscription",
                });
            }
        }
    }
    // Device rings: six fraudulent customers on one device within an hour, every ten days.
    let ring_customers = (6.0 * scale).round().max(6.0) as u32;
    for (r, day) in (0..days).step_by(10).enumerate() {
        let device = format!("ring-{r:04}");
        for k in 0..ring_customers {
            let c = below(&mut rng, n_customers as u64) as u32;
            next += 1;
            rows.push(Row {
                at: START + day * DAY + 15 * HOUR + i64::from(k) * 7 * MINUTE,
                id: next,
                customer: c,
                terminal: below(&mut rng, n_terminals as u64) as u32,
                device: device.clone(),
                amount: cents(customers[c as usize].mean * (0.8 + uniform(&mut rng) * 0.4)),
                pattern: "ring",
                look_alike: "",
            });
        }
    }
    rows.sort_by_key(|r| (r.at, r.id));

    let mut m = CardManifest {
        transactions: rows.len() as u64,
        terminals: n_terminals as u64,
        customers: n_customers as u64,
        ..CardManifest::default()
    };
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "transaction_id",
        "customer_id",
        "timestamp",
        "amount",
        "merchant_id",
        "device_id",
        "is_fraud",
        "pattern",
        "look_alike",
    ])?;
    for r in &rows {
        if !r.pattern.is_empty() {
            m.fraud_transactions += 1;
            *m.fraud_by_pattern.entry(r.pattern.into()).or_default() += 1;
        }
        if !r.look_alike.is_empty() {
            *m.look_alikes.entry(r.look_alike.into()).or_default() += 1;
        }
        let amount = if r.id % 200 == 7 {
            // What a tool printing binary floats writes for some amounts.
            format!("{}", r.amount as f64 / 100.0 + 1e-13)
        } else {
            format!("{}.{:02}", r.amount / 100, r.amount % 100)
        };
        let local = jiff::Timestamp::from_microsecond(r.at + LOCAL)
            .map(|t| format!("{}+08:00", t.strftime("%Y-%m-%dT%H:%M:%S")))
            .unwrap_or_default();
        w.write_record([
            format!("x{:010}", r.id).as_str(),
            &format!("k{:07}", r.customer),
            &local,
            &amount,
            &format!("term{:06}", r.terminal),
            &r.device,
            if r.pattern.is_empty() { "0" } else { "1" },
            r.pattern,
            r.look_alike,
        ])?;
    }
    w.flush()?;
    Ok(m)
}

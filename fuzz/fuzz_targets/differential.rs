//! Differential: random rule sets, histories and transactions through the compiled engine
//! and through the brute-force reference (`engine::reference`); they must agree on the
//! decision, on every matching rule (enforced, shadow, tag) and on the score. Rule sets mix
//! the interception features (short windows) with the in-loan ones (amount statistics,
//! outcome counts, streaks, monthly trends, a scorecard) over histories up to 300 days deep.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tripwire_core::engine::features::month_of;
use tripwire_core::engine::{self, reference};
use tripwire_core::rules::{self, Action};
use tripwire_core::state::months::MonthBuckets;
use tripwire_core::state::{CustomerHistory, Event, Outcome};
use tripwire_core::txn::{Amount, CreditLine, GeoPoint, Txn};

const T0: i64 = 1_772_359_200_000_000;
const WINDOWS: [&str; 6] = ["1m", "10m", "30m", "1h", "2h", "90s"];
const LOAN_WINDOWS: [&str; 5] = ["1h", "1d", "7d", "30d", "90d"];
const DAY: i64 = 86_400_000_000;
const OPS: [&str; 5] = ["at_least", "more_than", "at_most", "less_than", "equals"];

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> Result<&'a str> {
    Ok(from[u.choose_index(from.len())?])
}

fn leaf(u: &mut Unstructured<'_>) -> Result<String> {
    let w = pick(u, &WINDOWS)?;
    let op = pick(u, &OPS)?;
    Ok(match u.int_in_range(0..=14)? {
        0 => format!(
            "{{{}: {{window: {w}, {op}: {}}}}}",
            pick(u, &["count", "same_amount_count", "failed_count"])?,
            u.int_in_range(0..=6)?
        ),
        1 => format!(
            "{{sum: {{window: {w}, {op}: \"{}\"}}}}",
            pick(u, &["0", "99", "300.50", "1000"])?
        ),
        2 => format!(
            "{{list_count: {{window: {w}, list: probe, {op}: {}}}}}",
            u.int_in_range(0..=3)?
        ),
        3 => format!(
            "{{amount: {{{op}: \"{}\"}}}}",
            pick(u, &["99", "100", "499.00", "1000"])?
        ),
        4 => format!("{{amount: {{{}: probe}}}}", pick(u, &["in", "not_in"])?),
        5 => {
            let a = u.int_in_range(0..=23)?;
            let b = (a + u.int_in_range(1..=23)?) % 24;
            format!("{{local_time: {{from: \"{a:02}:00\", to: \"{b:02}:00\"}}}}")
        }
        6 => format!("{{local_hour: {{{op}: {}}}}}", u.int_in_range(0..=23)?),
        7 => format!(
            "{{{}: {{{op}: {}}}}}",
            pick(u, &["distance_km", "speed_kmh"])?,
            pick(u, &["0", "10", "50", "900"])?
        ),
        8 => format!(
            "{{since_credit_grant: {{{op}: {}}}}}",
            pick(u, &["1m", "30m", "2h"])?
        ),
        9 => format!(
            "{{amount_to_limit: {{{op}: \"{}\"}}}}",
            pick(u, &["0.5", "90%", "1"])?
        ),
        10 => format!("{{channel: {{{}: risky}}}}", pick(u, &["in", "not_in"])?),
        _ => loan_leaf(u, op)?,
    })
}

/// A leaf over an in-loan feature.
fn loan_leaf(u: &mut Unstructured<'_>, op: &str) -> Result<String> {
    let w = pick(u, &LOAN_WINDOWS)?;
    let money = |u: &mut Unstructured<'_>| -> Result<String> {
        let a = u.int_in_range(0..=600_000i64)?;
        Ok(format!("\"{}.{:02}\"", a / 100, a % 100))
    };
    Ok(match u.int_in_range(0..=10)? {
        0 => format!(
            "{{{}: {{window: {w}, {op}: {}}}}}",
            pick(
                u,
                &["failed_count", "settled_count", "flagged_count", "count"]
            )?,
            u.int_in_range(0..=6)?
        ),
        1 => format!(
            "{{{}: {{window: {w}, {op}: {}}}}}",
            pick(
                u,
                &[
                    "failed_sum",
                    "settled_sum",
                    "sum",
                    "mean_amount",
                    "mode_amount",
                    "p25_amount",
                    "median_amount",
                    "p75_amount",
                    "stddev_amount",
                    "iqr_amount"
                ]
            )?,
            money(u)?
        ),
        2 => format!(
            "{{mean_minus_median: {{window: {w}, {op}: \"{}\"}}}}",
            pick(u, &["-500", "-0.25", "0", "120"])?
        ),
        3 => format!(
            "{{{}: {{window: {w}, {op}: \"{}\"}}}}",
            pick(u, &["cv_amount", "drawn_to_limit"])?,
            pick(u, &["0.1", "50%", "1", "0.8"])?
        ),
        10 => format!(
            "{{fraud_rate: {{window: {w}, mature_after: {}, min_count: {}, {op}: \"{}\"}}}}",
            pick(u, &["1m", "1h", "2d"])?,
            u.int_in_range(1..=3u32)?,
            pick(u, &["0.1", "0.5", "1", "0"])?
        ),
        9 => format!(
            "{{{}: {{window: {w}, min_count: {}, {op}: \"{}\"}}}}",
            pick(
                u,
                &["amount_to_mean", "amount_to_median", "amount_to_max", "amount_zscore"]
            )?,
            u.int_in_range(1..=3u32)?,
            pick(u, &["0.5", "1", "1.5", "3", "0"])?
        ),
        4 => {
            let a = u.int_in_range(0..=23)?;
            let b = (a + u.int_in_range(1..=23)?) % 24;
            let f = pick(u, &["count_in_hours", "sum_in_hours"])?;
            let n = u.int_in_range(0..=3u32)?;
            let n = if f == "sum_in_hours" {
                format!("\"{}\"", n * 400)
            } else {
                n.to_string()
            };
            format!("{{{f}: {{window: {w}, from: \"{a:02}:00\", to: \"{b:02}:00\", {op}: {n}}}}}")
        }
        5 => format!(
            "{{{}: {{{op}: {}}}}}",
            pick(u, &["increasing_streak", "decreasing_streak"])?,
            u.int_in_range(0..=4)?
        ),
        6 => format!(
            "{{since_last_transaction: {{{op}: {}}}}}",
            pick(u, &["1h", "2d", "30d"])?
        ),
        7 => format!(
            "{{{}: {{of: {}, {op}: \"{}\"}}}}",
            pick(u, &["trend_1m_vs_3m", "trend_mom", "trend_3m_vs_prev_3m"])?,
            pick(u, &["count", "sum"])?,
            pick(u, &["0.5", "1", "130%", "3"])?
        ),
        _ => format!(
            "{{monthly_count_cv: {{{op}: \"{}\"}}}}",
            pick(u, &["0.2", "1", "40%"])?
        ),
    })
}

/// A scorecard characteristic: a feature and ascending cut points, points per bin.
fn characteristic(u: &mut Unstructured<'_>, i: usize) -> Result<String> {
    let (feature, cuts): (&str, &[&str]) = *u.choose(&[
        ("{ count: { window: 30d } }", &["2", "5", "10"][..]),
        ("{ failed_count: { window: 90d } }", &["1", "3"][..]),
        ("{ flagged_count: { window: 30d } }", &["1"][..]),
        (
            "{ drawn_to_limit: { window: 30d } }",
            &["\"30%\"", "\"80%\""][..],
        ),
        (
            "{ count_in_hours: { window: 30d, from: \"01:00\", to: \"05:00\" } }",
            &["1", "4"][..],
        ),
        ("{ trend_1m_vs_3m: { of: count } }", &["0.5", "1.5"][..]),
        (
            "{ mean_amount: { window: 90d } }",
            &["\"100\"", "\"500.50\""][..],
        ),
        ("{ since_last_transaction: {} }", &["1d", "7d"][..]),
    ])?;
    let mut bins = Vec::new();
    for k in 0..=cuts.len() {
        let from = if k > 0 {
            format!("from: {}, ", cuts[k - 1])
        } else {
            String::new()
        };
        let below = cuts
            .get(k)
            .map(|c| format!("below: {c}, "))
            .unwrap_or_default();
        bins.push(format!(
            "{{ {from}{below}points: {} }}",
            u.int_in_range(-30..=30)?
        ));
    }
    if u.ratio(1, 2)? {
        bins.push(format!(
            "{{ missing: true, points: {} }}",
            u.int_in_range(-30..=30)?
        ));
    }
    Ok(format!(
        "    - name: c{i}\n      feature: {feature}\n      bins: [{}]\n",
        bins.join(", ")
    ))
}

fn condition(u: &mut Unstructured<'_>, depth: u32) -> Result<String> {
    if depth >= 3 || u.ratio(1, 2)? {
        return leaf(u);
    }
    let n = u.int_in_range(1..=3)?;
    let kids: Vec<String> = (0..n)
        .map(|_| condition(u, depth + 1))
        .collect::<Result<_>>()?;
    Ok(match u.int_in_range(0..=2)? {
        0 => format!("{{all: [{}]}}", kids.join(", ")),
        1 => format!("{{any: [{}]}}", kids.join(", ")),
        _ => format!("{{not: {}}}", kids[0]),
    })
}

fn rule_file(u: &mut Unstructured<'_>) -> Result<String> {
    let mut yaml = String::from(
        "timezone: Asia/Shanghai\nlists:\n  probe: [99, 499, 1000]\n  risky: [web, ussd]\nrules:\n",
    );
    for i in 0..u.int_in_range(1..=6)? {
        yaml.push_str(&format!(
            "  - id: r{i}\n    action: {}\n    mode: {}\n    when: {}\n",
            pick(u, &["allow", "review", "deny", "tag"])?,
            pick(u, &["enforce", "shadow"])?,
            condition(u, 0)?
        ));
    }
    if u.ratio(1, 2)? {
        yaml.push_str(
            "scorecard:\n  base_score: 600\n  points_to_double_odds: 20\n  characteristics:\n",
        );
        for i in 0..u.int_in_range(1..=3)? {
            yaml.push_str(&characteristic(u, i)?);
        }
    }
    Ok(yaml)
}

fn offset(u: &mut Unstructured<'_>) -> Result<i64> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => i64::from(u.int_in_range(-150..=15)?) * 60_000_000,
        2 => u.int_in_range(-9_000_000_000..=900_000_000)?,
        // Deep history, for the 30- and 90-day windows and the monthly buckets.
        _ => -u.int_in_range(0..=300 * DAY)?,
    })
}

fn amount(u: &mut Unstructured<'_>) -> Result<Amount> {
    let minor = if u.ratio(1, 2)? {
        *u.choose(&[9_900i64, 49_900, 100_000, 30_050, 10_000])?
    } else {
        u.int_in_range(1..=200_000)?
    };
    Ok(Amount::from_minor(minor).expect("in range"))
}

fn geo(u: &mut Unstructured<'_>) -> Result<Option<GeoPoint>> {
    if u.ratio(2, 5)? {
        return Ok(None);
    }
    let lat = f64::from(u.int_in_range(-1000..=1000)?) / 1000.0;
    let lon = if u.ratio(1, 2)? { 179.0 } else { -179.0 }
        + f64::from(u.int_in_range(0..=999)?) / 1000.0 * if u.ratio(1, 2)? { 1.0 } else { -1.0 };
    Ok(Some(GeoPoint {
        lat,
        lon: lon.clamp(-180.0, 180.0),
    }))
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let yaml = rule_file(u)?;
    let set = rules::load_bytes(yaml.as_bytes())
        .unwrap_or_else(|e| panic!("generated rules refused: {e}\n{yaml}"));
    let n = u.int_in_range(0..=70)?;
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let mut e = Event::new(
            T0 + offset(u)?,
            i as u64,
            amount(u)?,
            geo(u)?,
            *u.choose(&[Action::Allow, Action::Allow, Action::Review, Action::Deny])?,
        );
        e.set_outcome(*u.choose(&[
            Outcome::Pending,
            Outcome::Settled,
            Outcome::Failed,
            Outcome::Reversed,
        ])?);
        if u.ratio(1, 5)? {
            e.set_fraud();
        }
        events.push(e);
    }
    let txn = Txn {
        transaction_id: Cow::Borrowed("t"),
        customer_id: Cow::Borrowed("c"),
        at: T0 + offset(u)?,
        amount: amount(u)?,
        currency: None,
        geo: geo(u)?,
        credit_line: None,
        channel: if u.ratio(1, 2)? {
            Some(Cow::Borrowed(*u.choose(&["web", "app", "ussd"])?))
        } else {
            None
        },
        merchant_id: None,
        device_id: None,
        ip: None,
    };
    let credit_line = if u.ratio(1, 2)? {
        Some(CreditLine {
            limit: Amount::from_minor(u.int_in_range(1..=500_000)?).expect("in range"),
            granted_at: txn.at - i64::from(u.int_in_range(-200..=60)?) * 60_000_000,
        })
    } else {
        None
    };
    let split = u.int_in_range(0..=events.len())?;
    let mut months = MonthBuckets::default();
    for e in &events {
        months.add(month_of(&set.valid.timezone, e.at), e.amount_minor());
    }
    let mut history = CustomerHistory::new((&events[..split], &events[split..]), credit_line);
    history.months = Some(&months);
    let fast = engine::evaluate(&set, &history, &txn);
    let slow = reference::evaluate_with(
        &set.valid,
        &reference::Inputs {
            events: &events,
            credit_line,
            months: true,
            txn: &txn,
        },
    );
    let ids = |hits: &[u16]| {
        hits.iter()
            .map(|&i| set.rules()[i as usize].id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(fast.action, slow.action, "{yaml}");
    assert_eq!(ids(&fast.hits), slow.hits, "{yaml}");
    assert_eq!(ids(&fast.shadow), slow.shadow, "{yaml}");
    assert_eq!(ids(&fast.tags), slow.tags, "{yaml}");
    assert_eq!(fast.features.score, slow.score, "{yaml}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

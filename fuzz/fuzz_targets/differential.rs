//! Differential: random rule sets, histories and transactions through the compiled engine
//! and through the brute-force reference (`engine::reference`); they must agree on the
//! decision and on every matching rule.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tripwire::engine::{self, reference};
use tripwire::rules::{self, Action};
use tripwire::state::{CustomerHistory, Event, Outcome};
use tripwire::txn::{Amount, CreditLine, GeoPoint, Txn};

const T0: i64 = 1_772_359_200_000_000;
const WINDOWS: [&str; 6] = ["1m", "10m", "30m", "1h", "2h", "90s"];
const OPS: [&str; 5] = ["at_least", "more_than", "at_most", "less_than", "equals"];

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> Result<&'a str> {
    Ok(from[u.choose_index(from.len())?])
}

fn leaf(u: &mut Unstructured<'_>) -> Result<String> {
    let w = pick(u, &WINDOWS)?;
    let op = pick(u, &OPS)?;
    Ok(match u.int_in_range(0..=10)? {
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
        _ => format!("{{channel: {{{}: risky}}}}", pick(u, &["in", "not_in"])?),
    })
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
            pick(u, &["allow", "review", "deny"])?,
            pick(u, &["enforce", "shadow"])?,
            condition(u, 0)?
        ));
    }
    Ok(yaml)
}

fn offset(u: &mut Unstructured<'_>) -> Result<i64> {
    Ok(if u.ratio(1, 2)? {
        i64::from(u.int_in_range(-150..=15)?) * 60_000_000
    } else {
        u.int_in_range(-9_000_000_000..=900_000_000)?
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
            Action::Allow,
        );
        e.set_outcome(*u.choose(&[
            Outcome::Pending,
            Outcome::Settled,
            Outcome::Failed,
            Outcome::Reversed,
        ])?);
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
    let history = CustomerHistory::new((&events[..split], &events[split..]), credit_line);
    let fast = engine::evaluate(&set, &history, &txn);
    let slow = reference::evaluate(&set.valid, &events, credit_line, &txn);
    let ids = |hits: &[u16]| {
        hits.iter()
            .map(|&i| set.rules()[i as usize].id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(fast.action, slow.action, "{yaml}");
    assert_eq!(ids(&fast.hits), slow.hits, "{yaml}");
    assert_eq!(ids(&fast.shadow), slow.shadow, "{yaml}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

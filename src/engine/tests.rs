//! Edges of every shipped rule, and the compiled evaluation against the brute-force reference
//! over random histories and random rule sets.

use std::borrow::Cow;

use proptest::prelude::*;

use super::{evaluate, explain::Explanation, reference};
use crate::rules::{self, Action, RuleSet};
use crate::state::{CustomerHistory, Event, Outcome};
use crate::txn::{Amount, CreditLine, GeoPoint, Txn};

const SHIPPED: &[u8] = include_bytes!("../../rules.yaml");

fn shipped() -> RuleSet {
    rules::load_bytes(SHIPPED).expect("shipped rules load")
}

fn at(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .expect("test timestamp")
        .as_microsecond()
}

fn money(text: &str) -> Amount {
    Amount::parse(text).expect("test amount")
}

fn txn(at: i64, amount: &str) -> Txn<'static> {
    Txn {
        transaction_id: Cow::Borrowed("t"),
        customer_id: Cow::Borrowed("c"),
        at,
        amount: money(amount),
        currency: None,
        geo: None,
        credit_line: None,
        channel: None,
        merchant_id: None,
    }
}

fn event(at: i64, amount: &str) -> Event {
    Event::new(at, at as u64, money(amount), None, Action::Allow)
}

fn geo_event(at: i64, lat: f64, lon: f64) -> Event {
    Event::new(
        at,
        at as u64,
        money("10"),
        Some(GeoPoint { lat, lon }),
        Action::Allow,
    )
}

struct Outcome_ {
    action: Action,
    hits: Vec<String>,
    messages: Vec<String>,
}

fn decide(
    set: &RuleSet,
    events: &[Event],
    credit_line: Option<CreditLine>,
    t: &Txn<'_>,
) -> Outcome_ {
    let history = CustomerHistory::new((events, &[]), credit_line);
    let d = evaluate(set, &history, t);
    let r = reference::evaluate(&set.valid, events, credit_line, t);
    let hits: Vec<String> = d
        .hits
        .iter()
        .map(|&i| set.rules[i as usize].id.to_string())
        .collect();
    assert_eq!(r.hits, hits, "compiled and reference disagree");
    assert_eq!(r.action, d.action);
    let messages = d
        .hits
        .iter()
        .map(|&rule| {
            Explanation {
                set,
                rule,
                features: &d.features,
                txn: t,
            }
            .to_string()
        })
        .collect();
    Outcome_ {
        action: d.action,
        hits,
        messages,
    }
}

const MINUTE: i64 = 60_000_000;
const SECOND: i64 = 1_000_000;

#[test]
fn night_window_is_half_open_in_local_time() {
    let set = shipped();
    let cases = [
        ("2026-03-01T00:59:59+08:00", Action::Allow),
        ("2026-03-01T01:00:00+08:00", Action::Review),
        ("2026-03-01T04:59:59+08:00", Action::Review),
        ("2026-03-01T04:59:59.999999+08:00", Action::Review),
        ("2026-03-01T05:00:00+08:00", Action::Allow),
        // 02:30 in Shanghai written in UTC.
        ("2026-02-28T18:30:00Z", Action::Review),
    ];
    for (time, want) in cases {
        let out = decide(&set, &[], None, &txn(at(time), "10"));
        assert_eq!(out.action, want, "at {time}");
    }
    let out = decide(&set, &[], None, &txn(at("2026-03-01T02:13:05+08:00"), "10"));
    assert_eq!(
        out.messages,
        vec!["local time 02:13:05 (Asia/Shanghai) within [01:00, 05:00)"]
    );
}

#[test]
fn denies_fifth_transaction_within_ten_minutes() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    let four: Vec<Event> = (1..=4)
        .map(|i| event(t - i * MINUTE, &format!("{}", 10 + i)))
        .collect();
    let out = decide(&set, &four, None, &txn(t, "50"));
    assert_eq!(out.action, Action::Deny);
    assert_eq!(out.hits, vec!["velocity_burst"]);
    assert_eq!(out.messages, vec!["5 transactions in 10m, limit 4"]);

    let three = &four[..3];
    assert_eq!(
        decide(&set, three, None, &txn(t, "50")).action,
        Action::Allow
    );
}

#[test]
fn velocity_window_excludes_its_left_edge_and_later_events() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    // Exactly ten minutes before is outside (t − 10m, t]; one microsecond later is inside.
    let mut events: Vec<Event> = (1..=3)
        .map(|i| event(t - i * MINUTE, &format!("{}", 10 + i)))
        .collect();
    events.push(event(t - 10 * MINUTE, "77"));
    assert_eq!(
        decide(&set, &events, None, &txn(t, "50")).action,
        Action::Allow
    );
    events.push(event(t - 10 * MINUTE + 1, "78"));
    assert_eq!(
        decide(&set, &events, None, &txn(t, "50")).action,
        Action::Deny
    );

    // Out of order: events stamped after the current transaction are in none of its windows.
    let later: Vec<Event> = (1..=4)
        .map(|i| event(t + i * SECOND, &format!("{}", 10 + i)))
        .collect();
    assert_eq!(
        decide(&set, &later, None, &txn(t, "50")).action,
        Action::Allow
    );
}

#[test]
fn impossible_travel_is_strictly_over_900_kmh() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    let (from, to) = (
        GeoPoint { lat: 0.0, lon: 0.0 },
        GeoPoint { lat: 0.0, lon: 1.0 },
    );
    let d = super::features::distance_m(from, to);
    assert!(
        (111_000..111_400).contains(&d),
        "1° of longitude at the equator, got {d} m"
    );
    // d metres at exactly 900 km/h takes d × 4000 microseconds.
    let exact = d * 4_000;
    let mut current = txn(t, "10");
    current.geo = Some(to);
    let history = [geo_event(t - exact, from.lat, from.lon)];
    let out = decide(&set, &history, None, &current);
    assert_eq!(out.action, Action::Allow, "exactly 900 km/h is not over it");
    let history = [geo_event(t - exact + 1_000, from.lat, from.lon)];
    let out = decide(&set, &history, None, &current);
    assert_eq!(out.action, Action::Deny);
    assert!(
        out.messages[0].starts_with("900.0 km/h from the previous geotagged transaction"),
        "{:?}",
        out.messages
    );
}

#[test]
fn impossible_travel_measures_across_the_antimeridian() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    let mut current = txn(t, "10");
    current.geo = Some(GeoPoint {
        lat: 10.0,
        lon: -179.5,
    });
    // 1° of longitude at 10°N is about 109.5 km, not 359° the long way round.
    let history = [geo_event(t - 5 * MINUTE, 10.0, 179.5)];
    let out = decide(&set, &history, None, &current);
    assert_eq!(out.action, Action::Deny, "109.5 km in 5 minutes");
    let history = [geo_event(t - 10 * MINUTE, 10.0, 179.5)];
    assert_eq!(
        decide(&set, &history, None, &current).action,
        Action::Allow,
        "657 km/h"
    );
    // Fast but short: 22 km in one minute is under the 50 km floor.
    current.geo = Some(GeoPoint {
        lat: 0.0,
        lon: -179.9,
    });
    let history = [geo_event(t - MINUTE, 0.0, 179.9)];
    assert_eq!(decide(&set, &history, None, &current).action, Action::Allow);
}

#[test]
fn impossible_travel_uses_the_latest_earlier_location() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    let mut current = txn(t, "10");
    current.geo = Some(GeoPoint {
        lat: 31.23,
        lon: 121.47,
    }); // Shanghai
    let history = [
        geo_event(t - 60 * MINUTE, 39.9, 116.4), // Beijing an hour ago: 1,070 km/h
        geo_event(t - 30 * MINUTE, 31.20, 121.45), // Shanghai half an hour ago
        geo_event(t + MINUTE, 22.3, 114.2),      // stamped later: not "previous"
    ];
    assert_eq!(decide(&set, &history, None, &current).action, Action::Allow);
    assert_eq!(
        decide(&set, &history[..1], None, &current).action,
        Action::Deny
    );
    // No location on the current transaction: nothing to compare.
    current.geo = None;
    assert_eq!(
        decide(&set, &history[..1], None, &current).action,
        Action::Allow
    );
}

#[test]
fn repeated_equal_amount_counts_exact_amounts_in_thirty_minutes() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    let two = [
        event(t - 29 * MINUTE, "200"),
        event(t - 20 * MINUTE, "200.00"),
    ];
    let out = decide(&set, &two, None, &txn(t, "200.0"));
    assert_eq!(out.hits, vec!["repeated_equal_amount"]);
    assert_eq!(
        out.messages,
        vec!["3 transactions of 200.00 in 30m, limit 2"]
    );
    assert_eq!(
        decide(&set, &two, None, &txn(t, "200.01")).action,
        Action::Allow
    );
    let edge = [event(t - 30 * MINUTE, "200"), event(t - 20 * MINUTE, "200")];
    assert_eq!(
        decide(&set, &edge, None, &txn(t, "200")).action,
        Action::Allow
    );
}

#[test]
fn full_limit_after_grant_needs_ninety_percent_within_thirty_minutes() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    let line = |ago: i64| {
        Some(CreditLine {
            limit: money("10000"),
            granted_at: t - ago,
        })
    };
    let out = decide(&set, &[], line(29 * MINUTE + 59 * SECOND), &txn(t, "9000"));
    assert_eq!(out.hits, vec!["full_limit_after_grant"]);
    assert_eq!(
        out.messages,
        vec![
            "credit line granted 29m59s ago (less than 30m); amount 9000.00 is 90% of the credit limit 10000.00 (at least 90%)"
        ]
    );
    assert_eq!(
        decide(&set, &[], line(MINUTE), &txn(t, "8999.99")).action,
        Action::Allow
    );
    assert_eq!(
        decide(&set, &[], line(30 * MINUTE), &txn(t, "9000")).action,
        Action::Allow
    );
    assert_eq!(
        decide(&set, &[], line(0), &txn(t, "10000")).action,
        Action::Deny
    );
    assert_eq!(
        decide(&set, &[], line(-MINUTE), &txn(t, "10000")).action,
        Action::Allow,
        "grant after the transaction"
    );
    assert_eq!(
        decide(&set, &[], None, &txn(t, "10000")).action,
        Action::Allow,
        "no line known"
    );
}

#[test]
fn sensitive_amounts_review_the_second_probe_within_an_hour() {
    let set = shipped();
    let t = at("2026-03-01T12:00:00+08:00");
    assert_eq!(
        decide(&set, &[], None, &txn(t, "499")).action,
        Action::Allow
    );
    let one = [event(t - 59 * MINUTE, "99.00")];
    let out = decide(&set, &one, None, &txn(t, "499"));
    assert_eq!(out.hits, vec!["sensitive_amounts"]);
    assert_eq!(
        out.messages,
        vec![
            "amount 499.00 in list sensitive_amounts; 2 transactions with an amount in sensitive_amounts in 1h, limit 1"
        ]
    );
    assert_eq!(
        decide(&set, &one, None, &txn(t, "500")).action,
        Action::Allow
    );
    let old = [event(t - 60 * MINUTE, "99")];
    assert_eq!(
        decide(&set, &old, None, &txn(t, "499")).action,
        Action::Allow
    );
}

#[test]
fn deny_wins_over_review_and_every_match_is_a_reason() {
    let set = shipped();
    let t = at("2026-03-01T03:00:00+08:00");
    let four: Vec<Event> = (1..=4).map(|i| event(t - i * MINUTE, "499")).collect();
    let out = decide(&set, &four, None, &txn(t, "499"));
    assert_eq!(out.action, Action::Deny);
    assert_eq!(
        out.hits,
        vec![
            "night_window",
            "velocity_burst",
            "repeated_equal_amount",
            "sensitive_amounts"
        ]
    );
}

#[test]
fn shadow_rules_report_without_deciding() {
    let yaml = "timezone: UTC\nrules:\n  - id: big\n    action: deny\n    mode: shadow\n    when:\n      amount: { at_least: 100 }\n";
    let set = rules::load_bytes(yaml.as_bytes()).unwrap();
    let history = CustomerHistory::EMPTY;
    let d = evaluate(&set, &history, &txn(0, "150"));
    assert_eq!(d.action, Action::Allow);
    assert!(d.hits.is_empty());
    assert_eq!(d.shadow.as_slice(), &[0]);
}

// ---- compiled evaluation equals the brute-force reference --------------------------------

const T0: i64 = 1_772_359_200_000_000; // 2026-03-01T10:00:00Z

fn leaf() -> impl Strategy<Value = String> {
    let window = prop::sample::select(vec!["1m", "10m", "30m", "1h", "2h", "90s"]);
    let op = prop::sample::select(vec![
        "at_least",
        "more_than",
        "at_most",
        "less_than",
        "equals",
    ]);
    prop_oneof![
        (
            prop::sample::select(vec!["count", "same_amount_count", "failed_count"]),
            window.clone(),
            op.clone(),
            0u32..7
        )
            .prop_map(|(f, w, o, n)| format!("{{{f}: {{window: {w}, {o}: {n}}}}}")),
        (
            window.clone(),
            op.clone(),
            prop::sample::select(vec!["0", "99", "300.50", "1000", "5000"])
        )
            .prop_map(|(w, o, a)| format!("{{sum: {{window: {w}, {o}: \"{a}\"}}}}")),
        (window, op.clone(), 0u32..4).prop_map(|(w, o, n)| format!(
            "{{list_count: {{window: {w}, list: probe, {o}: {n}}}}}"
        )),
        (
            op.clone(),
            prop::sample::select(vec!["99", "100", "499.00", "1000"])
        )
            .prop_map(|(o, a)| format!("{{amount: {{{o}: \"{a}\"}}}}")),
        prop::bool::ANY.prop_map(|neg| format!(
            "{{amount: {{{}: probe}}}}",
            if neg { "not_in" } else { "in" }
        )),
        (0u32..24, 0u32..24)
            .prop_filter("non-empty", |(a, b)| a != b)
            .prop_map(|(a, b)| format!(
                "{{local_time: {{from: \"{a:02}:00\", to: \"{b:02}:30\"}}}}"
            )),
        (op.clone(), 0u32..24).prop_map(|(o, h)| format!("{{local_hour: {{{o}: {h}}}}}")),
        (
            prop::sample::select(vec!["distance_km", "speed_kmh"]),
            op.clone(),
            prop::sample::select(vec!["0", "10", "50", "900", "5000.5"])
        )
            .prop_map(|(f, o, k)| format!("{{{f}: {{{o}: {k}}}}}")),
        (op.clone(), prop::sample::select(vec!["1m", "30m", "2h"]))
            .prop_map(|(o, d)| format!("{{since_credit_grant: {{{o}: {d}}}}}")),
        (op, prop::sample::select(vec!["0.5", "90%", "1", "0.015"]))
            .prop_map(|(o, r)| format!("{{amount_to_limit: {{{o}: \"{r}\"}}}}")),
        prop::bool::ANY.prop_map(|neg| format!(
            "{{channel: {{{}: risky_channels}}}}",
            if neg { "not_in" } else { "in" }
        )),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4)
                .prop_map(|cs| format!("{{all: [{}]}}", cs.join(", "))),
            prop::collection::vec(inner.clone(), 1..4)
                .prop_map(|cs| format!("{{any: [{}]}}", cs.join(", "))),
            inner.prop_map(|c| format!("{{not: {c}}}")),
        ]
    })
}

fn rule_file() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (condition(), prop::sample::select(vec!["allow", "review", "deny"]), prop::bool::weighted(0.25)),
        1..8,
    )
    .prop_map(|rules| {
        let mut yaml = String::from(
            "timezone: Asia/Shanghai\nlists:\n  probe: [99, 499, 1000]\n  risky_channels: [web, ussd]\nrules:\n",
        );
        for (i, (cond, action, shadow)) in rules.iter().enumerate() {
            yaml.push_str(&format!(
                "  - id: r{i}\n    action: {action}\n    mode: {}\n    when: {cond}\n",
                if *shadow { "shadow" } else { "enforce" }
            ));
        }
        yaml
    })
}

fn time_offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        (-150i64..15).prop_map(|m| m * MINUTE),
        -9_000_000_000i64..900_000_000,
    ]
}

fn amount_minor() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![9_900i64, 49_900, 100_000, 30_050, 10_000]),
        1i64..200_000,
    ]
}

fn geo() -> impl Strategy<Value = Option<GeoPoint>> {
    prop::option::weighted(
        0.6,
        prop_oneof![
            (-1.0f64..1.0, 179.0f64..180.0),
            (-1.0f64..1.0, -180.0f64..-179.0),
            (30.0f64..32.0, 120.0f64..122.0),
        ]
        .prop_map(|(lat, lon)| GeoPoint { lat, lon }),
    )
}

prop_compose! {
    fn history_event()(offset in time_offset(), amount in amount_minor(), geo in geo(), outcome in 0u8..4, id in any::<u64>()) -> Event {
        let mut e = Event::new(T0 + offset, id, Amount::from_minor(amount).unwrap(), geo, Action::Allow);
        e.set_outcome(match outcome { 0 => Outcome::Pending, 1 => Outcome::Settled, 2 => Outcome::Failed, _ => Outcome::Reversed });
        e
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compiled_evaluation_equals_the_reference(
        yaml in rule_file(),
        events in prop::collection::vec(history_event(), 0..70),
        split in 0usize..70,
        offset in time_offset(),
        amount in amount_minor(),
        here in geo(),
        channel in prop::option::of(prop::sample::select(vec!["web", "app", "ussd"])),
        line in prop::option::of((1i64..500_000, -200i64..60)),
    ) {
        let set = rules::load_bytes(yaml.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        let mut current = txn(T0 + offset, "1");
        current.amount = Amount::from_minor(amount).unwrap();
        current.geo = here;
        current.channel = channel.map(Cow::Borrowed);
        let credit_line = line.map(|(limit, ago_min)| CreditLine {
            limit: Amount::from_minor(limit).unwrap(),
            granted_at: current.at - ago_min * MINUTE,
        });
        // The ring hands the engine two slices; any split must give the same answer.
        let split = split.min(events.len());
        let history = CustomerHistory::new((&events[..split], &events[split..]), credit_line);
        let d = evaluate(&set, &history, &current);
        let r = reference::evaluate(&set.valid, &events, credit_line, &current);
        let hits: Vec<String> = d.hits.iter().map(|&i| set.rules[i as usize].id.to_string()).collect();
        let shadow: Vec<String> = d.shadow.iter().map(|&i| set.rules[i as usize].id.to_string()).collect();
        prop_assert_eq!(d.action, r.action, "{}", yaml);
        prop_assert_eq!(hits, r.hits, "{}", yaml);
        prop_assert_eq!(shadow, r.shadow, "{}", yaml);
        for &rule in d.hits.iter().chain(d.shadow.iter()) {
            let message = Explanation { set: &set, rule, features: &d.features, txn: &current }.to_string();
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn the_newest_first_scan_of_an_ordered_history_equals_the_reference(
        yaml in rule_file(),
        events in prop::collection::vec(history_event(), 0..70),
        split in 0usize..70,
        offset in time_offset(),
        amount in amount_minor(),
        here in geo(),
    ) {
        let set = rules::load_bytes(yaml.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        let mut events = events;
        events.sort_by_key(|e| e.at);
        let mut current = txn(T0 + offset, "1");
        current.amount = Amount::from_minor(amount).unwrap();
        current.geo = here;
        // The ring hands over arrival order as two slices: rotate so any split is in order.
        let split = split.min(events.len());
        let (a, b) = events.split_at(split);
        let history = CustomerHistory::new((a, b), None);
        prop_assert!(history.in_time_order);
        let d = evaluate(&set, &history, &current);
        let r = reference::evaluate(&set.valid, &events, None, &current);
        let hits: Vec<String> = d.hits.iter().map(|&i| set.rules[i as usize].id.to_string()).collect();
        prop_assert_eq!(d.action, r.action, "{}", yaml);
        prop_assert_eq!(hits, r.hits, "{}", yaml);
    }

    #[test]
    fn shipped_rules_equal_the_reference(
        events in prop::collection::vec(history_event(), 0..64),
        offset in time_offset(),
        amount in amount_minor(),
        here in geo(),
        line in prop::option::of((1i64..500_000, -200i64..60)),
    ) {
        let set = shipped();
        let mut current = txn(T0 + offset, "1");
        current.amount = Amount::from_minor(amount).unwrap();
        current.geo = here;
        let credit_line = line.map(|(limit, ago_min)| CreditLine {
            limit: Amount::from_minor(limit).unwrap(),
            granted_at: current.at - ago_min * MINUTE,
        });
        let history = CustomerHistory::new((&events, &[]), credit_line);
        let d = evaluate(&set, &history, &current);
        let r = reference::evaluate(&set.valid, &events, credit_line, &current);
        let hits: Vec<String> = d.hits.iter().map(|&i| set.rules[i as usize].id.to_string()).collect();
        prop_assert_eq!(d.action, r.action);
        prop_assert_eq!(hits, r.hits);
    }
}

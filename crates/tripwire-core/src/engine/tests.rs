//! Edges of every shipped rule, and the compiled evaluation against the brute-force reference
//! over random histories and random rule sets.

use std::borrow::Cow;

use proptest::prelude::*;

use super::{evaluate, explain::Explanation, reference};
use crate::rules::{self, Action, RuleSet};
use crate::state::{CustomerHistory, Event, Outcome};
use crate::txn::{Amount, CreditLine, GeoPoint, Txn};

const SHIPPED: &[u8] = include_bytes!("../../../../rules.yaml");

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
        device_id: None,
        ip: None,
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
                txn: Some(t),
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

/// Conditions of `leaf`s combined by all / any / not, up to `depth` deep, with up to
/// `width` children per combinator (`size` and `branch` as in `prop_recursive`).
fn nested(
    leaf: impl Strategy<Value = String> + 'static,
    depth: u32,
    size: u32,
    branch: u32,
    width: usize,
) -> impl Strategy<Value = String> {
    leaf.prop_recursive(depth, size, branch, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..width + 1)
                .prop_map(|cs| format!("{{all: [{}]}}", cs.join(", "))),
            prop::collection::vec(inner.clone(), 1..width + 1)
                .prop_map(|cs| format!("{{any: [{}]}}", cs.join(", "))),
            inner.prop_map(|c| format!("{{not: {c}}}")),
        ]
    })
}

fn condition() -> impl Strategy<Value = String> {
    nested(leaf(), 3, 12, 3, 3)
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
    fn history_event()(offset in time_offset(), amount in amount_minor(), geo in geo(), outcome in 0u8..4, id in any::<u64>(), fraud in 0u8..5) -> Event {
        let mut e = Event::new(T0 + offset, id, Amount::from_minor(amount).unwrap(), geo, Action::Allow);
        e.set_outcome(match outcome { 0 => Outcome::Pending, 1 => Outcome::Settled, 2 => Outcome::Failed, _ => Outcome::Reversed });
        if fraud == 0 {
            e.set_fraud();
        }
        e
    }
}

/// The current transaction of a property test: at `at`, of `amount` minor units, at `here`.
fn placed_txn(at: i64, amount: i64, here: Option<GeoPoint>) -> Txn<'static> {
    let mut current = txn(at, "1");
    current.amount = Amount::from_minor(amount).unwrap();
    current.geo = here;
    current
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
        let mut current = placed_txn(T0 + offset, amount, here);
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
            let message = Explanation { set: &set, rule, features: &d.features, txn: Some(&current) }.to_string();
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
        let current = placed_txn(T0 + offset, amount, here);
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
    fn the_ordered_scan_fills_every_feature_as_the_general_scan(
        yaml in rule_file(),
        loan in loan_rule_file(),
        events in prop::collection::vec(history_event(), 0..70),
        loan_events in prop::collection::vec(loan_event(), 0..70),
        split in 0usize..70,
        offset in time_offset(),
        amount in amount_minor(),
        here in geo(),
        hint in (any::<prop::sample::Index>(), -1i64..=1),
    ) {
        // Two families of rule files and histories: minutes around T0 in a fixed zone, and
        // months in zones with daylight saving. The fast scan of a history in time order must
        // fill the very features the scan of any history fills, whatever its median guess
        // (one of the amounts, or next to one).
        for (yaml, mut events) in [(yaml, events), (loan, loan_events)] {
            let set = rules::load_bytes(yaml.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
            events.sort_by_key(|e| e.at);
            let current = placed_txn(T0 + offset, amount, here);
            let split = split.min(events.len());
            let (a, b) = events.split_at(split);
            let median_hint = if events.is_empty() { 0 } else { events[hint.0.index(events.len())].amount_minor() + hint.1 };
            let ordered = CustomerHistory { median_hint, ..CustomerHistory::new((a, b), None) };
            prop_assert!(ordered.in_time_order);
            let general = CustomerHistory { in_time_order: false, median_hint: 0, ..ordered };
            let fast = super::features::extract(&set, &ordered, Some(&current), current.at);
            let slow = super::features::extract(&set, &general, Some(&current), current.at);
            prop_assert_eq!(fast, slow, "{}", yaml);
        }
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
        let current = placed_txn(T0 + offset, amount, here);
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

// ---- in-loan features, scorecards and tags against the reference --------------------------

const DAY: i64 = 86_400_000_000;

/// A windowed money feature against `minor` units written as a decimal.
fn money_leaf(feature: &str, window: &str, op: &str, minor: i64) -> String {
    format!(
        "{{{feature}: {{window: {window}, {op}: \"{}.{:02}\"}}}}",
        minor / 100,
        minor % 100
    )
}

fn loan_leaf() -> impl Strategy<Value = String> {
    let window = prop::sample::select(vec!["1h", "1d", "7d", "30d", "90d"]);
    let op = prop::sample::select(vec![
        "at_least",
        "more_than",
        "at_most",
        "less_than",
        "equals",
    ]);
    prop_oneof![
        (
            prop::sample::select(vec![
                "failed_count",
                "settled_count",
                "flagged_count",
                "count"
            ]),
            window.clone(),
            op.clone(),
            0u32..6
        )
            .prop_map(|(f, w, o, n)| format!("{{{f}: {{window: {w}, {o}: {n}}}}}")),
        (
            prop::sample::select(vec!["failed_sum", "settled_sum", "sum"]),
            window.clone(),
            op.clone(),
            0i64..600_000
        )
            .prop_map(|(f, w, o, a)| money_leaf(f, w, o, a)),
        (
            prop::sample::select(vec![
                "mean_amount",
                "mode_amount",
                "p25_amount",
                "median_amount",
                "p75_amount",
                "stddev_amount",
                "iqr_amount"
            ]),
            window.clone(),
            op.clone(),
            0i64..200_000
        )
            .prop_map(|(f, w, o, a)| money_leaf(f, w, o, a)),
        (
            prop::sample::select(vec![
                "mean_amount",
                "p25_amount",
                "median_amount",
                "p75_amount",
                "iqr_amount"
            ]),
            window.clone(),
            op.clone(),
            0i64..200_000
        )
            .prop_map(|(f, w, o, a)| money_leaf(f, w, o, a)),
        (
            window.clone(),
            op.clone(),
            prop::sample::select(vec!["-500", "-0.25", "0", "120"])
        )
            .prop_map(|(w, o, a)| format!("{{mean_minus_median: {{window: {w}, {o}: \"{a}\"}}}}")),
        (
            prop::sample::select(vec!["cv_amount", "drawn_to_limit"]),
            window.clone(),
            op.clone(),
            prop::sample::select(vec!["0.1", "50%", "1", "0.8"])
        )
            .prop_map(|(f, w, o, r)| format!("{{{f}: {{window: {w}, {o}: \"{r}\"}}}}")),
        (
            window.clone(),
            prop::sample::select(vec!["1m", "1h", "2d"]),
            op.clone(),
            0u32..3
        )
            .prop_map(|(w, m, o, n)| format!(
                "{{fraud_count: {{window: {w}, mature_after: {m}, {o}: {n}}}}}"
            )),
        (
            window.clone(),
            prop::sample::select(vec!["1m", "1h", "2d"]),
            op.clone(),
            prop::sample::select(vec!["0.1", "0.5", "1", "0"]),
            1u32..4
        )
            .prop_map(|(w, m, o, r, n)| format!(
                "{{fraud_rate: {{window: {w}, mature_after: {m}, min_count: {n}, {o}: \"{r}\"}}}}"
            )),
        (
            prop::sample::select(vec![
                "amount_to_mean",
                "amount_to_median",
                "amount_to_max",
                "amount_zscore"
            ]),
            window.clone(),
            op.clone(),
            prop::sample::select(vec!["0.5", "1", "1.5", "3", "0"]),
            1u32..4
        )
            .prop_map(|(f, w, o, r, m)| format!(
                "{{{f}: {{window: {w}, min_count: {m}, {o}: \"{r}\"}}}}"
            )),
        (
            prop::sample::select(vec!["count_in_hours", "sum_in_hours"]),
            window,
            0u32..24,
            1u32..23,
            op.clone(),
            0u32..3
        )
            .prop_map(|(f, w, a, d, o, n)| format!(
                "{{{f}: {{window: {w}, from: \"{a:02}:00\", to: \"{:02}:00\", {o}: {}}}}}",
                (a + d) % 24,
                if f == "sum_in_hours" {
                    format!("\"{}\"", n * 400)
                } else {
                    n.to_string()
                }
            )),
        (
            prop::sample::select(vec!["increasing_streak", "decreasing_streak"]),
            op.clone(),
            0u32..4
        )
            .prop_map(|(f, o, n)| format!("{{{f}: {{{o}: {n}}}}}")),
        (op.clone(), prop::sample::select(vec!["1h", "2d", "30d"]))
            .prop_map(|(o, d)| format!("{{since_last_transaction: {{{o}: {d}}}}}")),
        (
            prop::sample::select(vec!["trend_1m_vs_3m", "trend_mom", "trend_3m_vs_prev_3m"]),
            prop::sample::select(vec!["count", "sum"]),
            op.clone(),
            prop::sample::select(vec!["0.5", "1", "130%", "3"])
        )
            .prop_map(|(f, of, o, r)| format!("{{{f}: {{of: {of}, {o}: \"{r}\"}}}}")),
        (op.clone(), prop::sample::select(vec!["0.2", "1", "40%"]))
            .prop_map(|(o, r)| format!("{{monthly_count_cv: {{{o}: \"{r}\"}}}}")),
        (op, 540i64..680).prop_map(|(o, n)| format!("{{score: {{{o}: {n}}}}}")),
    ]
}

fn loan_condition() -> impl Strategy<Value = String> {
    nested(loan_leaf(), 2, 8, 3, 2)
}

/// A characteristic: a bare feature and ascending cut points.
fn characteristic() -> impl Strategy<Value = String> {
    let feature = prop_oneof![
        Just(("{ count: { window: 30d } }", vec!["2", "5", "10"])),
        Just(("{ failed_count: { window: 90d } }", vec!["1", "3"])),
        Just(("{ flagged_count: { window: 30d } }", vec!["1"])),
        Just((
            "{ drawn_to_limit: { window: 30d } }",
            vec!["\"30%\"", "\"80%\""]
        )),
        Just((
            "{ count_in_hours: { window: 30d, from: \"01:00\", to: \"05:00\" } }",
            vec!["1", "4"]
        )),
        Just(("{ trend_1m_vs_3m: { of: count } }", vec!["0.5", "1.5"])),
        Just((
            "{ mean_amount: { window: 90d } }",
            vec!["\"100\"", "\"500.50\""]
        )),
        Just(("{ since_last_transaction: {} }", vec!["1d", "7d"])),
    ];
    (feature, prop::collection::vec(-30i64..30, 4), any::<bool>()).prop_map(
        |((f, cuts), points, missing)| {
            let mut bins = Vec::new();
            for (i, p) in points.iter().take(cuts.len() + 1).enumerate() {
                let from = if i > 0 {
                    format!("from: {}, ", cuts[i - 1])
                } else {
                    String::new()
                };
                let below = cuts
                    .get(i)
                    .map(|c| format!("below: {c}, "))
                    .unwrap_or_default();
                bins.push(format!("{{ {from}{below}points: {p} }}"));
            }
            if missing {
                bins.push(format!("{{ missing: true, points: {} }}", points[3]));
            }
            format!(
                "    - name: c\n      feature: {f}\n      bins: [{}]\n",
                bins.join(", ")
            )
        },
    )
}

fn loan_rule_file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            (
                loan_condition(),
                prop::sample::select(vec!["allow", "review", "deny", "tag"]),
                prop::bool::weighted(0.2),
            ),
            1..6,
        ),
        prop::collection::vec(characteristic(), 1..4),
        prop::sample::select(vec!["Asia/Shanghai", "America/New_York", "Europe/London"]),
    )
        .prop_map(|(rules, chars, zone)| {
            let mut yaml = format!("timezone: {zone}\nrules:\n");
            for (i, (cond, action, shadow)) in rules.iter().enumerate() {
                yaml.push_str(&format!(
                    "  - id: r{i}\n    action: {action}\n    mode: {}\n    when: {cond}\n",
                    if *shadow { "shadow" } else { "enforce" }
                ));
            }
            yaml.push_str(
                "scorecard:\n  base_score: 600\n  points_to_double_odds: 20\n  characteristics:\n",
            );
            for (i, c) in chars.iter().enumerate() {
                yaml.push_str(&c.replacen("name: c", &format!("name: c{i}"), 1));
            }
            yaml
        })
}

prop_compose! {
    fn loan_event()(
        day in 0i64..300,
        minute in 0i64..1440,
        amount in prop_oneof![prop::sample::select(vec![9_900i64, 49_900, 100_000, 30_050]), 1i64..300_000],
        outcome in 0u8..4,
        decision in 0u8..3,
        id in any::<u64>(),
    ) -> Event {
        let action = match decision { 0 => Action::Allow, 1 => Action::Review, _ => Action::Deny };
        let mut e = Event::new(T0 - day * DAY - minute * MINUTE, id, Amount::from_minor(amount).unwrap(), None, action);
        e.set_outcome(match outcome { 0 => Outcome::Pending, 1 => Outcome::Settled, 2 => Outcome::Failed, _ => Outcome::Reversed });
        e
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn in_loan_features_scorecards_and_tags_equal_the_reference(
        yaml in loan_rule_file(),
        events in prop::collection::vec(loan_event(), 0..64),
        sorted in any::<bool>(),
        amount in 1i64..300_000,
        line in prop::option::of(1i64..2_000_000),
    ) {
        let set = rules::load_bytes(yaml.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        let mut events = events;
        if sorted {
            events.sort_by_key(|e| e.at);
        }
        let mut months = crate::state::months::MonthBuckets::default();
        for e in &events {
            let m = super::features::month_of(&set.valid.timezone, e.at);
            months.add(m, e.amount_minor());
        }
        let mut current = txn(T0, "1");
        current.amount = Amount::from_minor(amount).unwrap();
        let credit_line = line.map(|limit| CreditLine { limit: Amount::from_minor(limit).unwrap(), granted_at: T0 - 400 * DAY });
        let mut history = CustomerHistory::new((&events, &[]), credit_line);
        history.months = Some(&months);
        let d = evaluate(&set, &history, &current);
        let r = reference::evaluate_with(&set.valid, &reference::Inputs { events: &events, credit_line, months: true, txn: &current });
        let ids = |hits: &[u16]| hits.iter().map(|&i| set.rules[i as usize].id.to_string()).collect::<Vec<_>>();
        prop_assert_eq!(d.features.score, r.score, "{}", yaml);
        prop_assert_eq!(d.action, r.action, "{}", yaml);
        prop_assert_eq!(ids(&d.hits), r.hits, "{}", yaml);
        prop_assert_eq!(ids(&d.shadow), r.shadow, "{}", yaml);
        prop_assert_eq!(ids(&d.tags), r.tags, "{}", yaml);
        for &rule in d.hits.iter().chain(&d.tags) {
            let message = Explanation { set: &set, rule, features: &d.features, txn: Some(&current) }.to_string();
            prop_assert!(!message.is_empty());
        }
    }
}

#[test]
fn months_follow_the_rules_time_zone() {
    let set = rules::load_bytes(b"timezone: Asia/Shanghai\nrules:\n  - id: t\n    action: tag\n    when:\n      trend_mom: { of: count, at_least: 2 }\n").unwrap();
    // 2026-02-28T16:30Z is 2026-03-01 00:30 in Shanghai: March there, February in UTC.
    let edge = at("2026-02-28T16:30:00Z");
    assert_eq!(
        super::features::month_of(&set.valid.timezone, edge),
        2026 * 12 + 2
    );
    assert_eq!(
        super::features::month_of(&set.valid.timezone, edge - 1),
        2026 * 12 + 2
    );
    assert_eq!(
        super::features::month_of(&set.valid.timezone, at("2026-02-28T15:59:59Z")),
        2026 * 12 + 1
    );
    let mut months = crate::state::months::MonthBuckets::default();
    // Two transactions in (Shanghai) February, one in January.
    for t in [
        "2026-02-28T15:00:00Z",
        "2026-02-01T00:00:00+08:00",
        "2026-01-31T23:59:59+08:00",
    ] {
        months.add(super::features::month_of(&set.valid.timezone, at(t)), 100);
    }
    let mut history = CustomerHistory::EMPTY;
    history.months = Some(&months);
    let d = evaluate(&set, &history, &txn(at("2026-03-01T00:30:00+08:00"), "10"));
    assert_eq!(d.tags.len(), 1, "February (2) over January (1) is 200%");
    let f = d.features.months.unwrap();
    assert_eq!((f.counts[0], f.counts[1]), (2, 1));
    // Half an hour earlier it is still February in Shanghai: month 1 is January, month 2 empty.
    let d = evaluate(&set, &history, &txn(at("2026-02-28T23:59:59+08:00"), "10"));
    assert!(d.tags.is_empty());
}

#[test]
fn scorecard_bins_are_half_open_and_missing_has_its_own_points() {
    let yaml = "timezone: UTC\nrules:\n  - id: low\n    action: review\n    when:\n      score: { less_than: 100 }\nscorecard:\n  base_score: 100\n  points_to_double_odds: 20\n  characteristics:\n    - name: activity\n      feature: { count: { window: 1d } }\n      bins: [{ below: 3, points: -5 }, { from: 3, below: 5, points: 7 }, { from: 5, points: 11 }]\n    - name: use\n      feature: { drawn_to_limit: { window: 1d } }\n      bins: [{ below: 0.5, points: 1 }, { from: 0.5, points: 2 }, { missing: true, points: -3 }]\n";
    let set = rules::load_bytes(yaml.as_bytes()).unwrap();
    let t = at("2026-03-01T12:00:00Z");
    let score = |n: usize, line: Option<(&str, &str)>| {
        let events: Vec<Event> = (0..n)
            .map(|i| event(t - (i as i64 + 1) * MINUTE, "10"))
            .collect();
        let credit = line.map(|(limit, _)| CreditLine {
            limit: money(limit),
            granted_at: t - DAY,
        });
        let amount = line.map_or("10", |(_, a)| a);
        evaluate(
            &set,
            &CustomerHistory::new((&events, &[]), credit),
            &txn(t, amount),
        )
        .features
        .score
        .unwrap()
    };
    assert_eq!(
        score(1, None),
        100 - 5 - 3,
        "2 transactions: first bin; no line: missing"
    );
    assert_eq!(
        score(2, None),
        100 + 7 - 3,
        "3 is the first value of [3, 5)"
    );
    assert_eq!(score(4, None), 100 + 11 - 3, "5 starts the last bin");
    assert_eq!(
        score(0, Some(("100", "49.99"))),
        100 - 5 + 1,
        "49.99% is below 0.5"
    );
    assert_eq!(
        score(0, Some(("100", "50"))),
        100 - 5 + 2,
        "50% is the first value of the last bin"
    );
    let low = evaluate(&set, &CustomerHistory::EMPTY, &txn(t, "10"));
    assert_eq!(low.action, Action::Review, "score 92 is under 100");
}

#[test]
fn scorecard_validation_refuses_gaps_overlaps_and_unknown_features() {
    let card = |bins: &str| {
        format!(
            "timezone: UTC\nrules:\n  - id: a\n    action: tag\n    when:\n      score: {{ at_least: 1 }}\nscorecard:\n  base_score: 600\n  points_to_double_odds: 20\n  characteristics:\n    - name: c\n      feature: {{ count: {{ window: 1d }} }}\n      bins: [{bins}]\n"
        )
    };
    let problems = |yaml: &str| rules::load_bytes(yaml.as_bytes()).unwrap_err().problems();
    let p = problems(&card("{ below: 3, points: 1 }, { from: 4, points: 2 }"));
    assert!(p[0].message.contains("gap"), "{p:?}");
    assert_eq!(p[0].line, 13);
    let p = problems(&card("{ below: 5, points: 1 }, { from: 4, points: 2 }"));
    assert!(p[0].message.contains("overlap"), "{p:?}");
    let p = problems(&card(
        "{ from: 0, below: 5, points: 1 }, { from: 5, points: 2 }",
    ));
    assert!(
        p[0].message.contains("first bin must have no `from`"),
        "{p:?}"
    );
    let p = problems(&card(
        "{ below: 5, points: 1 }, { from: 5, below: 9, points: 2 }",
    ));
    assert!(
        p[0].message.contains("last bin must have no `below`"),
        "{p:?}"
    );
    let p = problems(&card("{ below: 5, points: 1 }, { from: 5, points: x }"));
    assert!(p[0].message.contains("points"), "{p:?}");
    let unknown = card("{ points: 1 }").replace("count: { window: 1d }", "cuont: { window: 1d }");
    assert!(
        problems(&unknown)[0]
            .message
            .contains("unknown variant `cuont`")
    );
    let with_test = card("{ points: 1 }").replace("{ window: 1d }", "{ window: 1d, at_least: 3 }");
    assert!(problems(&with_test)[0].message.contains("takes no test"));
    let no_card = "timezone: UTC\nrules:\n  - id: a\n    action: review\n    when:\n      score: { less_than: 500 }\n";
    assert!(problems(no_card)[0].message.contains("no scorecard"));
}

#[test]
fn tag_rules_tag_without_deciding() {
    let yaml = "timezone: UTC\nrules:\n  - id: big_spender\n    action: tag\n    when:\n      amount: { at_least: 100 }\n";
    let set = rules::load_bytes(yaml.as_bytes()).unwrap();
    let d = evaluate(&set, &CustomerHistory::EMPTY, &txn(0, "150"));
    assert_eq!(d.action, Action::Allow);
    assert!(d.hits.is_empty());
    assert_eq!(d.tags.as_slice(), &[0]);
}

#[test]
fn amount_statistics_match_hand_computed_figures() {
    let yaml = "timezone: UTC\nrules:\n  - id: m\n    action: tag\n    when:\n      median_amount: { window: 1d, equals: \"25\" }\n  - id: p\n    action: tag\n    when:\n      p25_amount: { window: 1d, equals: \"17.5\" }\n  - id: s\n    action: tag\n    when:\n      stddev_amount: { window: 1d, more_than: \"14.14\" }\n  - id: s2\n    action: tag\n    when:\n      stddev_amount: { window: 1d, less_than: \"14.15\" }\n  - id: mm\n    action: tag\n    when:\n      mean_minus_median: { window: 1d, equals: \"0\" }\n";
    let set = rules::load_bytes(yaml.as_bytes()).unwrap();
    let t = at("2026-03-01T12:00:00Z");
    // 10, 20, 30, 40 (history) and the current 50... use 10, 20, 30, 40 + current: no — make the
    // window hold 10, 20, 30, 40 with the current amount as one of them.
    let events = [
        event(t - MINUTE, "10"),
        event(t - 2 * MINUTE, "20"),
        event(t - 3 * MINUTE, "40"),
    ];
    let d = evaluate(
        &set,
        &CustomerHistory::new((&events, &[]), None),
        &txn(t, "30"),
    );
    // Amounts 10, 20, 30, 40: median 25, p25 at rank 0.75 = 17.5, population stddev √125 ≈ 11.18.
    let tags: Vec<&str> = d.tags.iter().map(|&i| &*set.rules[i as usize].id).collect();
    assert_eq!(tags, vec!["m", "p", "s2", "mm"]);
}

#[test]
fn amounts_against_the_customers_own_history_match_hand_computed_figures() {
    let rule =
        |id: &str, cond: &str| format!("  - id: {id}\n    action: tag\n    when:\n      {cond}\n");
    let yaml = format!(
        "timezone: UTC\nrules:\n{}{}{}{}{}{}{}",
        rule(
            "median_x4_5",
            "amount_to_median: { window: 1d, at_least: \"4.5\" }"
        ),
        rule(
            "median_over",
            "amount_to_median: { window: 1d, more_than: \"4.5\" }"
        ),
        rule(
            "mean_x4_5",
            "amount_to_mean: { window: 1d, equals: \"4.5\" }"
        ),
        rule("max_x3", "amount_to_max: { window: 1d, equals: 3 }"),
        rule(
            "z_above_8_5",
            "amount_zscore: { window: 1d, more_than: \"8.5\" }"
        ),
        rule(
            "z_below_8_6",
            "amount_zscore: { window: 1d, less_than: \"8.6\" }"
        ),
        rule(
            "needs_four",
            "amount_to_median: { window: 1d, min_count: 4, at_least: 0 }"
        ),
    );
    let set = rules::load_bytes(yaml.as_bytes()).unwrap();
    let t = at("2026-03-01T12:00:00Z");
    let events = [
        event(t - MINUTE, "10"),
        event(t - 2 * MINUTE, "20"),
        event(t - 3 * MINUTE, "30"),
        // Outside the day: not an earlier transaction of this window.
        event(t - 2 * DAY, "1"),
    ];
    let history = CustomerHistory::new((&events, &[]), None);
    let d = evaluate(&set, &history, &txn(t, "90"));
    // Earlier amounts 10, 20, 30: median 20, mean 20, max 30, population stddev √(200/3) ≈
    // 8.165, so 90 is 4.5× the median and the mean, 3× the max, and z = 70 / 8.165 ≈ 8.573.
    let tags: Vec<&str> = d.tags.iter().map(|&i| &*set.rules[i as usize].id).collect();
    assert_eq!(
        tags,
        vec![
            "median_x4_5",
            "mean_x4_5",
            "max_x3",
            "z_above_8_5",
            "z_below_8_6"
        ]
    );
    // A first transaction has nothing to be compared with: every such feature is missing.
    let d = evaluate(&set, &CustomerHistory::EMPTY, &txn(t, "90"));
    assert!(d.tags.is_empty());
    // Equal earlier amounts: any larger amount is infinitely many deviations above them.
    let flat = [event(t - MINUTE, "20"), event(t - 2 * MINUTE, "20")];
    let d = evaluate(
        &set,
        &CustomerHistory::new((&flat, &[]), None),
        &txn(t, "21"),
    );
    let tags: Vec<&str> = d.tags.iter().map(|&i| &*set.rules[i as usize].id).collect();
    assert!(
        tags.contains(&"z_above_8_5") && !tags.contains(&"z_below_8_6"),
        "{tags:?}"
    );
    let bad = "timezone: UTC\nrules:\n  - id: a\n    action: tag\n    when:\n      amount_to_median: { window: 1d, min_count: 0, at_least: 3 }\n  - id: b\n    action: tag\n    when:\n      count: { window: 1d, min_count: 2, at_least: 3 }\n";
    let p = rules::load_bytes(bad.as_bytes()).unwrap_err().problems();
    assert!(p[0].message.contains("`min_count`"), "{p:?}");
    assert!(
        p[1].message
            .contains("`min_count` does not apply to `count`"),
        "{p:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A point's distance to itself, answered without the haversine, is what the haversine
    /// gives (including at the poles, the antimeridian and negative zero).
    #[test]
    fn the_distance_of_a_point_to_itself_is_the_haversines(
        lat in prop_oneof![-90.0f64..=90.0, Just(90.0), Just(-90.0), Just(-0.0)],
        lon in prop_oneof![-180.0f64..=180.0, Just(180.0), Just(-180.0), Just(-0.0)],
    ) {
        use geo::{Distance, Haversine, Point};
        let p = GeoPoint { lat, lon };
        let haversine = Haversine.distance(Point::new(lon, lat), Point::new(lon, lat));
        prop_assert_eq!(super::features::distance_m(p, p), haversine.round() as i64);
        let q = GeoPoint { lat: -lat, lon: -lon };
        if lat == 0.0 && lon == 0.0 {
            // 0.0 and -0.0 are the same place, and compare equal.
            prop_assert_eq!(super::features::distance_m(p, q), 0);
        }
    }

    /// The median from a guess is the median from a sort, whether the guess is one of the
    /// amounts, next to one, the true median, or anywhere.
    #[test]
    fn the_median_from_a_guess_is_the_median_from_a_sort(
        amounts in prop_oneof![
            prop::collection::vec(0i64..6, 1..12),
            prop::collection::vec(0i64..1_000, 1..80),
            // Around the 32-bit lanes' limit, and past the most they take.
            prop::collection::vec((1i64 << 31) - 4..(1i64 << 31) + 4, 1..12),
            prop::collection::vec(0i64..1_000, 120..140),
            prop::collection::vec(0i64..(1 << 48), 1..80),
        ],
        guess in (any::<prop::sample::Index>(), -2i64..=2, 0u8..5),
    ) {
        let expected = super::features::amount_stats(&mut amounts.clone()).q50_x4;
        let (index, delta, how) = guess;
        let pivot = match how {
            0 => amounts[index.index(amounts.len())] + delta,
            1 => expected / 4 + delta,
            2 => expected / 4,
            3 => index.index(2_000) as i64 - 500,
            _ => [i64::MIN, i64::MAX][index.index(2)],
        };
        prop_assert_eq!(super::features::median_x4(&mut amounts.clone(), pivot), expected);
    }

    /// The speed between two located events is the distance over the time, rounded to the
    /// nearest metre an hour, as 128-bit arithmetic gives it, from a microsecond apart to years.
    #[test]
    fn travel_speed_is_the_exact_rounded_quotient(
        lat in -90.0f64..=90.0,
        lon in -180.0f64..=180.0,
        elapsed in prop_oneof![1i64..1_000, 1i64..(1 << 40), 1i64..i64::MAX / 2],
    ) {
        let from = crate::txn::GeoPoint { lat: 0.0, lon: 0.0 };
        let to = crate::txn::GeoPoint { lat, lon };
        let t = super::features::travel(from, 0, to, elapsed);
        let (num, den) = (i128::from(t.distance_m) * 3_600_000_000, i128::from(elapsed));
        let expected = i64::try_from((num + den / 2) / den).unwrap_or(i64::MAX);
        prop_assert_eq!(t.speed_m_per_h, expected);
    }
}

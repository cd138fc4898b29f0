//! Shared by the benches: generated rule files.
#![allow(dead_code, unreachable_pub)]

/// A valid rules file with `n` rules over a spread of features, windows and lists, the way a
/// large production rule set mixes them.
pub fn generated_rules(n: usize) -> String {
    let windows = ["1m", "5m", "10m", "30m", "1h", "2h", "6h", "1d"];
    let mut yaml = String::from(
        "timezone: Asia/Shanghai\nlists:\n  sensitive_amounts: [99, 199, 499, 999, 1999, 4999]\n  risky_channels: [web, ussd]\nrules:\n",
    );
    for i in 0..n {
        let w = windows[i % windows.len()];
        let k = 3 + i % 7;
        let action = ["review", "deny", "review", "allow"][i % 4];
        let when = match i % 8 {
            0 => format!("count: {{ window: {w}, at_least: {k} }}"),
            1 => format!("sum: {{ window: {w}, more_than: \"{}\" }}", 1000 * k),
            2 => format!("same_amount_count: {{ window: {w}, at_least: {k} }}"),
            3 => format!(
                "all: [{{ amount: {{ in: sensitive_amounts }} }}, {{ list_count: {{ window: {w}, list: sensitive_amounts, at_least: {} }} }}]",
                k - 1
            ),
            4 => format!(
                "all: [{{ speed_kmh: {{ more_than: {} }} }}, {{ distance_km: {{ more_than: {} }} }}]",
                500 + 50 * k,
                10 * k
            ),
            5 => format!(
                "local_time: {{ from: \"{:02}:00\", to: \"{:02}:30\" }}",
                i % 24,
                (i + 3) % 24
            ),
            6 => format!(
                "any: [{{ failed_count: {{ window: {w}, at_least: {k} }} }}, {{ channel: {{ in: risky_channels }} }}]"
            ),
            _ => format!(
                "all: [{{ since_credit_grant: {{ less_than: {w} }} }}, {{ amount_to_limit: {{ at_least: \"0.{k}\" }} }}]"
            ),
        };
        yaml.push_str(&format!(
            "  - id: rule_{i:04}\n    description: generated rule {i}\n    action: {action}\n    when: {{ {when} }}\n"
        ));
    }
    yaml
}

/// The median of some figures (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

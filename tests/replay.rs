//! `tripwire gen` and `tripwire replay` through the real binary, on generated history whose
//! injected fraud is known exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tripwire-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rules() -> String {
    format!("{}/rules.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs the binary, which must succeed, and parses the JSON it prints.
fn run_json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn generate(path: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "gen",
        "--customers",
        "200",
        "--days",
        "30",
        "--seed",
        "7",
        "--out",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_json(&args)
}

fn replay_json(args: &[&str]) -> Value {
    let mut all = vec!["replay", "--rules"];
    let rules = rules();
    all.push(&rules);
    all.push("--json");
    all.extend_from_slice(args);
    run_json(&all)
}

/// Hits of `rule` in a report's per-rule list (`rules`, or `candidate_rules`).
fn hits(rules: &Value, rule: &str) -> u64 {
    rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == rule)
        .unwrap()["hits"]
        .as_u64()
        .unwrap()
}

#[test]
fn replay_catches_exactly_the_injected_fraud() {
    let d = dir("exact");
    let csv = d.join("history.csv");
    let m = generate(&csv, &[]);
    assert_eq!(m["transactions"], 5988);
    let report = replay_json(&[csv.to_str().unwrap()]);
    assert_eq!(report["transactions"], m["transactions"]);
    let n = |k: &str| m[k].as_u64().unwrap();
    assert_eq!(
        hits(&report["rules"], "night_window"),
        5 * n("night_bursts")
    );
    assert_eq!(hits(&report["rules"], "velocity_burst"), n("night_bursts"));
    assert_eq!(
        hits(&report["rules"], "impossible_travel"),
        n("impossible_travel")
    );
    assert_eq!(
        hits(&report["rules"], "repeated_equal_amount"),
        n("equal_amount_runs")
    );
    assert_eq!(
        hits(&report["rules"], "full_limit_after_grant"),
        n("full_limit_after_grant")
    );
    assert_eq!(
        hits(&report["rules"], "sensitive_amounts"),
        n("sensitive_probes")
    );
    let labels = &report["labels"];
    assert_eq!(labels["fraud"], m["fraud_transactions"]);
    // Denied: the fifth of each burst, each impossible journey, the third of each run, each
    // full-limit drawdown. Reviewed too: the other night transactions and the second probe.
    let denied = n("night_bursts")
        + n("impossible_travel")
        + n("equal_amount_runs")
        + n("full_limit_after_grant");
    let flagged = 5 * n("night_bursts")
        + n("impossible_travel")
        + n("equal_amount_runs")
        + n("full_limit_after_grant")
        + n("sensitive_probes");
    assert_eq!(labels["deny"]["true_positives"], denied);
    assert_eq!(labels["deny"]["false_positives"], 0);
    assert_eq!(labels["review_or_deny"]["true_positives"], flagged);
    assert_eq!(labels["review_or_deny"]["precision"], 1.0);
    let recall = flagged as f64 / n("fraud_transactions") as f64;
    assert!((labels["review_or_deny"]["recall"].as_f64().unwrap() - recall).abs() < 1e-12);
    assert_eq!(report["decisions"]["deny"], denied);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_candidate_shows_exactly_which_decisions_change() {
    let d = dir("against");
    let csv = d.join("history.csv");
    let m = generate(&csv, &[]);
    let candidate = d.join("candidate.yaml");
    let text = std::fs::read_to_string(rules()).unwrap();
    std::fs::write(
        &candidate,
        text.replace(
            "count: { window: 10m, at_least: 5 }",
            "count: { window: 10m, at_least: 4 }",
        ),
    )
    .unwrap();
    let report = replay_json(&[
        "--against",
        candidate.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);
    let changes = &report["changes"];
    // The fourth transaction of each night burst was reviewed (night) and is now denied.
    assert_eq!(changes["changed"], m["night_bursts"]);
    assert_eq!(changes["counts"]["review→deny"], m["night_bursts"]);
    let example = &changes["examples"][0];
    assert!(
        example["customer_id"]
            .as_str()
            .unwrap()
            .starts_with("f-night-")
    );
    assert_eq!(example["candidate_reasons"][1], "velocity_burst");
    assert!(example["source"].as_str().unwrap().contains("history.csv:"));
    // The candidate's own figures: its burst rule fires on the fourth and the fifth of each
    // burst, every other rule as live, and its denials catch one more fraud per burst.
    let n = |k: &str| m[k].as_u64().unwrap();
    let candidate_hits = |rule: &str| hits(&changes["candidate_rules"], rule);
    assert_eq!(candidate_hits("velocity_burst"), 2 * n("night_bursts"));
    for rule in [
        "night_window",
        "impossible_travel",
        "full_limit_after_grant",
    ] {
        assert_eq!(candidate_hits(rule), hits(&report["rules"], rule), "{rule}");
    }
    let live_deny = report["labels"]["deny"]["true_positives"].as_u64().unwrap();
    assert_eq!(
        changes["candidate_labels"]["deny"]["true_positives"],
        live_deny + n("night_bursts")
    );
    assert_eq!(changes["candidate_labels"]["deny"]["false_positives"], 0);
    assert_eq!(
        changes["candidate_labels"]["review_or_deny"],
        report["labels"]["review_or_deny"]
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn json_lines_and_gzip_give_the_same_decisions_and_every_decision_can_be_written() {
    let d = dir("formats");
    let csv = d.join("history.csv");
    let jsonl = d.join("history.jsonl.gz");
    generate(&csv, &[]);
    generate(&jsonl, &["--format", "jsonl", "--gzip"]);
    assert_eq!(&std::fs::read(&jsonl).unwrap()[..2], &[0x1f, 0x8b], "gzip");
    let decisions = d.join("decisions.jsonl");
    let a = replay_json(&[
        "--decisions",
        decisions.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);
    let b = replay_json(&[jsonl.to_str().unwrap()]);
    assert_eq!(a["decisions"], b["decisions"]);
    assert_eq!(a["rules"], b["rules"]);
    let lines: Vec<Value> = std::fs::read_to_string(&decisions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, a["transactions"].as_u64().unwrap());
    let denied = lines.iter().filter(|l| l["decision"] == "deny").count() as u64;
    assert_eq!(denied, a["decisions"]["deny"].as_u64().unwrap());
    assert!(lines.iter().all(|l| l["score"].is_i64()));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn malformed_rows_are_named_by_line_and_skipped_or_fatal() {
    let d = dir("bad");
    let csv = d.join("bad.csv");
    std::fs::write(
        &csv,
        "customer_id,transaction_id,timestamp,amount\nc1,t1,2026-03-01T10:00:00Z,10.00\nc1,t2,yesterday,10.00\nc1,t3,2026-03-01T10:01:00Z,12.345\nc1,t4,2026-03-01T10:02:00Z,11\n",
    )
    .unwrap();
    let rules = rules();
    let out = run(&["replay", "--rules", &rules, "--json", csv.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.csv:3: timestamp"), "{stderr}");
    assert!(stderr.contains("bad.csv:4: amount"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["transactions"].as_u64(),
            report["skipped_rows"].as_u64()
        ),
        (Some(2), Some(2))
    );

    let out = run(&[
        "replay",
        "--rules",
        &rules,
        "--on-error",
        "fail",
        csv.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.csv:3: timestamp"));

    let missing = d.join("missing.csv");
    std::fs::write(
        &missing,
        "customer,transaction_id,timestamp,amount\nc1,t1,2026-03-01T10:00:00Z,10\n",
    )
    .unwrap();
    let out = run(&["replay", "--rules", &rules, missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no column \"customer_id\" for customer_id"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_real_export_is_read_through_a_column_mapping() {
    let d = dir("mapping");
    let csv = d.join("export.csv");
    // Epoch milliseconds, other column names, a label column of yes/no.
    let mut text = String::from("cust_no,txn_ref,ts_ms,amt,fraud_flag\n");
    for i in 0..5 {
        text.push_str(&format!(
            "k9,r{i},{},{}.00,{}\n",
            1_772_330_400_000i64 + i * 60_000,
            10 + i,
            if i == 4 { "yes" } else { "no" }
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let mapping = d.join("mapping.toml");
    std::fs::write(&mapping, "time_format = \"epoch_ms\"\n[columns]\ncustomer_id = \"cust_no\"\ntransaction_id = \"txn_ref\"\ntimestamp = \"ts_ms\"\n").unwrap();
    let report = replay_json(&[
        "--mapping",
        mapping.to_str().unwrap(),
        "--column",
        "amount=amt",
        "--column",
        "label=fraud_flag",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(report["transactions"], 5);
    // 2026-03-01T02:00:00Z is 10:00 in Shanghai; five in five minutes: the fifth is denied.
    assert_eq!(hits(&report["rules"], "velocity_burst"), 1);
    assert_eq!(report["labels"]["deny"]["recall"], 1.0);
    std::fs::remove_dir_all(&d).ok();
}

/// Minor units of a decimal string with at most two decimals.
fn cents(s: &str) -> i64 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<2}");
    whole.parse::<i64>().unwrap() * 100 + frac[..2].parse::<i64>().unwrap()
}

#[test]
fn every_figure_of_the_report_adds_up_from_the_decisions_and_the_labels() {
    let d = dir("figures");
    let csv = d.join("history.csv");
    generate(&csv, &[]);
    let decisions = d.join("decisions.jsonl");
    let report = replay_json(&[
        "--decisions",
        decisions.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);

    // Labels and amounts straight from the file, by transaction id.
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (id_col, amount_col, label_col) = (col("transaction_id"), col("amount"), col("is_fraud"));
    let mut truth = std::collections::HashMap::new();
    for record in reader.records() {
        let record = record.unwrap();
        truth.insert(
            record[id_col].to_string(),
            (cents(&record[amount_col]), &record[label_col] == "1"),
        );
    }
    let fraud = truth.values().filter(|(_, f)| *f).count() as u64;
    let legit = truth.len() as u64 - fraud;
    let fraud_amount: i64 = truth.values().filter(|(_, f)| *f).map(|(a, _)| a).sum();
    let labels = &report["labels"];
    assert_eq!(labels["fraud"], fraud);
    assert_eq!(
        cents(labels["fraud_amount"].as_str().unwrap()),
        fraud_amount
    );

    // Per rule and per outcome, from every decision written.
    #[derive(Default)]
    struct Tally {
        hits: u64,
        fraud_hits: u64,
        legit_hits: u64,
        amount: i64,
    }
    let mut per_rule: std::collections::HashMap<String, Tally> = Default::default();
    let (mut deny, mut flagged) = (Tally::default(), Tally::default());
    let lines = std::fs::read_to_string(&decisions).unwrap();
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let (amount, is_fraud) = truth[v["transaction_id"].as_str().unwrap()];
        let count = |t: &mut Tally| {
            t.hits += 1;
            if is_fraud {
                t.fraud_hits += 1;
                t.amount += amount;
            } else {
                t.legit_hits += 1;
            }
        };
        for key in ["reasons", "shadow", "tags"] {
            for rule in v[key].as_array().unwrap() {
                count(per_rule.entry(rule.as_str().unwrap().into()).or_default());
            }
        }
        match v["decision"].as_str().unwrap() {
            "deny" => {
                count(&mut deny);
                count(&mut flagged);
            }
            "review" => count(&mut flagged),
            _ => {}
        }
    }
    assert_eq!(
        lines.lines().count() as u64,
        report["transactions"].as_u64().unwrap()
    );
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    // serde_json reads floats back to within a unit in the last place, not always exactly.
    let same = |got: &Value, want: f64| (got.as_f64().unwrap() - want).abs() <= 1e-15;
    for rule in report["rules"].as_array().unwrap() {
        let id = rule["id"].as_str().unwrap();
        let t = per_rule.remove(id).unwrap_or_default();
        assert_eq!(rule["hits"], t.hits, "{id}");
        assert_eq!(rule["fraud_hits"], t.fraud_hits, "{id}");
        assert_eq!(rule["legit_hits"], t.legit_hits, "{id}");
        assert_eq!(
            cents(rule["fraud_amount_caught"].as_str().unwrap()),
            t.amount,
            "{id}"
        );
        if t.hits > 0 {
            assert!(
                same(&rule["precision"], ratio(t.fraud_hits, t.hits)),
                "{id}"
            );
        }
        assert!(same(&rule["recall"], ratio(t.fraud_hits, fraud)), "{id}");
        assert!(
            same(&rule["false_positive_rate"], ratio(t.legit_hits, legit)),
            "{id}"
        );
    }
    assert!(
        per_rule.is_empty(),
        "hits of unknown rules: {:?}",
        per_rule.keys()
    );
    for (key, t) in [("deny", &deny), ("review_or_deny", &flagged)] {
        let o = &labels[key];
        assert_eq!(o["true_positives"], t.fraud_hits, "{key}");
        assert_eq!(o["false_positives"], t.legit_hits, "{key}");
        assert!(same(&o["recall"], ratio(t.fraud_hits, fraud)), "{key}");
        assert!(
            same(&o["false_positive_rate"], ratio(t.legit_hits, legit)),
            "{key}"
        );
        assert_eq!(
            cents(o["fraud_amount_caught"].as_str().unwrap()),
            t.amount,
            "{key}"
        );
    }
    // The table shows the same figures.
    let rules_path = rules();
    let out = run(&["replay", "--rules", &rules_path, csv.to_str().unwrap()]);
    let table = String::from_utf8(out.stdout).unwrap();
    for rule in report["rules"].as_array().unwrap() {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == rule["id"].as_str())
            .unwrap_or_else(|| panic!("no row for {} in\n{table}", rule["id"]));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[3], rule["hits"].to_string(), "{row}");
        assert_eq!(
            cells.last().copied(),
            rule["fraud_amount_caught"].as_str(),
            "{row}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn gen_writes_to_standard_output_with_out_dash() {
    let out = run(&["gen", "--customers", "20", "--days", "2", "--out", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.starts_with("transaction_id,customer_id,timestamp,amount"),
        "{csv}"
    );
    let manifest: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(
        manifest["transactions"].as_u64().unwrap() as usize,
        csv.lines().count() - 1
    );
    assert!(!Path::new("-").exists(), "no file named -");
}

#[test]
fn a_short_csv_row_is_named_for_what_it_is() {
    let dir = dir("short-row");
    let csv = dir.join("short.csv");
    std::fs::write(
        &csv,
        "transaction_id,customer_id,timestamp,amount\nt1,c1,2026-03-01T10:00:00Z,5.00\nt2,c1\n",
    )
    .unwrap();
    let rules = rules();
    let out = run(&["replay", "--rules", &rules, csv.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("short.csv:3: the row has 2 fields and the header 4"),
        "{stderr}"
    );
}

#[test]
fn from_and_until_measure_a_period_and_earlier_rows_only_warm_the_state() {
    let dir = dir("period");
    let csv = dir.join("history.csv");
    generate(&csv, &[]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let from = tripwire::txn::parse_timestamp("2026-03-11T00:00:00Z").unwrap();
    let until = tripwire::txn::parse_timestamp("2026-03-21T00:00:00Z").unwrap();
    let times: Vec<i64> = text
        .lines()
        .skip(1)
        .map(|l| tripwire::txn::parse_timestamp(l.split(',').nth(2).unwrap()).unwrap())
        .collect();
    let before = times.iter().filter(|&&t| t < from).count() as u64;
    let within = times.iter().filter(|&&t| t >= from && t < until).count() as u64;
    let report = replay_json(&[
        "--from",
        "2026-03-11",
        "--until",
        "2026-03-21T00:00:00Z",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(report["transactions"], within);
    assert_eq!(report["warmup_rows"], before);
    assert_eq!(report["measured_from"], "2026-03-11T00:00:00Z");
    let decided: u64 = report["decisions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(decided, within, "only the period is counted");

    let out = run(&[
        "replay",
        "--rules",
        &rules(),
        "--from",
        "2026-03-21",
        "--until",
        "2026-03-11",
        csv.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until: must be after --from"));
}

#[test]
fn group_by_splits_recall_by_pattern() {
    let dir = dir("groups");
    let csv = dir.join("history.csv");
    let manifest = generate(&csv, &[]);
    let report = replay_json(&["--group-by", "pattern", csv.to_str().unwrap()]);
    let groups = report["groups"].as_array().expect("groups in the report");
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["equal", "grant", "night", "probe", "travel"]);
    let fraud: u64 = groups.iter().map(|g| g["fraud"].as_u64().unwrap()).sum();
    assert_eq!(fraud, manifest["fraud_transactions"].as_u64().unwrap());
    let night = &groups[2];
    assert!(
        night["rules"]["night_window"].as_f64().unwrap() > 0.9,
        "{night}"
    );
    assert!(night["rules"].get("impossible_travel").is_none(), "{night}");
}

/// The card profile: fraud that only history-aware rules catch, legitimate look-alikes, and
/// labels that reach the rules only through `--label-delay`.
#[test]
fn card_history_is_caught_by_history_rules_and_labels_only_help_once_delayed() {
    let d = dir("card");
    let csv = d.join("card.csv");
    let args = [
        "gen",
        "--profile",
        "card",
        "--customers",
        "600",
        "--days",
        "60",
        "--seed",
        "5",
        "--out",
        csv.to_str().unwrap(),
    ];
    let manifest = run_json(&args);
    let again = d.join("again.csv");
    let mut same = args;
    same[10] = again.to_str().unwrap();
    assert_eq!(run_json(&same), manifest, "seeded");
    assert_eq!(std::fs::read(&csv).unwrap(), std::fs::read(&again).unwrap());
    for pattern in ["amount", "customer", "terminal", "ring"] {
        assert!(
            manifest["fraud_by_pattern"][pattern].as_u64().unwrap() > 0,
            "{manifest}"
        );
    }
    for kind in ["large_purchase", "night_shift", "subscription"] {
        assert!(
            manifest["look_alikes"][kind].as_u64().unwrap() > 0,
            "{manifest}"
        );
    }
    let rules = format!("{}/examples/card/rules.yaml", env!("CARGO_MANIFEST_DIR"));
    let replay = |extra: &[&str]| {
        let mut all = vec![
            "replay",
            "--rules",
            &rules,
            "--json",
            "--group-by",
            "pattern",
        ];
        all.extend_from_slice(extra);
        all.push(csv.to_str().unwrap());
        run_json(&all)
    };
    let blind = replay(&[]);
    let told = replay(&["--label-delay", "7d"]);
    assert!(
        blind["amounts_normalised"].as_u64().unwrap() > 0,
        "float-noise amounts are read"
    );
    assert_eq!(blind["skipped_rows"], 0);
    // Without the delay, labels never reach the rules: the terminal rule cannot fire.
    assert_eq!(hits(&blind["rules"], "compromised_terminal"), 0);
    assert!(hits(&told["rules"], "compromised_terminal") > 0);
    let labels = &told["labels"]["review_or_deny"];
    let (recall, fp) = (
        labels["recall"].as_f64().unwrap(),
        labels["false_positive_rate"].as_f64().unwrap(),
    );
    // Not perfect either way: look-alikes are flagged and some fraud is missed.
    assert!(recall > 0.5 && recall < 1.0, "{labels}");
    assert!(fp > 0.0 && fp < 0.05, "{labels}");
    let group = |name: &str| {
        told["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap()["recall"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(group("amount"), 1.0, "every amount over 220");
    assert!(
        group("customer") > 0.6,
        "the jump against the customer's own median"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// Replay splits customers across threads, with one ordered pass for entity state, when no
/// transaction id repeats: every decision, and so every figure, must be the one-thread
/// replay's, with entity windows and fraud labels coming due, and with a candidate.
#[test]
fn replay_split_across_threads_decides_exactly_as_one_thread() {
    let d = dir("split");
    let csv = d.join("card.csv");
    run_json(&[
        "gen",
        "--profile",
        "card",
        "--customers",
        "300",
        "--days",
        "30",
        "--seed",
        "11",
        "--out",
        csv.to_str().unwrap(),
    ]);
    let card_rules = format!("{}/examples/card/rules.yaml", env!("CARGO_MANIFEST_DIR"));
    let replay = |threads: &str, input: &Path| {
        let decisions = d.join(format!("decisions-{threads}.jsonl"));
        let rules = rules();
        let threads_flag: &[&str] = match threads {
            "default" => &[],
            n => &["--threads", n],
        };
        let out = Command::new(BIN)
            .arg("replay")
            .args(threads_flag)
            .args([
                "--rules",
                &card_rules,
                "--against",
                &rules,
                "--label-delay",
                "7d",
                "--group-by",
                "pattern",
                "--json",
                "--decisions",
                decisions.to_str().unwrap(),
                input.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
        for timing in ["seconds", "per_second"] {
            report.as_object_mut().unwrap().remove(timing);
        }
        (report, std::fs::read(&decisions).unwrap())
    };
    let (one, one_decisions) = replay("0", &csv);
    assert!(one["transactions"].as_u64().unwrap() > 10_000, "{one}");
    assert!(
        hits(&one["rules"], "compromised_terminal") > 0,
        "entity windows fire"
    );
    // One part beside the entity pass; more parts than cores; the default (one per core).
    for threads in ["1", "3", "8", "default"] {
        let (split, split_decisions) = replay(threads, &csv);
        assert_eq!(split, one, "{threads} customer parts");
        assert!(
            split_decisions == one_decisions,
            "{threads} customer parts: the decision files differ"
        );
    }
    // Decisions that cannot be written stop the split replay with the error: the threads
    // deciding ahead are stopped, not left waiting.
    let mut full = Command::new(BIN)
        .args(["replay", "--rules", &card_rules, "--decisions", "/dev/full"])
        .arg(&csv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while full.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the replay did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let full = full.wait_with_output().unwrap();
    assert!(!full.status.success());
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(stderr.contains("cannot write decisions"), "{stderr}");
    // A repeated transaction id can only be told a duplicate by its customer's state: such
    // input is replayed on one thread, with the same answer as asked for one.
    let text = std::fs::read_to_string(&csv).unwrap();
    let repeated = d.join("repeated.csv");
    let second_row = text.lines().nth(1).unwrap();
    std::fs::write(&repeated, format!("{text}{second_row}\n")).unwrap();
    let (one, one_decisions) = replay("0", &repeated);
    assert_eq!(one["duplicates"], 1, "{one}");
    let (split, split_decisions) = replay("2", &repeated);
    assert_eq!(split, one);
    assert!(split_decisions == one_decisions);
    std::fs::remove_dir_all(&d).ok();
}

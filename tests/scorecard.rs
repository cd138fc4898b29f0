//! `tripwire scorecard fit` through the real binary: the fitted card loads where rules load, and
//! `replay` (the engine `serve` runs) scores every training and test row exactly as the fit did.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tripwire-scorecard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn example(file: &str) -> String {
    format!("{}/examples/card/{file}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_fitted_scorecard_scores_every_row_in_serve_exactly_as_the_fit_did() {
    let d = dir("fit");
    let csv = d.join("card.csv");
    let (fitted, scores, decisions) = (
        d.join("fitted.yaml"),
        d.join("scores.jsonl"),
        d.join("d.jsonl"),
    );
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();
    run(&[
        "gen",
        "--profile",
        "card",
        "--customers",
        "400",
        "--days",
        "50",
        "--seed",
        "11",
        "--out",
        &p(&csv),
    ]);
    let out = run(&[
        "scorecard",
        "fit",
        "--rules",
        &example("rules.yaml"),
        "--characteristics",
        &example("characteristics.yaml"),
        "--label-delay",
        "7d",
        "--train-from",
        "2026-03-15",
        "--train-until",
        "2026-04-05",
        "--test-from",
        "2026-04-05",
        "--test-until",
        "2026-04-19",
        "--min-bin-share",
        "0.01",
        "--out",
        &p(&fitted),
        "--scores",
        &p(&scores),
        "--json",
        &p(&csv),
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let train_auc = report["train"]["auc"].as_f64().unwrap();
    let test_auc = report["test"]["auc"].as_f64().unwrap();
    assert!(train_auc > 0.75 && test_auc > 0.7, "{report:#}");
    assert!(
        report["psi_test_vs_train"].as_f64().unwrap() < 0.25,
        "{report:#}"
    );
    let kept: Vec<&Value> = report["characteristics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kept"] == true)
        .collect();
    assert!(
        kept.iter().any(|c| c["name"] == "terminal_fraud_rate_28d"),
        "{report:#}"
    );
    assert!(
        report["characteristics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kept"] == false),
        "weak characteristics are dropped: {report:#}"
    );

    // `check` accepts it, and replay through the serving engine gives every row its score.
    let checked = run(&["check", &p(&fitted)]);
    assert!(String::from_utf8_lossy(&checked.stdout).contains(": ok:"));
    run(&[
        "replay",
        "--rules",
        &p(&fitted),
        "--label-delay",
        "7d",
        "--decisions",
        &p(&decisions),
        &p(&csv),
    ]);
    let served: HashMap<String, i64> = std::fs::read_to_string(&decisions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["transaction_id"].as_str().unwrap().to_string(),
                v["score"].as_i64().unwrap(),
            )
        })
        .collect();
    let fitted_scores: Vec<Value> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        fitted_scores.len() as u64,
        report["train_rows"].as_u64().unwrap() + report["test_rows"].as_u64().unwrap()
    );
    let mut periods = (0, 0);
    for s in &fitted_scores {
        let id = s["transaction_id"].as_str().unwrap();
        assert_eq!(served[id], s["score"].as_i64().unwrap(), "{s}");
        if s["period"] == "test" {
            periods.1 += 1;
        } else {
            periods.0 += 1;
        }
    }
    assert!(periods.0 > 1000 && periods.1 > 500, "{periods:?}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_characteristics_and_periods_are_refused_with_a_clear_error() {
    let d = dir("refused");
    let chars = d.join("chars.yaml");
    std::fs::write(
        &chars,
        "characteristics:\n  - { name: x, feature: { cuont: { window: 1d } } }\n",
    )
    .unwrap();
    let csv = d.join("h.csv");
    std::fs::write(
        &csv,
        "transaction_id,customer_id,timestamp,amount,is_fraud\n",
    )
    .unwrap();
    let fit = |chars: &str, train_until: &str| {
        Command::new(BIN)
            .args([
                "scorecard",
                "fit",
                "--rules",
                &example("rules.yaml"),
                "--characteristics",
                chars,
                "--train-from",
                "2026-03-01",
                "--train-until",
                train_until,
                csv.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let out = fit(chars.to_str().unwrap(), "2026-04-01");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cuont"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fit(&example("characteristics.yaml"), "2026-02-01");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--train-until"));
    std::fs::remove_dir_all(&d).ok();
}

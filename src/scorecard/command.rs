//! The `tripwire scorecard fit` command: flags, the pipeline (see the module above), the
//! fitted rules file and the report.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::binning::{self, Binned};
use super::logistic;
use super::quality::{self, Quality};
use crate::engine::{self, Value};
use crate::live_rules::LiveRules;
use crate::replay::command::{
    ColumnArgs, CommandError, HistoryInput, load_rows, load_rules_text, output_error, period_bound,
    stdout_error,
};
use crate::replay::{ReplayConfig, ReplayError};
use crate::rules::ir::{Unit, unit_of};
use crate::txn::{Amount, EventTime};

/// Flags of `tripwire scorecard fit`.
#[derive(Clone, Debug, clap::Args)]
pub struct FitArgs {
    /// The rules file the scorecard will live in (its time zone, lists and rules shape the features).
    #[arg(long)]
    pub rules: PathBuf,
    /// YAML: `characteristics:` a list of `{ name, feature }`, the feature written as in the scorecard section.
    #[arg(long)]
    pub characteristics: PathBuf,
    /// History files (CSV or JSON Lines, plain or gzip), with labels.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// How the history's columns are read, as for replay.
    #[command(flatten)]
    pub columns: ColumnArgs,
    /// Turn each labelled fraud into a confirmed-fraud report this long after its transaction, as replay does.
    #[arg(long)]
    pub label_delay: Option<String>,
    /// Threads deciding customers while the features are read, as in replay [default: chosen from the cores]; 0: one thread.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub threads: Option<u16>,
    /// Training period start (RFC 3339 or YYYY-MM-DD); earlier rows warm the state.
    #[arg(long)]
    pub train_from: String,
    /// Training period end, exclusive.
    #[arg(long)]
    pub train_until: String,
    /// Test period start.
    #[arg(long)]
    pub test_from: Option<String>,
    /// Test period end, exclusive.
    #[arg(long)]
    pub test_until: Option<String>,
    /// Score at the base odds.
    #[arg(long, default_value_t = 600)]
    pub base_score: i64,
    /// Good:bad odds at the base score.
    #[arg(long, default_value_t = 50)]
    pub base_odds: i64,
    /// Points that double the odds.
    #[arg(long, default_value_t = 20)]
    pub points_to_double_odds: i64,
    /// Smallest share of the training rows a bin may hold.
    #[arg(long, default_value_t = 0.05)]
    pub min_bin_share: f64,
    /// Characteristics with a lower information value are dropped.
    #[arg(long, default_value_t = 0.02)]
    pub min_iv: f64,
    /// Write the rules file with the fitted scorecard here (default: print the scorecard section).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write every training and test row's score as a JSON line (transaction_id, customer_id, score, period).
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep the test rows of customers already known compromised (a fraud label visible before the test period starts); by default they are left out, as practitioners evaluate.
    #[arg(long)]
    pub keep_known_compromised: bool,
    /// Write a self-contained HTML report here: ROC and KS curves, score histograms, bad rate by band, IV bars, bin tables.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CharacteristicsFile {
    characteristics: Vec<CharacteristicDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CharacteristicDoc {
    name: String,
    feature: serde_json::Value,
}

/// One characteristic's fit.
#[derive(Clone, Debug, Serialize)]
pub struct CharacteristicFit {
    /// Its name.
    pub name: String,
    /// Information value on the training rows.
    pub iv: f64,
    /// Kept in the scorecard (IV at or above the threshold).
    pub kept: bool,
    /// Regression coefficient on its WOE (kept characteristics).
    pub coefficient: Option<f64>,
    /// Bins with WOE and, when kept, points.
    pub bins: Vec<BinFit>,
}

/// One bin of a characteristic's fit.
#[derive(Clone, Debug, Serialize)]
pub struct BinFit {
    /// The bin and its training counts and WOE.
    #[serde(flatten)]
    pub bin: binning::Bin,
    /// Points, when the characteristic is kept.
    pub points: Option<i64>,
}

/// What a fit reports.
#[derive(Clone, Debug, Serialize)]
pub struct FitReport {
    /// Labelled rows in the training period.
    pub train_rows: u64,
    /// Labelled rows in the test period.
    pub test_rows: u64,
    /// Rows of either period without a label, left out.
    pub unlabelled_rows: u64,
    /// Test rows of customers already known compromised when the test period starts, left out
    /// (unless `--keep-known-compromised`).
    pub test_rows_known_compromised: u64,
    /// Intercept of the regression.
    pub intercept: f64,
    /// Base score of the fitted card (the points at zero WOE).
    pub base_score: i64,
    /// Per characteristic.
    pub characteristics: Vec<CharacteristicFit>,
    /// Score quality on the training rows.
    pub train: Quality,
    /// Score quality on the test rows, when there is a test period.
    pub test: Option<Quality>,
    /// Score band cuts (deciles of the training scores).
    pub band_cuts: Vec<i64>,
    /// Training share per band.
    pub train_shares: Vec<f64>,
    /// Test share per band.
    pub test_shares: Vec<f64>,
    /// Training bad rate per band.
    pub train_bad_rates: Vec<f64>,
    /// Test bad rate per band.
    pub test_bad_rates: Vec<f64>,
    /// PSI of the test scores against the training scores.
    pub psi_test_vs_train: Option<f64>,
    /// A benchmark: logistic regression on the raw characteristics (standardised, missing
    /// values at the mean with a missing indicator), all of them, no binning — what an
    /// independent model on the same features reaches. Train and test quality.
    pub benchmark: Option<(Quality, Option<Quality>)>,
    /// Seconds the whole fit took.
    pub seconds: f64,
}

/// The benchmark regression on raw characteristics (see [`FitReport::benchmark`]).
fn benchmark(kept: &[Kept], n_chars: usize) -> (Quality, Option<Quality>) {
    let train: Vec<&Kept> = kept.iter().filter(|k| !k.test).collect();
    // Per characteristic: mean and spread on the training rows, and whether any is missing.
    let stats: Vec<(f64, f64, bool)> = (0..n_chars)
        .map(|i| {
            let vals: Vec<f64> = train
                .iter()
                .filter_map(|k| k.values[i].map(Value::approx))
                .collect();
            let n = vals.len().max(1) as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            (mean, var.sqrt().max(1e-12), vals.len() < train.len())
        })
        .collect();
    let row = |k: &Kept| -> Vec<f64> {
        let mut x = Vec::with_capacity(2 * n_chars);
        for (i, &(mean, sd, has_missing)) in stats.iter().enumerate() {
            let v = k.values[i].map(Value::approx);
            x.push(v.map_or(0.0, |v| ((v - mean) / sd).clamp(-50.0, 50.0)));
            if has_missing {
                x.push(f64::from(u8::from(v.is_none())));
            }
        }
        x
    };
    let x: Vec<Vec<f64>> = train.iter().map(|k| row(k)).collect();
    let y: Vec<bool> = train.iter().map(|k| k.bad).collect();
    let beta = logistic::fit(&x, &y);
    let score = |k: &Kept| {
        let z = beta[0]
            + row(k)
                .iter()
                .zip(&beta[1..])
                .map(|(a, b)| a * b)
                .sum::<f64>();
        // Higher score, lower risk, as the card's.
        (-z * 1e6).round() as i64
    };
    let scored = |test: bool| -> Vec<(i64, bool)> {
        kept.iter()
            .filter(|k| k.test == test)
            .map(|k| (score(k), k.bad))
            .collect()
    };
    let test = scored(true);
    (
        quality::quality(&scored(false)),
        (!test.is_empty()).then(|| quality::quality(&test)),
    )
}

/// A labelled row kept for the fit: its values, its label, which period.
struct Kept {
    transaction_id: Box<str>,
    customer_id: Box<str>,
    values: Vec<Option<Value>>,
    bad: bool,
    test: bool,
}

fn fit_error(message: impl Into<String>) -> CommandError {
    CommandError::Flag {
        flag: "--characteristics",
        message: message.into(),
    }
}

/// Writes a whole number in a feature's unit as its threshold text, or `None` when the unit
/// cannot write it (a negative ratio).
fn threshold_text(unit: Unit, v: i64) -> Option<String> {
    match unit {
        Unit::Count | Unit::Hour | Unit::Points => Some(v.to_string()),
        Unit::Money => Amount::from_minor(v).map(|a| a.to_string()),
        Unit::SignedMoney => Some(if v < 0 {
            format!("-{}", Amount::from_minor(-v)?)
        } else {
            Amount::from_minor(v)?.to_string()
        }),
        Unit::Km => (v >= 0).then(|| format!("{}.{:03}", v / 1000, v % 1000)),
        Unit::Duration => (v > 0).then(|| format!("{}ms", (v + 999) / 1000)),
        Unit::Ratio => (v >= 0).then(|| format!("{}.{:06}", v / 1_000_000, v % 1_000_000)),
    }
}

/// Replaces (or adds) the top-level `scorecard:` section of a rules file's text.
fn with_scorecard(rules: &str, section: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in rules.lines() {
        let top_level = !line.starts_with([' ', '\t', '#']) && !line.is_empty();
        if top_level {
            skipping = line.starts_with("scorecard:");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(section);
    out
}

/// Runs `tripwire scorecard fit`.
pub fn fit(args: &FitArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CommandError> {
    let started = std::time::Instant::now();
    let rules_text = load_rules_text(&args.rules)?;
    let chars_text = std::fs::read_to_string(&args.characteristics).map_err(|e| {
        fit_error(format!(
            "cannot read {}: {e}",
            args.characteristics.display()
        ))
    })?;
    let chars: CharacteristicsFile = serde_saphyr::from_str(&chars_text)
        .map_err(|e| fit_error(format!("{}: {e}", args.characteristics.display())))?;
    if chars.characteristics.is_empty() {
        return Err(fit_error("no characteristics"));
    }
    let bound =
        |flag, text: &Option<String>| text.as_deref().map(|t| period_bound(flag, t)).transpose();
    let train = (
        period_bound("--train-from", &args.train_from)?,
        period_bound("--train-until", &args.train_until)?,
    );
    let test = match (
        bound("--test-from", &args.test_from)?,
        bound("--test-until", &args.test_until)?,
    ) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        _ => {
            return Err(CommandError::Flag {
                flag: "--test-from",
                message: "--test-from and --test-until go together".into(),
            });
        }
    };
    for (flag, (from, until)) in [("--train-until", Some(train)), ("--test-until", test)]
        .into_iter()
        .filter_map(|(f, p)| p.map(|p| (f, p)))
    {
        if from >= until {
            return Err(CommandError::Flag {
                flag,
                message: "must be after the period's start".into(),
            });
        }
    }
    let label_delay = crate::replay::command::label_delay(args.label_delay.as_deref())?;

    // The rules with a placeholder scorecard holding every characteristic: the features are
    // computed by the engine exactly as they will be served. (JSON is YAML.)
    let mut doc: serde_json::Value = serde_saphyr::from_slice(&rules_text)
        .map_err(|e| fit_error(format!("{}: {e}", args.rules.display())))?;
    let placeholder: Vec<serde_json::Value> = chars
        .characteristics
        .iter()
        .map(|c| {
            serde_json::json!({ "name": c.name, "feature": c.feature, "bins": [{ "points": "0" }] })
        })
        .collect();
    doc["scorecard"] = serde_json::json!({
        "base_score": "0", "points_to_double_odds": "1", "characteristics": placeholder,
    });
    let probe_text = serde_json::to_string(&doc).map_err(|e| fit_error(e.to_string()))?;
    let probe = LiveRules::new(probe_text.as_bytes(), "characteristics").map_err(|e| {
        fit_error(format!(
            "the characteristics do not compile with the rules: {e}"
        ))
    })?;
    let loaded = probe.load_full();
    let valid_card = loaded
        .set
        .valid
        .scorecard
        .as_ref()
        .expect("a scorecard was added");
    let units: Vec<Unit> = valid_card
        .characteristics
        .iter()
        .map(|c| unit_of(c.feature).unwrap_or(Unit::Count))
        .collect();

    let (mut rows, _bad) = load_rows(
        &HistoryInput {
            files: &args.files,
            columns: &args.columns,
            group_by: None,
            fatal: false,
        },
        err,
    )?;
    crate::replay::sort(&mut rows);
    let end = test.map_or(train.1, |t| t.1.max(train.1));
    let rows = &rows[..rows.partition_point(|r| r.at < end)];
    let in_period = |at: EventTime, (from, until): (EventTime, EventTime)| at >= from && at < until;
    let mut kept: Vec<Kept> = Vec::new();
    let mut unlabelled = 0u64;
    // When each customer's first fraud label became known (its time plus the label delay).
    let mut known_at: std::collections::HashMap<Box<str>, EventTime> =
        std::collections::HashMap::new();
    let config = ReplayConfig {
        label_delay,
        threads: args.threads.map(usize::from),
        ..ReplayConfig::default()
    };
    crate::replay::run_one(
        probe_text.as_bytes(),
        "fit",
        rows,
        &config,
        // The card's characteristic values of a labelled row in a period, decided fresh.
        |row, decided, set| {
            let in_a_period =
                in_period(row.at, train) || test.is_some_and(|t| in_period(row.at, t));
            let (Ok(decision), Some(_), true) = (decided, row.label, in_a_period) else {
                return None;
            };
            let card = set.scorecard.as_ref().expect("a scorecard was added");
            Some(
                card.characteristics
                    .iter()
                    .map(|c| engine::slot_value(c.slot, &decision.features))
                    .collect(),
            )
        },
        |row, values, _| {
            if row.label == Some(true) {
                let known = row.at.saturating_add(label_delay.unwrap_or(0));
                known_at
                    .entry(row.customer_id().into())
                    .and_modify(|k| *k = (*k).min(known))
                    .or_insert(known);
            }
            let is_train = in_period(row.at, train);
            let is_test = test.is_some_and(|t| in_period(row.at, t));
            if !is_train && !is_test {
                return Ok(());
            }
            unlabelled += u64::from(row.label.is_none());
            if let (Some(values), Some(label)) = (values, row.label) {
                kept.push(Kept {
                    transaction_id: row.transaction_id().into(),
                    customer_id: row.customer_id().into(),
                    values,
                    bad: label,
                    test: !is_train,
                });
            }
            Ok(())
        },
    )
    .map_err(|e: ReplayError| CommandError::Replay(e))?;
    // As practitioners evaluate: customers whose fraud was already known when the test period
    // began would be blocked by then, so their test rows say nothing about the card.
    let mut known_compromised = 0u64;
    if let (Some((test_from, _)), false) = (test, args.keep_known_compromised) {
        kept.retain(|k| {
            let drop = k.test
                && known_at
                    .get(&k.customer_id)
                    .is_some_and(|&at| at < test_from);
            known_compromised += u64::from(drop);
            !drop
        });
    }
    let train_rows: Vec<&Kept> = kept.iter().filter(|k| !k.test).collect();
    if train_rows.iter().all(|k| k.bad) || train_rows.iter().all(|k| !k.bad) {
        return Err(fit_error(format!(
            "the training period holds {} labelled rows, and they are not both good and bad",
            train_rows.len()
        )));
    }

    // Bin every characteristic on the training rows.
    let approx = |v: &Option<Value>| v.map(Value::approx);
    let binned: Vec<Binned> = (0..units.len())
        .map(|i| {
            let pairs: Vec<(Option<f64>, bool)> = train_rows
                .iter()
                .map(|k| (approx(&k.values[i]), k.bad))
                .collect();
            binning::bin(&pairs, args.min_bin_share)
        })
        .collect();
    let kept_chars: Vec<usize> = (0..units.len())
        .filter(|&i| binned[i].iv >= args.min_iv)
        .collect();
    if kept_chars.is_empty() {
        return Err(fit_error(format!(
            "no characteristic reaches the information value threshold {} (--min-iv)",
            args.min_iv
        )));
    }
    let x: Vec<Vec<f64>> = train_rows
        .iter()
        .map(|k| {
            kept_chars
                .iter()
                .map(|&i| binned[i].woe_of(approx(&k.values[i])))
                .collect()
        })
        .collect();
    let y: Vec<bool> = train_rows.iter().map(|k| k.bad).collect();
    let beta = logistic::fit(&x, &y);

    // Points: score = offset + factor × ln(good:bad odds), ln(odds) = −(β0 + Σ βj·WOE).
    let factor = args.points_to_double_odds as f64 / std::f64::consts::LN_2;
    let offset = args.base_score as f64 - factor * (args.base_odds as f64).ln();
    let base = (offset - factor * beta[0]).round() as i64;
    let mut section = format!(
        "scorecard:\n  base_score: {base}\n  base_odds: {}\n  points_to_double_odds: {}\n  characteristics:\n",
        args.base_odds, args.points_to_double_odds
    );
    let mut fits = Vec::new();
    for (i, c) in chars.characteristics.iter().enumerate() {
        let position = kept_chars.iter().position(|&k| k == i);
        let coefficient = position.map(|p| beta[p + 1]);
        let mut bins = Vec::new();
        let mut yaml_bins = Vec::new();
        for b in &binned[i].bins {
            let points = coefficient.map(|c| (-factor * c * b.woe).round() as i64);
            if let Some(p) = points {
                let text = if b.missing {
                    Some(format!("{{ missing: true, points: {p} }}"))
                } else {
                    let from = b.from.map(|v| threshold_text(units[i], v));
                    let below = b.below.map(|v| threshold_text(units[i], v));
                    match (from, below) {
                        (Some(None), _) | (_, Some(None)) => None,
                        (from, below) => {
                            let mut parts = Vec::new();
                            if let Some(Some(f)) = from {
                                parts.push(format!("from: \"{f}\""));
                            }
                            if let Some(Some(b)) = below {
                                parts.push(format!("below: \"{b}\""));
                            }
                            parts.push(format!("points: {p}"));
                            Some(format!("{{ {} }}", parts.join(", ")))
                        }
                    }
                };
                match text {
                    Some(t) => yaml_bins.push(t),
                    None => {
                        return Err(fit_error(format!(
                            "characteristic `{}`: a bin bound cannot be written in its unit",
                            c.name
                        )));
                    }
                }
            }
            bins.push(BinFit {
                bin: b.clone(),
                points,
            });
        }
        if coefficient.is_some() {
            let feature =
                serde_json::to_string(&c.feature).map_err(|e| fit_error(e.to_string()))?;
            section.push_str(&format!(
                "    - name: {}\n      feature: {feature}\n      bins:\n",
                serde_json::to_string(&c.name).map_err(|e| fit_error(e.to_string()))?
            ));
            for b in &yaml_bins {
                section.push_str(&format!("        - {b}\n"));
            }
        }
        fits.push(CharacteristicFit {
            name: c.name.clone(),
            iv: binned[i].iv,
            kept: coefficient.is_some(),
            coefficient,
            bins,
        });
    }

    // The fitted rules file, compiled as `check` and `serve` compile it; every row is scored
    // with the function `serve` scores with.
    let fitted_text = with_scorecard(
        std::str::from_utf8(&rules_text).map_err(|_| fit_error("the rules file is not UTF-8"))?,
        &section,
    );
    let fitted = LiveRules::new(fitted_text.as_bytes(), "fitted").map_err(|e| {
        fit_error(format!(
            "the fitted scorecard does not load (a bug): {e}\n{section}"
        ))
    })?;
    let fitted = fitted.load_full();
    let fitted_card = fitted.set.scorecard.as_ref().expect("written above");
    let score =
        |k: &Kept| engine::score_values(fitted_card, kept_chars.iter().map(|&i| k.values[i]));
    let scored: Vec<(i64, bool, bool)> = kept.iter().map(|k| (score(k), k.bad, k.test)).collect();
    let train_scored: Vec<(i64, bool)> =
        scored.iter().filter(|s| !s.2).map(|s| (s.0, s.1)).collect();
    let test_scored: Vec<(i64, bool)> = scored.iter().filter(|s| s.2).map(|s| (s.0, s.1)).collect();
    let train_scores: Vec<i64> = train_scored.iter().map(|s| s.0).collect();
    let test_scores: Vec<i64> = test_scored.iter().map(|s| s.0).collect();
    let cuts = quality::bands(&train_scores);
    let train_shares = quality::shares(&train_scores, &cuts);
    let test_shares = quality::shares(&test_scores, &cuts);
    // The development distribution goes with the card, for drift monitoring in `serve`.
    section.push_str("  development:\n    band_cuts: [");
    section.push_str(
        &cuts
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    );
    section.push_str("]\n    shares: [");
    section.push_str(
        &train_shares
            .iter()
            .map(|s| format!("\"{:.6}\"", s))
            .collect::<Vec<_>>()
            .join(", "),
    );
    section.push_str("]\n");
    let fitted_text = with_scorecard(
        std::str::from_utf8(&rules_text).map_err(|_| fit_error("the rules file is not UTF-8"))?,
        &section,
    );
    LiveRules::new(fitted_text.as_bytes(), "fitted").map_err(|e| {
        fit_error(format!(
            "the fitted scorecard does not load (a bug): {e}\n{section}"
        ))
    })?;
    let report = FitReport {
        train_rows: train_scored.len() as u64,
        test_rows: test_scored.len() as u64,
        unlabelled_rows: unlabelled,
        test_rows_known_compromised: known_compromised,
        intercept: beta[0],
        base_score: base,
        characteristics: fits,
        train: quality::quality(&train_scored),
        test: test.map(|_| quality::quality(&test_scored)),
        psi_test_vs_train: test.map(|_| quality::psi(&train_shares, &test_shares)),
        train_bad_rates: quality::bad_rates(&train_scored, &cuts)
            .iter()
            .map(|b| b.1)
            .collect(),
        test_bad_rates: quality::bad_rates(&test_scored, &cuts)
            .iter()
            .map(|b| b.1)
            .collect(),
        band_cuts: cuts,
        train_shares,
        test_shares,
        benchmark: Some(benchmark(&kept, units.len())),
        seconds: started.elapsed().as_secs_f64(),
    };

    if let Some(path) = &args.html {
        std::fs::write(path, html(&report, &train_scored, &test_scored))
            .map_err(output_error(path))?;
    }
    if let Some(path) = &args.scores {
        let written = output_error(path);
        let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(&written)?);
        for (k, s) in kept.iter().zip(&scored) {
            let line = serde_json::json!({
                "transaction_id": &*k.transaction_id, "customer_id": &*k.customer_id,
                "score": s.0, "period": if k.test { "test" } else { "train" },
            });
            writeln!(w, "{line}").map_err(&written)?;
        }
        w.flush().map_err(&written)?;
    }
    match &args.out {
        Some(path) => std::fs::write(path, &fitted_text).map_err(output_error(path))?,
        None if !args.json => writeln!(out, "{section}").map_err(stdout_error)?,
        None => {}
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| stdout_error(e.into()))?;
        writeln!(out, "{text}").map_err(stdout_error)?;
    } else {
        write!(out, "{}", report.table()).map_err(stdout_error)?;
    }
    Ok(())
}

impl FitReport {
    /// The report as text.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let q = |q: &Quality| {
            format!(
                "{} rows, {} bad: AUC {:.4}, Gini {:.4}, KS {:.4}, average precision {:.4}",
                q.rows, q.bads, q.auc, q.gini, q.ks, q.average_precision
            )
        };
        s.push_str(&format!("train: {}\n", q(&self.train)));
        if let Some(t) = &self.test {
            s.push_str(&format!("test:  {}\n", q(t)));
        }
        if let Some(psi) = self.psi_test_vs_train {
            s.push_str(&format!(
                "PSI of the test scores against the training scores: {psi:.4}\n"
            ));
        }
        s.push_str(&format!(
            "{} rows left out (no label), {} test rows of customers already known compromised left out; intercept {:.4}; base score {}; fitted in {:.1} s\n\n",
            self.unlabelled_rows, self.test_rows_known_compromised, self.intercept, self.base_score, self.seconds
        ));
        s.push_str(&format!(
            "{:<28} {:>8} {:>6} {:>12}\n",
            "characteristic", "IV", "kept", "coefficient"
        ));
        for c in &self.characteristics {
            s.push_str(&format!(
                "{:<28} {:>8.4} {:>6} {:>12}\n",
                c.name,
                c.iv,
                if c.kept { "yes" } else { "no" },
                c.coefficient.map_or("-".into(), |v| format!("{v:.4}"))
            ));
            for b in &c.bins {
                let range = if b.bin.missing {
                    "missing".to_string()
                } else {
                    format!(
                        "[{}, {})",
                        b.bin.from.map_or("-inf".into(), |v| v.to_string()),
                        b.bin.below.map_or("+inf".into(), |v| v.to_string())
                    )
                };
                s.push_str(&format!(
                    "    {:<30} {:>9} rows {:>7.2}% bad  WOE {:>8.4}  points {}\n",
                    range,
                    b.bin.count,
                    100.0 * b.bin.bads as f64 / b.bin.count.max(1) as f64,
                    b.bin.woe,
                    b.points.map_or("-".into(), |p| p.to_string())
                ));
            }
        }
        s.push_str("\nscore bands (training deciles): share train / test, bad rate train / test\n");
        for i in 0..self.train_shares.len() {
            let from = if i == 0 {
                "-inf".to_string()
            } else {
                self.band_cuts[i - 1].to_string()
            };
            let below = self
                .band_cuts
                .get(i)
                .map_or("+inf".to_string(), |c| c.to_string());
            s.push_str(&format!(
                "  [{from}, {below}): {:>6.2}% / {:>6.2}%   {:>6.2}% / {:>6.2}%\n",
                100.0 * self.train_shares[i],
                100.0 * self.test_shares.get(i).copied().unwrap_or(0.0),
                100.0 * self.train_bad_rates[i],
                100.0 * self.test_bad_rates.get(i).copied().unwrap_or(0.0),
            ));
        }
        s
    }
}

/// The fit's HTML report.
fn html(report: &FitReport, train: &[(i64, bool)], test: &[(i64, bool)]) -> String {
    use crate::report::{Chart, Series, escape, page, table, thin};
    let mut roc = vec![Series {
        name: "train".into(),
        points: thin(quality::roc(train), 300),
    }];
    if !test.is_empty() {
        roc.push(Series {
            name: "test".into(),
            points: thin(quality::roc(test), 300),
        });
    }
    roc.push(Series {
        name: "chance".into(),
        points: vec![(0.0, 0.0), (1.0, 1.0)],
    });
    let cumulative = quality::cumulative(train);
    let ks = vec![
        Series {
            name: "bads".into(),
            points: thin(cumulative.iter().map(|c| (c.0 as f64, c.1)).collect(), 300),
        },
        Series {
            name: "goods".into(),
            points: thin(cumulative.iter().map(|c| (c.0 as f64, c.2)).collect(), 300),
        },
    ];
    let (lo, hi) = (
        train.iter().map(|s| s.0).min().unwrap_or(0),
        train.iter().map(|s| s.0).max().unwrap_or(1),
    );
    let hist = quality::histogram(train, ((hi - lo) / 30).max(1));
    let histogram = vec![
        Series {
            name: "goods".into(),
            points: hist.iter().map(|h| (h.0 as f64, h.1)).collect(),
        },
        Series {
            name: "bads".into(),
            points: hist.iter().map(|h| (h.0 as f64, h.2)).collect(),
        },
    ];
    let band_labels: Vec<String> = (0..report.train_shares.len())
        .map(|i| {
            if i == 0 {
                format!("< {}", report.band_cuts.first().copied().unwrap_or(0))
            } else {
                format!("≥ {}", report.band_cuts[i - 1])
            }
        })
        .collect();
    let bars = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter().enumerate().map(|(i, &r)| (i as f64, r)).collect()
    };
    let mut band_series = vec![Series {
        name: "train".into(),
        points: bars(&report.train_bad_rates),
    }];
    if !test.is_empty() {
        band_series.push(Series {
            name: "test".into(),
            points: bars(&report.test_bad_rates),
        });
    }
    let charts = vec![
        Chart {
            id: "roc".into(),
            title: "ROC".into(),
            kind: "line",
            x_label: "false-positive rate".into(),
            y_label: "true-positive rate".into(),
            labels: vec![],
            series: roc,
        },
        Chart {
            id: "ks".into(),
            title: format!("KS (train): {:.3}", report.train.ks),
            kind: "line",
            x_label: "score".into(),
            y_label: "cumulative share".into(),
            labels: vec![],
            series: ks,
        },
        Chart {
            id: "histogram".into(),
            title: "Scores of goods and bads (train)".into(),
            kind: "line",
            x_label: "score".into(),
            y_label: "share".into(),
            labels: vec![],
            series: histogram,
        },
        Chart {
            id: "bad-rate".into(),
            title: "Bad rate by score band".into(),
            kind: "bars",
            x_label: "score band".into(),
            y_label: "bad rate".into(),
            labels: band_labels,
            series: band_series,
        },
        Chart {
            id: "iv".into(),
            title: "Information value".into(),
            kind: "bars",
            x_label: "characteristic".into(),
            y_label: "IV".into(),
            labels: report
                .characteristics
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            series: vec![Series {
                name: "IV".into(),
                points: report
                    .characteristics
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i as f64, c.iv))
                    .collect(),
            }],
        },
    ];
    let q = |name: &str, q: &Quality| {
        vec![
            escape(name),
            q.rows.to_string(),
            q.bads.to_string(),
            format!("{:.4}", q.auc),
            format!("{:.4}", q.gini),
            format!("{:.4}", q.ks),
            format!("{:.4}", q.average_precision),
        ]
    };
    let mut quality_rows = vec![q("train", &report.train)];
    if let Some(t) = &report.test {
        quality_rows.push(q("test", t));
    }
    if let Some((train, test)) = &report.benchmark {
        quality_rows.push(q("benchmark train (raw logistic regression)", train));
        if let Some(t) = test {
            quality_rows.push(q("benchmark test", t));
        }
    }
    let mut summary = String::from("<div class=\"summary\">");
    summary.push_str(&table(
        &[
            "sample",
            "rows",
            "bads",
            "AUC",
            "Gini",
            "KS",
            "average precision",
        ],
        &quality_rows,
    ));
    if let Some(psi) = report.psi_test_vs_train {
        summary.push_str(&format!(
            "<p>PSI of the test scores against the training scores: {psi:.4}</p>"
        ));
    }
    summary.push_str("</div>");
    let mut tables = String::from("<h2>Characteristics</h2>");
    for c in &report.characteristics {
        tables.push_str(&format!(
            "<h3>{} — IV {:.4}{}</h3>",
            escape(&c.name),
            c.iv,
            match c.coefficient {
                Some(b) => format!(", coefficient {b:.4}"),
                None => ", dropped".into(),
            }
        ));
        let rows: Vec<Vec<String>> = c
            .bins
            .iter()
            .map(|b| {
                vec![
                    if b.bin.missing {
                        "missing".into()
                    } else {
                        escape(&format!(
                            "[{}, {})",
                            b.bin.from.map_or("-inf".into(), |v| v.to_string()),
                            b.bin.below.map_or("+inf".into(), |v| v.to_string())
                        ))
                    },
                    b.bin.count.to_string(),
                    format!(
                        "{:.2}%",
                        100.0 * b.bin.bads as f64 / b.bin.count.max(1) as f64
                    ),
                    format!("{:.4}", b.bin.woe),
                    b.points.map_or("-".into(), |p| p.to_string()),
                ]
            })
            .collect();
        tables.push_str(&table(&["bin", "rows", "bad rate", "WOE", "points"], &rows));
    }
    page("Scorecard fit", &summary, &charts, &tables)
}

//! The scorecard step of validation: base score and odds, characteristics with their
//! features, and bins that do not overlap.

use std::collections::HashMap;

use serde_saphyr::Spanned;

use super::{Validator, at};
use crate::rules::ir::*;
use crate::rules::schema::{BinDoc, Condition, ScorecardDoc};

impl<'f> Validator<'f> {
    fn integer(&mut self, value: &Spanned<String>, what: &str, positive: bool) -> Option<i64> {
        match value.value.trim().parse::<i64>() {
            Ok(n) if n.abs() <= 1_000_000 && (!positive || n > 0) => Some(n),
            _ => {
                self.problems.push(at(
                    value,
                    format!(
                        "{what} must be a whole number{}, got {:?}",
                        if positive { " above zero" } else { "" },
                        value.value
                    ),
                ));
                None
            }
        }
    }

    pub(super) fn scorecard(&mut self, doc: &'f Spanned<ScorecardDoc>) -> Option<ValidScorecard> {
        let before = self.problems.len();
        let d = &doc.value;
        let base_score = self.integer(&d.base_score, "base_score", false);
        let pdo = self.integer(&d.points_to_double_odds, "points_to_double_odds", true);
        let base_odds = match &d.base_odds {
            Some(o) => self.integer(o, "base_odds", true),
            None => None,
        };
        if d.characteristics.is_empty() {
            self.problems
                .push(at(doc, "the scorecard needs at least one characteristic"));
        }
        let mut names: HashMap<&str, u64> = HashMap::new();
        let mut characteristics = Vec::new();
        for c in &d.characteristics {
            let c = &c.value;
            if let Some(first) = names.insert(&c.name.value, c.name.referenced.line()) {
                self.problems.push(at(
                    &c.name,
                    format!(
                        "duplicate characteristic `{}` (first on line {first})",
                        c.name.value
                    ),
                ));
            }
            let (name, test) = match &c.feature.value {
                Condition::All(_) | Condition::Any(_) | Condition::Not(_) => {
                    self.problems.push(at(
                        &c.feature,
                        "a scorecard feature is one feature with its parameters, not a combination",
                    ));
                    continue;
                }
                _ => match self.condition_name(&c.feature.value) {
                    Some(pair) => pair,
                    None => continue,
                },
            };
            if name == "score" {
                self.problems.push(at(
                    &c.feature,
                    "the score cannot be a characteristic of itself",
                ));
                continue;
            }
            let Some((feature, _)) = self.feature(&c.feature, name, test, true) else {
                continue;
            };
            let unit = unit_of(feature).unwrap_or(Unit::Count);
            let mut bins: Vec<(Bin, &Spanned<BinDoc>)> = Vec::new();
            let mut missing_points = 0;
            let mut missing_seen = false;
            let bins_before = self.problems.len();
            for bin in &c.bins {
                let b = &bin.value;
                let points = self.integer(&b.points, "points", false);
                if b.missing == Some(true) {
                    if b.from.is_some() || b.below.is_some() {
                        self.problems
                            .push(at(bin, "a `missing` bin takes no `from` or `below`"));
                    }
                    if missing_seen {
                        self.problems.push(at(bin, "more than one `missing` bin"));
                    }
                    missing_seen = true;
                    missing_points = points.unwrap_or(0);
                    continue;
                }
                let from = b.from.as_ref().map(|f| self.threshold(f, unit, name));
                let below = b.below.as_ref().map(|f| self.threshold(f, unit, name));
                if matches!(from, Some(None)) || matches!(below, Some(None)) || points.is_none() {
                    continue;
                }
                let (from, below) = (from.flatten(), below.flatten());
                if let (Some(f), Some(t)) = (from, below)
                    && f >= t
                {
                    self.problems
                        .push(at(bin, "a bin's `from` must be below its `below`"));
                    continue;
                }
                bins.push((
                    Bin {
                        from,
                        below,
                        points: points.unwrap_or(0),
                    },
                    bin,
                ));
            }
            bins.sort_by_key(|(b, _)| b.from.map_or(i128::MIN, i128::from));
            if self.problems.len() > bins_before {
                // A bin that did not parse would only add confusing gap reports.
                continue;
            }
            if bins.is_empty() {
                self.problems.push(at(
                    &c.name,
                    format!("characteristic `{}` has no range bins", c.name.value),
                ));
            }
            if let Some((first, span)) = bins.first()
                && first.from.is_some()
            {
                self.problems.push(at(
                    *span,
                    "gap: the first bin must have no `from` so that every value falls in a bin",
                ));
            }
            if let Some((last, span)) = bins.last()
                && last.below.is_some()
            {
                self.problems.push(at(
                    *span,
                    "gap: the last bin must have no `below` so that every value falls in a bin",
                ));
            }
            for pair in bins.windows(2) {
                let ((a, _), (b, span)) = (&pair[0], &pair[1]);
                match (a.below, b.from) {
                    (Some(end), Some(start)) if end == start => {}
                    (Some(end), Some(start)) if end > start => self.problems.push(at(
                        *span,
                        "overlap: this bin starts before the previous one ends",
                    )),
                    (None, _) => self.problems.push(at(
                        *span,
                        "overlap: the previous bin has no `below`, so it already covers this one",
                    )),
                    _ => self.problems.push(at(
                        *span,
                        "gap: this bin must start where the previous one ends (`from` = the previous `below`)",
                    )),
                }
            }
            characteristics.push(Characteristic {
                name: c.name.value.clone(),
                feature,
                bins: bins.into_iter().map(|(b, _)| b).collect(),
                missing_points,
            });
        }
        let development = d.development.as_ref().and_then(|dev| {
            let cuts: Vec<i64> = dev
                .value
                .band_cuts
                .iter()
                .filter_map(|c| self.integer(c, "band_cuts", false))
                .collect();
            let shares: Vec<i64> = dev
                .value
                .shares
                .iter()
                .filter_map(|s| match super::super::text::parse_ratio(s.value.trim()) {
                    Some(v) if v <= 1_000_000 => Some(v),
                    _ => {
                        self.problems.push(at(
                            s,
                            format!("a share must be a fraction from 0 to 1, got {:?}", s.value),
                        ));
                        None
                    }
                })
                .collect();
            if cuts.len() != dev.value.band_cuts.len() || shares.len() != dev.value.shares.len() {
                return None;
            }
            if cuts.len() > 31 {
                self.problems
                    .push(at(dev, "at most 31 band cuts (32 bands) are supported"));
                return None;
            }
            if cuts.windows(2).any(|w| w[0] >= w[1]) {
                self.problems
                    .push(at(dev, "`band_cuts` must be ascending scores"));
                return None;
            }
            if shares.len() != cuts.len() + 1 {
                self.problems.push(at(
                    dev,
                    format!(
                        "{} band cuts make {} bands, but {} shares are given",
                        cuts.len(),
                        cuts.len() + 1,
                        shares.len()
                    ),
                ));
                return None;
            }
            let total: i64 = shares.iter().sum();
            if (total - 1_000_000).abs() > 10_000 {
                self.problems.push(at(
                    dev,
                    format!("the shares add up to {:.4}, not 1", total as f64 / 1e6),
                ));
                return None;
            }
            Some(Development {
                band_cuts: cuts,
                shares,
            })
        });
        if self.problems.len() > before {
            return None;
        }
        Some(ValidScorecard {
            base_score: base_score?,
            base_odds,
            points_to_double_odds: pdo?,
            characteristics,
            development,
        })
    }
}

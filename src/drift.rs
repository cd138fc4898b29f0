//! Score drift: the live scores' distribution over the development bands of the scorecard, and
//! its population stability index (PSI) against the development shares.
//!
//! The window is the last 10,000 to 15,000 scored decisions: two halves of 5,000 counted in
//! atomics (one increment per decision), the older half dropped when the newer fills. Counts
//! start over when a rule set with other bands goes live. Reading: below 0.1 stable, 0.1 to
//! 0.25 worth watching, above 0.25 the population has moved and the card should be rebuilt.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::live_rules::LoadedRules;
use crate::rules::ir::Development;

/// Decisions in each half of the window.
pub const HALF_WINDOW: u64 = 5_000;
const MAX_BANDS: usize = 32;

/// Live score counts per development band.
#[derive(Debug)]
pub struct ScoreDrift {
    /// The rules version (sequence) the counts are for.
    rules_seq: AtomicU64,
    halves: [[AtomicU64; MAX_BANDS]; 2],
    /// Which half is filling.
    current: AtomicUsize,
    in_current: AtomicU64,
}

impl Default for ScoreDrift {
    fn default() -> ScoreDrift {
        ScoreDrift {
            rules_seq: AtomicU64::new(0),
            halves: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            current: AtomicUsize::new(0),
            in_current: AtomicU64::new(0),
        }
    }
}

/// The drift figures at one moment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DriftReport {
    /// Band cuts (scores).
    pub band_cuts: Vec<i64>,
    /// Development share per band.
    pub development_shares: Vec<f64>,
    /// Live share per band over the window.
    pub live_shares: Vec<f64>,
    /// Scored decisions in the window.
    pub live_decisions: u64,
    /// PSI of the live shares against the development shares (`None` before any decision).
    pub psi: Option<f64>,
    /// `stable` (below 0.1), `watch` (0.1 to 0.25) or `rebuild` (above 0.25).
    pub reading: Option<&'static str>,
}

/// PSI of `actual` against `expected` shares (the scorecard fit's, so that `serve` and the fit
/// agree), empty bands floored at 0.0001.
pub use crate::scorecard::quality::psi;

fn reading(psi: f64) -> &'static str {
    if psi < 0.1 {
        "stable"
    } else if psi <= 0.25 {
        "watch"
    } else {
        "rebuild"
    }
}

impl ScoreDrift {
    fn reset_for(&self, seq: u64) {
        if self.rules_seq.swap(seq, Ordering::AcqRel) != seq {
            for half in &self.halves {
                for c in half {
                    c.store(0, Ordering::Relaxed);
                }
            }
            self.in_current.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one live score under `rules` (nothing without a development distribution).
    pub fn observe(&self, rules: &LoadedRules, score: i64) {
        let Some(dev) = development(rules) else {
            return;
        };
        if self.rules_seq.load(Ordering::Acquire) != rules.version.seq {
            self.reset_for(rules.version.seq);
        }
        let band = dev.band_cuts.partition_point(|&c| c <= score);
        let current = self.current.load(Ordering::Acquire);
        self.halves[current][band].fetch_add(1, Ordering::Relaxed);
        // The decision that fills the half rotates: the older half is cleared and becomes the
        // one filling. Only one decision sees the count reach the bound.
        if self.in_current.fetch_add(1, Ordering::AcqRel) + 1 == HALF_WINDOW {
            let older = 1 - current;
            for c in &self.halves[older] {
                c.store(0, Ordering::Relaxed);
            }
            self.current.store(older, Ordering::Release);
            self.in_current.fetch_sub(HALF_WINDOW, Ordering::AcqRel);
        }
    }

    /// The figures under `rules`, when its scorecard has a development distribution.
    pub fn report(&self, rules: &LoadedRules) -> Option<DriftReport> {
        let dev = development(rules)?;
        let bands = dev.shares.len();
        let same_rules = self.rules_seq.load(Ordering::Acquire) == rules.version.seq;
        let counts: Vec<u64> = (0..bands)
            .map(|b| {
                if same_rules {
                    self.halves[0][b].load(Ordering::Relaxed)
                        + self.halves[1][b].load(Ordering::Relaxed)
                } else {
                    0
                }
            })
            .collect();
        let total: u64 = counts.iter().sum();
        let development_shares: Vec<f64> = dev.shares.iter().map(|&s| s as f64 / 1e6).collect();
        let live_shares: Vec<f64> = counts
            .iter()
            .map(|&c| c as f64 / total.max(1) as f64)
            .collect();
        let psi = (total > 0).then(|| psi(&development_shares, &live_shares));
        Some(DriftReport {
            band_cuts: dev.band_cuts.clone(),
            development_shares,
            live_shares,
            live_decisions: total,
            psi,
            reading: psi.map(reading),
        })
    }
}

fn development(rules: &LoadedRules) -> Option<&Development> {
    rules.set.valid.scorecard.as_ref()?.development.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live_rules::LiveRules;

    const RULES: &str = "timezone: UTC\nrules:\n  - id: a\n    action: tag\n    when:\n      amount: { at_least: 1 }\nscorecard:\n  base_score: 600\n  points_to_double_odds: 20\n  characteristics:\n    - name: amount\n      feature: { amount: {} }\n      bins: [{ points: 0 }]\n  development:\n    band_cuts: [500, 600]\n    shares: [0.2, 0.5, 0.3]\n";

    #[test]
    fn live_shares_and_psi_follow_the_window() {
        let live = LiveRules::new(RULES.as_bytes(), "test").unwrap();
        let rules = live.load_full();
        let drift = ScoreDrift::default();
        assert_eq!(drift.report(&rules).unwrap().psi, None);
        // The development mix: PSI 0.
        for i in 0..1_000 {
            drift.observe(
                &rules,
                [450, 550, 550, 550, 550, 450, 650, 650, 650, 550][i % 10],
            );
        }
        let r = drift.report(&rules).unwrap();
        assert_eq!(r.live_decisions, 1_000);
        assert!(r.psi.unwrap() < 1e-9, "{r:?}");
        assert_eq!(r.reading, Some("stable"));
        // Then only low scores, past a whole window: the old mix is gone and PSI is high.
        for _ in 0..(3 * HALF_WINDOW) {
            drift.observe(&rules, 100);
        }
        let r = drift.report(&rules).unwrap();
        assert!(r.live_decisions <= 3 * HALF_WINDOW, "{r:?}");
        assert!(r.live_shares[0] > 0.99, "{r:?}");
        assert_eq!(r.reading, Some("rebuild"));
    }
}

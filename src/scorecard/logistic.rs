//! Logistic regression by iteratively reweighted least squares (Newton's method), written here
//! rather than taken from a crate: the fit needs a dozen coefficients over up to millions of
//! rows of a few columns, which is a few lines of exact, dependency-free linear algebra, and
//! `linfa-logistic` would bring ndarray and argmin for that. A test checks the coefficients
//! against the closed-form fit of a fixture.

// Matrix code reads best with the indices of the formulas.
#![allow(clippy::needless_range_loop)]

/// Fits `P(y = 1) = 1 / (1 + e^−(β0 + Σ βj·xj))` to the rows; returns `[β0, β1, ...]`.
/// A tiny ridge (1e-6) keeps the Newton step defined when a column is constant.
pub fn fit(rows: &[Vec<f64>], y: &[bool]) -> Vec<f64> {
    let k = rows.first().map_or(0, Vec::len) + 1;
    let mut beta = vec![0.0; k];
    for _ in 0..50 {
        let mut grad = vec![0.0; k];
        let mut hess = vec![vec![0.0; k]; k];
        for (x, &yi) in rows.iter().zip(y) {
            let z = beta[0] + x.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
            let p = 1.0 / (1.0 + (-z).exp());
            let w = (p * (1.0 - p)).max(1e-12);
            let r = f64::from(u8::from(yi)) - p;
            let xi = |j: usize| if j == 0 { 1.0 } else { x[j - 1] };
            for a in 0..k {
                grad[a] += r * xi(a);
                for b in a..k {
                    hess[a][b] += w * xi(a) * xi(b);
                }
            }
        }
        for a in 0..k {
            hess[a][a] += 1e-6;
            grad[a] -= 1e-6 * beta[a];
            for b in 0..a {
                hess[a][b] = hess[b][a];
            }
        }
        let step = solve(hess, grad);
        let size: f64 = step.iter().map(|s| s.abs()).fold(0.0, f64::max);
        for (b, s) in beta.iter_mut().zip(&step) {
            *b += s;
        }
        if size < 1e-10 {
            break;
        }
    }
    beta
}

/// Solves `a·x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            continue;
        }
        for row in col + 1..n {
            let f = a[row][col] / d;
            if f != 0.0 {
                for c in col..n {
                    a[row][c] -= f * a[col][c];
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|c| a[row][c] * x[c]).sum();
        x[row] = if a[row][row].abs() < 1e-300 {
            0.0
        } else {
            (b[row] - s) / a[row][row]
        };
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_match_the_closed_form_fit_of_a_binary_feature() {
        // x = 0: 30 bads in 100; x = 1: 60 bads in 80. The maximum-likelihood fit is
        // β0 = logit(0.3), β1 = logit(0.75) − logit(0.3).
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for (x, n, bads) in [(0.0, 100, 30), (1.0, 80, 60)] {
            for i in 0..n {
                rows.push(vec![x]);
                y.push(i < bads);
            }
        }
        let beta = fit(&rows, &y);
        let logit = |p: f64| (p / (1.0 - p)).ln();
        assert!((beta[0] - logit(0.3)).abs() < 1e-5, "{beta:?}");
        assert!(
            (beta[1] - (logit(0.75) - logit(0.3))).abs() < 1e-5,
            "{beta:?}"
        );
    }

    #[test]
    fn two_features_recover_their_generating_coefficients() {
        // A saturated design (every cell of x1 × x2) whose bad rates follow the model exactly:
        // the fit returns the generating coefficients.
        let (b0, b1, b2) = (-1.0f64, 0.8f64, -1.5f64);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for x1 in [0.0, 1.0, 2.0] {
            for x2 in [-1.0, 0.0, 1.0] {
                let p = 1.0 / (1.0 + (-(b0 + b1 * x1 + b2 * x2)).exp());
                let n = 100_000;
                let bads = (p * n as f64).round() as usize;
                for i in 0..n {
                    rows.push(vec![x1, x2]);
                    y.push(i < bads);
                }
            }
        }
        let beta = fit(&rows, &y);
        for (got, want) in beta.iter().zip([b0, b1, b2]) {
            assert!((got - want).abs() < 1e-3, "{beta:?}");
        }
    }
}

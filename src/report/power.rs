//! How many seeds a comparison needs: the power of the two-sided t-tests at the 5% level, the
//! smallest difference the seeds run so far detect with 80% power, the seeds per arm that
//! detect a given difference, and Holm's adjustment of a table's p-values.
//!
//! Power is computed as Cohen (1988, ch. 2) and statsmodels' `TTestIndPower` / `TTestPower`
//! compute it: the probability that the test statistic, noncentral t with noncentrality
//! `d * sqrt(n_eff)`, lands beyond the two-sided critical value, where `d` is the difference
//! over its standard deviation. Seeds of two arms run independently (Welch's test in the
//! table) are planned with the equal-variance two-sample design (`n_eff = n1 n2 / (n1 + n2)`,
//! `df = n1 + n2 - 2`, `d` over the pooled standard deviation); paired seeds with the one-sample
//! design on the per-seed differences (`n_eff = n`, `df = n - 1`). The noncentral t
//! distribution is the series of Lenth (1989, Applied Statistics 38:185, algorithm AS 243),
//! summed outward from its largest Poisson term so that large noncentralities do not underflow.
//! Every value is checked against statsmodels and scipy (`tests/stats/check.py` in CI, and
//! recorded values in the tests here).

use super::ttest::{incomplete_beta, ln_gamma, t_quantile_975};

/// Two-sided significance level of every test and power figure.
pub const ALPHA: f64 = 0.05;
/// The power at which a difference counts as detectable.
pub const POWER: f64 = 0.8;
/// Seeds per arm beyond which [`Design::seeds_for`] stops looking.
pub const MAX_SEEDS: usize = 100_000;

/// How the seeds of a comparison are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Two arms of independent seeds: `a` and `b` of them.
    Independent { a: usize, b: usize },
    /// `n` seeds, each run in both arms; the test is on the per-seed differences.
    Paired { n: usize },
}

impl Design {
    /// The same layout with `n` seeds in each arm.
    pub fn with_seeds(self, n: usize) -> Self {
        match self {
            Self::Independent { .. } => Self::Independent { a: n, b: n },
            Self::Paired { .. } => Self::Paired { n },
        }
    }

    /// `(n_eff, df)`: the noncentrality is `d * sqrt(n_eff)`. `None` below 2 seeds an arm.
    fn sizes(self) -> Option<(f64, f64)> {
        match self {
            Self::Independent { a, b } if a >= 2 && b >= 2 => {
                let (a, b) = (a as f64, b as f64);
                Some((a * b / (a + b), a + b - 2.0))
            }
            Self::Paired { n } if n >= 2 => Some((n as f64, n as f64 - 1.0)),
            _ => None,
        }
    }

    /// Power of the two-sided test at [`ALPHA`] against a true difference of `d` standard
    /// deviations (the sign does not matter). `None` below 2 seeds an arm.
    pub fn power(self, d: f64) -> Option<f64> {
        let (n_eff, df) = self.sizes()?;
        let crit = t_quantile_975(df);
        let delta = d.abs() * n_eff.sqrt();
        // P(T > crit) + P(T < -crit), T noncentral t(df, delta).
        let upper = 1.0 - nct_cdf(crit, df, delta);
        let lower = 1.0 - nct_cdf(crit, df, -delta);
        Some((upper + lower).clamp(0.0, 1.0))
    }

    /// The smallest difference, in standard deviations, that these seeds detect with
    /// [`POWER`] (bisection to 1e-10). `None` below 2 seeds an arm.
    pub fn detectable(self) -> Option<f64> {
        self.power(0.0)?;
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        while self.power(hi)? < POWER {
            hi *= 2.0;
        }
        while hi - lo > 1e-10 * hi {
            let mid = 0.5 * (lo + hi);
            if self.power(mid)? < POWER {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi)
    }

    /// The fewest seeds per arm (at least 2) that detect a difference of `d` standard
    /// deviations with [`POWER`]; `None` for `d == 0` or beyond [`MAX_SEEDS`].
    pub fn seeds_for(self, d: f64) -> Option<usize> {
        let d = d.abs();
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let enough = |n: usize| self.with_seeds(n).power(d).is_some_and(|p| p >= POWER);
        if enough(2) {
            return Some(2);
        }
        // Power grows with n: double to a bracket, then bisect.
        let (mut lo, mut hi) = (2usize, 4usize);
        while !enough(hi) {
            if hi >= MAX_SEEDS {
                return None;
            }
            lo = hi;
            hi = (hi * 2).min(MAX_SEEDS);
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if enough(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

/// The pooled standard deviation of two samples (`(n - 1)`-weighted variances): the standard
/// deviation the equal-variance design plans with. `None` unless both have 2+ values.
pub fn pooled_std((sa, na): (f64, usize), (sb, nb): (f64, usize)) -> Option<f64> {
    if na < 2 || nb < 2 || !(sa.is_finite() && sb.is_finite()) {
        return None;
    }
    let (fa, fb) = ((na - 1) as f64, (nb - 1) as f64);
    Some(((fa * sa * sa + fb * sb * sb) / (fa + fb)).sqrt())
}

/// Holm's step-down adjustment (Holm 1979) of a family of p-values; `None`s are not in the
/// family and stay `None`. As statsmodels' `multipletests(method="holm")`: the i-th smallest
/// of m is multiplied by `m - i` (0-based), running maxima taken, capped at 1.
pub fn holm(ps: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<usize> = (0..ps.len()).filter(|&i| ps[i].is_some()).collect();
    order.sort_by(|&i, &j| {
        ps[i]
            .partial_cmp(&ps[j])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let m = order.len();
    let mut out = vec![None; ps.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let p = ps[i].unwrap_or(1.0);
        running = running.max(((m - rank) as f64 * p).min(1.0));
        out[i] = Some(running);
    }
    out
}

/// `P(Z > x)` for a standard normal Z.
pub fn normal_sf(x: f64) -> f64 {
    0.5 * libm::erfc(x / std::f64::consts::SQRT_2)
}

/// `P(T <= t)` for T noncentral t with `df` degrees of freedom and noncentrality `delta`.
///
/// For `t >= 0` (Lenth 1989): `Φ(-δ) + Σ_j [p_j I_x(j + 1/2, df/2) + q_j I_x(j + 1, df/2)]`
/// with `x = t² / (t² + df)`, `p_j = e^{-δ²/2} (δ²/2)^j / (2 j!)` and
/// `q_j = δ e^{-δ²/2} (δ²/2)^j / (2 √2 Γ(j + 3/2))`; for `t < 0`, `1 - P(T' <= -t)` with
/// `T'` of noncentrality `-δ`. The sum starts at the largest Poisson weight (j near δ²/2),
/// computed in logs, and runs both ways with the incomplete beta's recurrences until the
/// terms left are below 1e-15.
pub fn nct_cdf(t: f64, df: f64, delta: f64) -> f64 {
    if t < 0.0 {
        return 1.0 - nct_cdf(-t, df, -delta);
    }
    let base = normal_sf(delta);
    if t == 0.0 {
        return base;
    }
    let x = t * t / (t * t + df);
    let (b, half) = (0.5 * df, 0.5 * delta * delta);
    let j0 = half.floor();
    // Log weights at j0 (q's sign is delta's); both carry (δ²/2)^j0.
    let j_ln = if j0 > 0.0 { j0 * half.ln() } else { 0.0 };
    let ln_p = (0.5f64).ln() - half + j_ln - ln_gamma(j0 + 1.0);
    let ln_q = if delta == 0.0 {
        f64::NEG_INFINITY
    } else {
        delta.abs().ln() - half + j_ln - (2.0 * std::f64::consts::SQRT_2).ln() - ln_gamma(j0 + 1.5)
    };
    let sign_q = delta.signum();
    // `g(a) = x^a (1-x)^b Γ(a+b) / (Γ(a+1) Γ(b))`: I_x(a+1, b) = I_x(a, b) - g(a).
    let ln_g = |a: f64| {
        a * x.ln() + b * (1.0 - x).ln() + ln_gamma(a + b) - ln_gamma(a + 1.0) - ln_gamma(b)
    };
    let (a_odd, a_even) = (j0 + 0.5, j0 + 1.0);
    let (i_odd0, i_even0) = (incomplete_beta(x, a_odd, b), incomplete_beta(x, a_even, b));
    let (g_odd0, g_even0) = (ln_g(a_odd).exp(), ln_g(a_even).exp());
    let (p0, q0) = (ln_p.exp(), sign_q * ln_q.exp());
    let mut sum = p0 * i_odd0 + q0 * i_even0;

    // Forward: j = j0 + 1, j0 + 2, ...
    let (mut p, mut q) = (p0, q0);
    let (mut i_odd, mut i_even, mut g_odd, mut g_even) = (i_odd0, i_even0, g_odd0, g_even0);
    let (mut a1, mut a2) = (a_odd, a_even);
    // Stops once past the Poisson mode with the term's weight below 1e-16.
    for j in (j0 as usize + 1)..(j0 as usize + 100_000) {
        let jf = j as f64;
        i_odd = (i_odd - g_odd).max(0.0);
        i_even = (i_even - g_even).max(0.0);
        g_odd *= x * (a1 + b) / (a1 + 1.0);
        g_even *= x * (a2 + b) / (a2 + 1.0);
        a1 += 1.0;
        a2 += 1.0;
        p *= half / jf;
        q *= half / (jf + 0.5);
        let term = p * i_odd + q * i_even;
        sum += term;
        if jf > half && (p.abs() + q.abs()) * (i_odd + i_even) < 1e-16 {
            break;
        }
    }

    // Backward: j = j0 - 1, ..., 0.
    let (mut p, mut q) = (p0, q0);
    let (mut i_odd, mut i_even) = (i_odd0, i_even0);
    let (mut a1, mut a2) = (a_odd, a_even);
    let mut j = j0 as usize;
    while j > 0 {
        let jf = j as f64;
        // I_x(a - 1, b) = I_x(a, b) + g(a - 1).
        a1 -= 1.0;
        a2 -= 1.0;
        i_odd = (i_odd + ln_g(a1).exp()).min(1.0);
        i_even = (i_even + ln_g(a2).exp()).min(1.0);
        p *= jf / half;
        q *= (jf + 0.5) / half;
        let term = p * i_odd + q * i_even;
        sum += term;
        j -= 1;
        if (p.abs() + q.abs()) < 1e-16 * sum.abs().max(1e-300) {
            break;
        }
    }
    (base + sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-3)
    }

    /// Against scipy 1.17 `stats.nct.cdf(t, df, nc)`.
    #[test]
    fn noncentral_t_matches_scipy() {
        for &(t, df, nc, want) in NCT_CASES {
            let got = nct_cdf(t, df, nc);
            assert!(
                close(got, want, 1e-9),
                "nct.cdf({t}, {df}, {nc}) = {got}, scipy {want}"
            );
        }
    }

    /// Against statsmodels 0.15 `TTestIndPower().power(d, nobs1, alpha=0.05, ratio)`,
    /// `TTestPower().power(d, nobs, 0.05)` and their `solve_power`.
    #[test]
    fn power_matches_statsmodels() {
        for &(design, d, want) in POWER_CASES {
            let got = design.power(d).unwrap();
            assert!(close(got, want, 1e-8), "{design:?} d={d}: {got} vs {want}");
        }
        for &(design, want) in DETECTABLE_CASES {
            let got = design.detectable().unwrap();
            // statsmodels solves with brentq to its own tolerance (1e-7 relative at n = 2).
            assert!(close(got, want, 1e-6), "{design:?}: {got} vs {want}");
        }
        for &(design, d, want) in SEEDS_CASES {
            assert_eq!(design.seeds_for(d), Some(want), "{design:?} d={d}");
        }
    }

    #[test]
    fn edge_cases() {
        let one = Design::Independent { a: 1, b: 5 };
        assert_eq!(one.power(1.0), None);
        assert_eq!(one.detectable(), None);
        assert_eq!(Design::Paired { n: 1 }.power(1.0), None);
        // A zero difference is never detected; a tiny one needs more seeds than we look for.
        assert_eq!(Design::Paired { n: 3 }.seeds_for(0.0), None);
        assert_eq!(Design::Paired { n: 3 }.seeds_for(1e-4), None);
        assert_eq!(Design::Paired { n: 3 }.seeds_for(f64::NAN), None);
        // Power at d = 0 is the level; huge differences have power 1.
        let two = Design::Independent { a: 2, b: 2 };
        assert!(close(two.power(0.0).unwrap(), ALPHA, 1e-9));
        assert!(two.power(1e3).unwrap() > 1.0 - 1e-12);
        assert!(close(
            Design::Paired { n: 2 }.power(0.0).unwrap(),
            ALPHA,
            1e-9
        ));
        // Holm: None stays out of the family; ties and the cap at 1.
        let adj = holm(&[Some(0.01), None, Some(0.04), Some(0.03), Some(0.5)]);
        let want = [Some(0.04), None, Some(0.09), Some(0.09), Some(0.5)];
        for (a, w) in adj.iter().zip(want) {
            assert_eq!(a.is_some(), w.is_some());
            if let (Some(a), Some(w)) = (a, w) {
                assert!(close(*a, w, 1e-12), "{adj:?}");
            }
        }
        assert_eq!(holm(&[Some(0.6), Some(0.7)]), vec![Some(1.0), Some(1.0)]);
        assert!(holm(&[]).is_empty());
        assert_eq!(pooled_std((1.0, 1), (1.0, 3)), None);
        assert!(close(
            pooled_std((1.0, 3), (2.0, 3)).unwrap(),
            2.5f64.sqrt(),
            1e-12
        ));
    }

    // Reference values, written by tests/stats/reference.py (scipy 1.17, statsmodels 0.15).
    include!("power_reference.rs");
}

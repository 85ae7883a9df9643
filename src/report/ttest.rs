//! t-tests between two groups of seeds: is a difference of means more than noise?
//!
//! Welch's test of two groups of independent seeds, or the paired test of the per-seed
//! differences where both groups ran the same seeds (the same data order and augmentation
//! draws: the sharper test). Each gives the difference of means with its 95% confidence
//! interval (Student's t, with the Welch–Satterthwaite degrees of freedom for Welch's test, n - 1
//! for the paired one) and the two-sided p-value. The t distribution comes
//! from the regularized incomplete beta function (continued fraction, as in Numerical
//! Recipes' `betacf`), checked against scipy's values in the tests. Groups without any spread
//! give no test ([`NoTest::NoSpread`]), never a p-value of 0.

/// A group's sample: mean, sample standard deviation (n - 1) and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

/// Which t-test gave a [`TTest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKind {
    /// Two groups of independent seeds, unequal variances.
    Welch,
    /// The same seeds in both groups: the one-sample test of the per-seed differences.
    Paired,
}

impl std::fmt::Display for TestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Welch => "Welch",
            Self::Paired => "paired",
        })
    }
}

/// `a - b` with its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    pub kind: TestKind,
    /// Difference of means, `a - b`.
    pub diff: f64,
    /// 95% confidence interval of the difference.
    pub ci: (f64, f64),
    /// Two-sided p-value of "the means are equal".
    pub p: f64,
    /// Degrees of freedom: Welch–Satterthwaite's, or n - 1 of the paired differences.
    pub df: f64,
}

impl TTest {
    /// Whether the interval excludes 0 (significant at the 5% level).
    pub fn significant(&self) -> bool {
        self.ci.0 > 0.0 || self.ci.1 < 0.0
    }
}

impl Sample {
    /// Mean, sample standard deviation (n - 1; NaN for one value) and size of `values`.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        Self {
            mean,
            std: if n >= 2 { var.sqrt() } else { f64::NAN },
            n,
        }
    }
}

/// Why no test can be given between two groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoTest {
    /// A group has fewer than 2 values, so its spread is unknown.
    TooFewSeeds { a: usize, b: usize },
    /// Neither group varies: the standard error is 0 and the t statistic undefined (scipy
    /// answers p = 0 for any difference, NaN for none). Common when a small test set moves
    /// top-1 in steps (64 images: 1.5625 pp), so that every seed lands on the same value.
    NoSpread,
    /// A mean is not a finite number.
    NotFinite,
    /// Paired seeds whose differences are all equal (to `step`, the metric's unit): as
    /// [`NoTest::NoSpread`], for the paired test.
    EqualDifferences { step: f64 },
}

impl std::fmt::Display for NoTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooFewSeeds { a, b } => write!(f, "needs 2+ seeds each ({a} vs {b})"),
            Self::NoSpread => f.write_str("no test: neither group varies"),
            Self::NotFinite => f.write_str("no test: a mean is not finite"),
            Self::EqualDifferences { step } => {
                write!(f, "no test: every seed differs by {step:+.2}")
            }
        }
    }
}

/// A standard deviation at most this fraction of its mean is the rounding of equal values
/// (a mean of equal values need not be exactly that value), not spread.
const ROUNDING: f64 = 1e-12;

/// Welch's test of `a` against `b`. Needs at least 2 values in each group and spread in at
/// least one: with one group constant the test is still defined (its variance is 0, the
/// degrees of freedom are the other group's n - 1), as scipy's `ttest_ind(equal_var=False)`
/// computes it.
pub fn welch(a: Sample, b: Sample) -> Result<TTest, NoTest> {
    if a.n < 2 || b.n < 2 {
        return Err(NoTest::TooFewSeeds { a: a.n, b: b.n });
    }
    if !(a.mean.is_finite() && b.mean.is_finite()) {
        return Err(NoTest::NotFinite);
    }
    // The variance of each group's mean; a spread below rounding is none.
    let variance_of_mean = |s: Sample| {
        if s.std > ROUNDING * s.mean.abs() {
            s.std * s.std / s.n as f64
        } else {
            0.0
        }
    };
    let (va, vb) = (variance_of_mean(a), variance_of_mean(b));
    let se2 = va + vb;
    if !(se2 > 0.0 && se2.is_finite()) {
        return Err(NoTest::NoSpread);
    }
    let diff = a.mean - b.mean;
    let df = se2 * se2 / (va * va / (a.n - 1) as f64 + vb * vb / (b.n - 1) as f64);
    let se = se2.sqrt();
    let q = t_quantile_975(df);
    Ok(TTest {
        kind: TestKind::Welch,
        diff,
        ci: (diff - q * se, diff + q * se),
        p: two_sided_p(diff / se, df),
        df,
    })
}

/// The paired t-test of `diffs`, each seed's `a - b`, as scipy's `ttest_rel(a, b)` computes it.
/// Needs 2+ pairs and differences that vary (equal differences, e.g. a change that moves every
/// seed by the same step, give no test rather than p = 0).
pub fn paired(diffs: &[f64]) -> Result<TTest, NoTest> {
    let n = diffs.len();
    if n < 2 {
        return Err(NoTest::TooFewSeeds { a: n, b: n });
    }
    if !diffs.iter().all(|d| d.is_finite()) {
        return Err(NoTest::NotFinite);
    }
    let s = Sample::of(diffs);
    if s.std <= ROUNDING * s.mean.abs() {
        return Err(NoTest::EqualDifferences { step: s.mean });
    }
    let df = (n - 1) as f64;
    let se = s.std / (n as f64).sqrt();
    let q = t_quantile_975(df);
    Ok(TTest {
        kind: TestKind::Paired,
        diff: s.mean,
        ci: (s.mean - q * se, s.mean + q * se),
        p: two_sided_p(s.mean / se, df),
        df,
    })
}

/// `P(|T| >= |t|)` for Student's t with `df` degrees of freedom.
pub fn two_sided_p(t: f64, df: f64) -> f64 {
    incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom, by bisection on
/// [`two_sided_p`] (monotone in t) to 1e-12.
pub fn t_quantile_975(df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while two_sided_p(hi, df) > 0.05 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if two_sided_p(mid, df) > 0.05 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// `ln Γ(x)` for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative).
pub(super) fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |s, (i, g)| s + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function `I_x(a, b)`.
pub(super) fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); else use symmetry.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against scipy 1.x: `stats.ttest_ind(a, b, equal_var=False)`, `stats.t.ppf(0.975, df)`
    /// and `2 * stats.t.sf(t, df)`.
    #[test]
    fn matches_scipy() {
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1.0);
        assert!(close(t_quantile_975(1.0), 12.706204736174694, 1e-9));
        assert!(close(t_quantile_975(2.5), 3.5746548420036817, 1e-9));
        assert!(close(t_quantile_975(30.0), 2.0422724563012378, 1e-9));
        assert!(close(two_sided_p(1.3, 4.2), 0.26035754187565385, 1e-9));

        let w = welch(
            Sample::of(&[92.0, 93.5, 91.0]),
            Sample::of(&[90.0, 90.5, 91.5, 89.0]),
        )
        .unwrap();
        assert!(close(w.diff, 1.9166666666666714, 1e-12));
        assert!(close(w.df, 3.895434462444772, 1e-9));
        assert!(close(w.p, 0.10040267683272434, 1e-8));
        assert!(close(w.ci.0, -0.5909933838108188, 1e-8));
        assert!(close(w.ci.1, 4.424326717144162, 1e-8));
        assert!(!w.significant());

        let w = welch(Sample::of(&[80.0, 90.0]), Sample::of(&[93.0, 92.0, 94.0])).unwrap();
        assert!(close(w.p, 0.35281731197032534, 1e-8));
    }

    #[test]
    fn one_seed_or_no_spread_gives_no_test() {
        let one = Sample {
            mean: 90.0,
            std: f64::NAN,
            n: 1,
        };
        let two = Sample::of(&[90.0, 91.0]);
        assert_eq!(welch(one, two), Err(NoTest::TooFewSeeds { a: 1, b: 2 }));
        // Neither group varies: no p-value (scipy says p = 0 here), whatever the means.
        let (fifty, sixty) = (Sample::of(&[50.0, 50.0]), Sample::of(&[60.0, 60.0]));
        assert_eq!(welch(fifty, sixty), Err(NoTest::NoSpread));
        assert_eq!(welch(fifty, fifty), Err(NoTest::NoSpread));
        // Equal values whose mean is off by rounding are no spread either.
        let third = Sample::of(&[0.1 + 0.2, 0.3, 0.3]);
        assert!(third.std > 0.0 && third.std < 1e-15, "{third:?}");
        assert_eq!(welch(third, Sample::of(&[0.3, 0.3])), Err(NoTest::NoSpread));
        let clearly = welch(
            Sample::of(&[95.0, 95.2, 94.9]),
            Sample::of(&[90.0, 90.1, 89.8]),
        )
        .unwrap();
        assert!(clearly.significant() && clearly.p < 1e-4, "{clearly:?}");
    }

    /// Against scipy 1.17: `stats.ttest_rel(a, b)` and its `confidence_interval()`.
    #[test]
    fn paired_matches_scipy() {
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1.0);
        let diffs = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>();
        let t = paired(&diffs(&[92.0, 93.5, 91.0, 90.2], &[90.0, 90.5, 91.5, 89.0])).unwrap();
        assert_eq!(t.kind, TestKind::Paired);
        assert!(close(t.df, 3.0, 1e-12));
        assert!(close(t.p, 0.14972076869180284, 1e-8), "{t:?}");
        assert!(close(t.ci.0, -0.9293471629076637, 1e-8), "{t:?}");
        assert!(close(t.ci.1, 3.779347162907665, 1e-8), "{t:?}");
        let t = paired(&diffs(&[58.0, 60.0], &[50.0, 53.0])).unwrap();
        assert!(close(t.p, 0.04237860926989283, 1e-8), "{t:?}");
        assert!(close(t.ci.0, 1.146897631912653, 1e-8) && close(t.ci.1, 13.853102368087347, 1e-8));
        assert!(t.significant());
        // One pair, equal differences, a NaN: no test.
        assert_eq!(paired(&[1.0]), Err(NoTest::TooFewSeeds { a: 1, b: 1 }));
        assert_eq!(
            paired(&[1.5, 1.5, 1.5]),
            Err(NoTest::EqualDifferences { step: 1.5 })
        );
        let none = paired(&[0.0, 0.0]).unwrap_err();
        assert_eq!(none.to_string(), "no test: every seed differs by +0.00");
        assert_eq!(paired(&[1.0, f64::NAN]), Err(NoTest::NotFinite));
    }

    /// One constant group: the test is defined, with the other group's n - 1 degrees of
    /// freedom, as scipy 1.17 gives it: `ttest_ind([58, 60, 61], [50, 50, 50],
    /// equal_var=False)` (statistic 10.960969717267588, df 2.0) and its
    /// `confidence_interval()`.
    #[test]
    fn one_constant_group_matches_scipy() {
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1.0);
        let w = welch(
            Sample::of(&[58.0, 60.0, 61.0]),
            Sample::of(&[50.0, 50.0, 50.0]),
        )
        .unwrap();
        assert!(close(w.df, 2.0, 1e-12), "{w:?}");
        assert!(close(w.p, 0.008220926317684375, 1e-8), "{w:?}");
        assert!(close(w.ci.0, 5.872083633069906, 1e-8), "{w:?}");
        assert!(close(w.ci.1, 13.461249700263423, 1e-8), "{w:?}");
        let back = welch(
            Sample::of(&[50.0, 50.0, 50.0]),
            Sample::of(&[58.0, 60.0, 61.0]),
        )
        .unwrap();
        assert!(close(back.p, w.p, 1e-12) && close(back.ci.0, -w.ci.1, 1e-12));
    }
}

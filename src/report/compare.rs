//! A variant's metric against the baseline's over their finished seeds: which t-test applies,
//! its result, and what the seeds can resolve (the ablation table's test columns and
//! `ablate plan --seeds-for`).
//!
//! Paired where the two groups finished exactly the same seeds (2 or more) on the same data: a
//! seed fixes the data order and the augmentation draws, so the per-seed differences cancel
//! that share of the noise. Otherwise Welch's test of two independent groups.

use super::aggregate::GroupRow;
use super::power::{pooled_std, Design};
use super::ttest::{paired, welch, NoTest, Sample, TTest, TestKind};

/// The variant against the baseline on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub test: Result<TTest, NoTest>,
    /// The seeds run, as the power figures see them (`None` below 2 seeds an arm).
    pub design: Option<Design>,
    /// The standard deviation the power figures use: the pooled one of the two groups
    /// (independent seeds) or that of the per-seed differences (paired); `None` without one,
    /// `Some(0)` when nothing varies.
    pub std: Option<f64>,
}

impl Comparison {
    /// `variant - base` on metric `name` (a column of [`super::aggregate::METRICS`]).
    pub fn new(variant: &GroupRow, base: &GroupRow, name: &str) -> Self {
        // In plan order: the sums below are taken in that order.
        let (a, b) = (variant.by_seed(name), base.by_seed(name));
        let seeds = |v: &[(u64, f64)]| {
            let mut s: Vec<u64> = v.iter().map(|&(seed, _)| seed).collect();
            s.sort_unstable();
            s
        };
        let (seeds_a, seeds_b) = (seeds(&a), seeds(&b));
        let distinct = seeds_a.windows(2).all(|w| w[0] != w[1]);
        if a.len() >= 2 && seeds_a == seeds_b && distinct && variant.trained_on == base.trained_on {
            let of_base: std::collections::HashMap<u64, f64> = b.iter().copied().collect();
            // Every seed of `a` is one of `b`'s (the same sets).
            let diffs: Vec<f64> = a
                .iter()
                .filter_map(|&(seed, v)| Some(v - of_base.get(&seed)?))
                .collect();
            let std = Sample::of(&diffs).std;
            return Self {
                test: paired(&diffs),
                design: Some(Design::Paired { n: diffs.len() }),
                std: std.is_finite().then_some(std),
            };
        }
        let sample = |v: &[(u64, f64)]| Sample::of(&v.iter().map(|&(_, x)| x).collect::<Vec<_>>());
        let (sa, sb) = (sample(&a), sample(&b));
        let enough = sa.n >= 2 && sb.n >= 2;
        Self {
            test: if enough {
                welch(sa, sb)
            } else {
                Err(NoTest::TooFewSeeds { a: sa.n, b: sb.n })
            },
            design: enough.then_some(Design::Independent { a: sa.n, b: sb.n }),
            std: pooled_std((sa.std, sa.n), (sb.std, sb.n)),
        }
    }

    /// The test these seeds' layout calls for; `None` below 2 seeds an arm.
    pub fn kind(&self) -> Option<TestKind> {
        self.design.map(|d| match d {
            Design::Paired { .. } => TestKind::Paired,
            Design::Independent { .. } => TestKind::Welch,
        })
    }

    /// The smallest difference (in the metric's unit) these seeds detect with 80% power at the
    /// 5% level; `None` without a design or a spread.
    pub fn detectable(&self) -> Option<f64> {
        let std = self.std.filter(|&s| s > 0.0)?;
        Some(self.design?.detectable()? * std)
    }

    /// Seeds per arm that detect a difference of `delta` (the metric's unit) with 80% power:
    /// `Ok(None)` beyond [`super::power::MAX_SEEDS`] or for `delta == 0`; `Err` with why when
    /// the spread is unknown or zero.
    pub fn seeds_for(&self, delta: f64) -> Result<Option<usize>, &'static str> {
        let design = self.design.ok_or("needs 2+ seeds each")?;
        match self.std {
            Some(s) if s > 0.0 => Ok(design.seeds_for(delta / s)),
            Some(_) => Err("no spread to plan with"),
            None => Err("needs 2+ seeds each"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::{SeedRow, METRICS};
    use super::*;

    fn group(values: &[(u64, f64)]) -> GroupRow {
        let at = METRICS.iter().position(|m| *m == "final_top1").unwrap();
        GroupRow {
            group: "g".into(),
            model_name: "m".into(),
            model: None,
            n: values.len(),
            total: values.len(),
            stats: Vec::new(),
            device: "-".into(),
            trained_on: Vec::new(),
            finished: values
                .iter()
                .map(|&(seed, v)| {
                    let mut values = vec![None; METRICS.len()];
                    values[at] = Some(v);
                    SeedRow { seed, values }
                })
                .collect(),
        }
    }

    #[test]
    fn same_seeds_pair_and_others_do_not() {
        let base = group(&[(0, 90.0), (1, 91.0), (2, 89.0)]);
        let same = group(&[(2, 89.5), (0, 90.4), (1, 91.6)]);
        let c = Comparison::new(&same, &base, "final_top1");
        let t = c.test.unwrap();
        assert_eq!(t.kind, TestKind::Paired);
        assert_eq!(c.design, Some(Design::Paired { n: 3 }));
        assert!((t.diff - 0.5).abs() < 1e-12);
        // Differences 0.4, 0.6, 0.5: their std.
        assert!((c.std.unwrap() - 0.1).abs() < 1e-12);

        let other = group(&[(0, 90.4), (1, 91.6), (5, 89.5)]);
        let c = Comparison::new(&other, &base, "final_top1");
        assert_eq!(c.test.unwrap().kind, TestKind::Welch);
        assert_eq!(c.design, Some(Design::Independent { a: 3, b: 3 }));

        let one = group(&[(0, 90.0)]);
        let c = Comparison::new(&one, &base, "final_top1");
        assert_eq!(c.test, Err(NoTest::TooFewSeeds { a: 1, b: 3 }));
        assert_eq!(c.detectable(), None);
        assert_eq!(c.seeds_for(1.0), Err("needs 2+ seeds each"));
    }

    #[test]
    fn no_spread_plans_nothing() {
        let base = group(&[(0, 90.0), (1, 91.0)]);
        let shifted = group(&[(0, 91.0), (1, 92.0)]);
        let c = Comparison::new(&shifted, &base, "final_top1");
        assert_eq!(c.test, Err(NoTest::EqualDifferences { step: 1.0 }));
        assert_eq!(c.detectable(), None);
        assert_eq!(c.seeds_for(1.0), Err("no spread to plan with"));
    }

    #[test]
    fn detectable_and_seeds_scale_with_the_spread() {
        let base = group(&[(0, 90.0), (1, 91.0), (2, 89.0), (3, 90.0)]);
        let variant = group(&[(0, 91.0), (1, 91.0), (2, 90.0), (3, 92.0)]);
        let c = Comparison::new(&variant, &base, "final_top1");
        let std = c.std.unwrap();
        let d = Design::Paired { n: 4 }.detectable().unwrap();
        assert!((c.detectable().unwrap() - d * std).abs() < 1e-9);
        assert_eq!(
            c.seeds_for(2.0 * std).unwrap(),
            Design::Paired { n: 2 }.seeds_for(2.0)
        );
        assert_eq!(c.seeds_for(0.0), Ok(None));
    }
}

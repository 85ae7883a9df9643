"""Writes src/report/power_reference.rs: values of scipy and statsmodels that the unit tests of
src/report/power.rs compare against (so `cargo test` checks them without Python; CI also
checks the live libraries, tests/stats/check.py).

usage: python tests/stats/reference.py > src/report/power_reference.rs   (scipy, statsmodels)
"""

import math

import scipy
import statsmodels
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

IND, ONE = TTestIndPower(), TTestPower()


def design(kind, a, b=None):
    if kind == "ind":
        return f"Design::Independent {{ a: {a}, b: {b} }}"
    return f"Design::Paired {{ n: {a} }}"


def power(kind, d, a, b=None):
    if kind == "ind":
        return float(IND.power(d, a, 0.05, ratio=b / a, alternative="two-sided"))
    return float(ONE.power(d, a, 0.05, alternative="two-sided"))


def detectable(kind, a, b=None):
    if kind == "ind":
        return float(IND.solve_power(None, nobs1=a, alpha=0.05, power=0.8, ratio=b / a))
    return float(ONE.solve_power(None, nobs=a, alpha=0.05, power=0.8))


def seeds(kind, d):
    """The fewest n >= 2 per arm with power >= 0.8, by scanning statsmodels' power."""
    n = 2
    while power(kind, d, n, n) < 0.8:
        n += 1
    return n


def main():
    print(f"// Written by tests/stats/reference.py: scipy {scipy.__version__}, "
          f"statsmodels {statsmodels.__version__}. Do not edit.")
    print("/// `(t, df, nc, scipy.stats.nct.cdf(t, df, nc))`.")
    print("const NCT_CASES: &[(f64, f64, f64, f64)] = &[")
    for t in (-3.0, -0.5, 0.0, 0.7, 2.1, 4.3, 12.7):
        for df in (1.0, 2.0, 3.5, 10.0, 58.0):
            for nc in (-2.0, 0.0, 0.3, 1.5, 4.0, 9.0, 40.0):
                v = float(stats.nct.cdf(t, df, nc))
                if not math.isfinite(v):
                    continue  # scipy has no value there (nc = 40 at some t)
                print(f"    ({t!r}, {df!r}, {nc!r}, {v!r}),")
    print("];")
    print("/// `(design, d, statsmodels power)`.")
    print("const POWER_CASES: &[(Design, f64, f64)] = &[")
    for kind, a, b in (("ind", 2, 2), ("ind", 3, 3), ("ind", 2, 5), ("ind", 10, 4), ("one", 2, None),
                       ("one", 3, None), ("one", 8, None), ("ind", 40, 40), ("one", 50, None)):
        for d in (0.1, 0.5, 1.0, 2.0, 3.5, 8.0):
            v = power(kind, d, a, b)
            if not math.isfinite(v):
                continue  # statsmodels has no value there (scipy's nct at a large nc)
            print(f"    ({design(kind, a, b)}, {d!r}, {v!r}),")
    print("];")
    print("/// `(design, statsmodels solve_power(power=0.8))`: the detectable effect size.")
    print("const DETECTABLE_CASES: &[(Design, f64)] = &[")
    for kind, a, b in (("ind", 2, 2), ("ind", 3, 3), ("ind", 3, 5), ("ind", 20, 20), ("one", 2, None),
                       ("one", 3, None), ("one", 10, None)):
        print(f"    ({design(kind, a, b)}, {detectable(kind, a, b)!r}),")
    print("];")
    print("/// `(design, d, seeds per arm)`: the fewest n with statsmodels power >= 0.8.")
    print("const SEEDS_CASES: &[(Design, f64, usize)] = &[")
    for kind in ("ind", "one"):
        for d in (0.2, 0.5, 0.8, 1.3, 2.0, 4.0, 9.0):
            print(f"    ({design(kind, 2, 2)}, {d!r}, {seeds(kind, d)}),")
    print("];")


if __name__ == "__main__":
    main()

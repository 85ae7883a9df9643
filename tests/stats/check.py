"""The ablation table's statistics against scipy and statsmodels (see check.sh).

usage: python tests/stats/check.py RESULTS_DIR/<experiment> REPORT_DIR/<experiment>
"""

import csv
import json
import math
import os
import re
import sys

from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDED = os.path.join(HERE, "..", "..", "src", "report", "power_reference.rs")
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def close(a, b, tol):
    return abs(a - b) <= tol * max(abs(b), 1e-3)


def recorded_values():
    """The tuples of the recorded file, as floats (Design literals as their numbers)."""
    rows = {}
    table = None
    for line in open(RECORDED):
        m = re.match(r"const (\w+):", line)
        if m:
            table = m.group(1)
            rows[table] = []
        elif line.startswith("    (") and table:
            nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", line)]
            rows[table].append((line, nums))
    return rows


def check_recorded():
    """Every recorded value is what scipy / statsmodels give now."""
    rows = recorded_values()
    bad = 0
    for line, (t, df, nc, want) in rows["NCT_CASES"]:
        if not close(float(stats.nct.cdf(t, df, nc)), want, 1e-9):
            bad += 1
            print("  differs:", line.strip())
    for line, nums in rows["POWER_CASES"]:
        kind = "ind" if "Independent" in line else "one"
        a, b, d, want = (nums[0], nums[1], nums[2], nums[3]) if kind == "ind" else (nums[0], None, nums[1], nums[2])
        if not close(reference.power(kind, d, int(a), b and int(b)), want, 1e-9):
            bad += 1
            print("  differs:", line.strip())
    for line, nums in rows["DETECTABLE_CASES"]:
        kind = "ind" if "Independent" in line else "one"
        a, b, want = (nums[0], nums[1], nums[2]) if kind == "ind" else (nums[0], None, nums[1])
        if not close(reference.detectable(kind, int(a), b and int(b)), want, 1e-6):
            bad += 1
            print("  differs:", line.strip())
    for line, nums in rows["SEEDS_CASES"]:
        kind = "ind" if "Independent" in line else "one"
        d, want = nums[-2], int(nums[-1])
        if reference.seeds(kind, d) != want:
            bad += 1
            print("  differs:", line.strip())
    total = sum(len(v) for v in rows.values())
    check(bad == 0 and total > 100, f"{total} recorded values of power.rs's tests match scipy and statsmodels")


def final_top1(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["test_top1"])


def read_table(report, stem):
    with open(os.path.join(report, f"{stem}.csv"), newline="") as f:
        rows = list(csv.reader(f))
    width = max(len(r) for r in rows)
    rows = [r for r in rows if len(r) == width]
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def seeds_needed(power, d):
    if d == 0:
        return "never"
    n = 2
    while power(d, n) < 0.8:
        n += 1
        if n > 100000:
            return ">100000"
    return str(n)


def check_table(results, report):
    """Recomputes the ablation table's test columns from the runs' per-seed final top-1."""
    plan = json.load(open(os.path.join(results, "plan.json")))
    groups = {}
    for run in plan["runs"]:
        seed = int(dict(run["point"]).get("train.seed", 0))
        status = json.load(open(os.path.join(results, run["id"], "status.json")))
        if status.get("status") != "done":
            continue
        groups.setdefault(run["label"], {})[seed] = final_top1(os.path.join(results, run["id"]))
    table = {r["variant"]: r for r in read_table(report, "ablation")}
    base = groups["baseline"]
    ps, names = [], []
    for name, values in groups.items():
        if name == "baseline":
            continue
        row = table[name]
        if sorted(values) == sorted(base) and len(values) >= 2:
            seeds = sorted(values)
            a, b = [values[s] for s in seeds], [base[s] for s in seeds]
            r = stats.ttest_rel(a, b)
            diffs = [x - y for x, y in zip(a, b)]
            sd = stats.tstd(diffs)
            kind, n = "paired", len(seeds)
            if sd > 0:
                detectable = TTestPower().solve_power(None, nobs=n, alpha=0.05, power=0.8) * sd
                need = seeds_needed(lambda d, k: TTestPower().power(d, k, 0.05), abs(sum(diffs) / n) / sd)
        else:
            a, b = list(values.values()), list(base.values())
            r = stats.ttest_ind(a, b, equal_var=False)
            na, nb = len(a), len(b)
            sd = math.sqrt(((na - 1) * stats.tvar(a) + (nb - 1) * stats.tvar(b)) / (na + nb - 2))
            kind = "Welch"
            if sd > 0:
                detectable = TTestIndPower().solve_power(None, nobs1=na, ratio=nb / na, alpha=0.05, power=0.8) * sd
                diff = sum(a) / na - sum(b) / nb
                need = seeds_needed(lambda d, k: TTestIndPower().power(d, k, 0.05, ratio=1), abs(diff) / sd)
        check(row["test"] == kind, f"{name}: test {row['test']} (scipy: {kind})")
        if not (sd > 0 and math.isfinite(r.pvalue)):
            # No spread: scipy's p is NaN (or 0 for a constant shift); ablate gives no test and
            # plans nothing.
            check(row["p"] == "-" and row["95% CI (pp)"].startswith("no test")
                  and row["p (Holm)"] == "-" and row["detectable Δ (pp)"] == "-"
                  and row["seeds/arm for Δ"] == "-",
                  f"{name}: no spread (scipy p {r.pvalue}), no test: {row['95% CI (pp)']}")
            continue
        ci = r.confidence_interval()
        print(f"  {name}: {kind}, p {r.pvalue:.4f}, CI [{ci.low:+.3f}, {ci.high:+.3f}], "
              f"detectable {detectable:.3f} pp, seeds/arm {need}")
        check(abs(float(row["p"]) - r.pvalue) <= 0.0006, f"{name}: p {row['p']} (scipy {r.pvalue:.4f})")
        lo, hi = re.findall(r"[+-]\d+\.\d+", row["95% CI (pp)"])[:2]
        check(abs(float(lo) - ci.low) <= 0.006 and abs(float(hi) - ci.high) <= 0.006,
              f"{name}: 95% CI {row['95% CI (pp)']} (scipy [{ci.low:+.3f}, {ci.high:+.3f}])")
        check(abs(float(row["detectable Δ (pp)"]) - detectable) <= 0.006,
              f"{name}: detectable Δ {row['detectable Δ (pp)']} (statsmodels {detectable:.3f})")
        check(row["seeds/arm for Δ"] == need, f"{name}: seeds/arm {row['seeds/arm for Δ']} (statsmodels {need})")
        ps.append(r.pvalue)
        names.append(name)
    holm = multipletests(ps, method="holm")[1]
    for name, h in zip(names, holm):
        cell = table[name]["p (Holm)"]
        check(abs(float(cell) - h) <= 0.0006, f"{name}: Holm p {cell} (statsmodels {h:.4f})")


def main():
    results, report = sys.argv[1], sys.argv[2]
    check_recorded()
    check_table(results, report)
    if failures:
        raise SystemExit(f"{len(failures)} check(s) failed")


if __name__ == "__main__":
    main()

"""CI's check of experiments/paper_check.toml: the paper's claims at small scale, on real images,
read from the report's CSV tables (ablate report --format csv writes them beside the Markdown).

usage: python3 tests/paper_check.py REPORT_DIR      (REPORT_DIR = <reports>/paper_check)

CondenseNeXt against the CondenseNet-86 baseline, as the paper claims: fewer FLOPs, fewer
parameters, a smaller deploy model, less training time per image. Every seed done, top-1 with a
t-test interval (paired: both ran seeds 0, 1, 2), every row naming its data, and the paper's top-1 never set beside these rows
(they were not trained on CIFAR-10). Prints the ablation row it checked.
"""

import csv
import os
import re
import sys


def read(report, stem):
    with open(os.path.join(report, f"{stem}.csv"), newline="") as f:
        rows = list(csv.reader(f))
    # The table's title and notes are not rows of the header's width.
    width = max(len(r) for r in rows)
    rows = [r for r in rows if len(r) == width]
    header, body = rows[0], rows[1:]
    return [dict(zip(header, r)) for r in body]


def number(cell):
    m = re.match(r"\s*([+-]?\d+(?:\.\d+)?)", cell)
    if not m:
        raise SystemExit(f"expected a number, found {cell!r}")
    return float(m.group(1))


def main():
    report = sys.argv[1]
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    ablation = {r["variant"]: r for r in read(report, "ablation")}
    base, cnx = ablation["baseline"], ablation["condensenext"]
    for name, row in (("baseline", base), ("condensenext", cnx)):
        done, planned = row["n/N"].split("/")
        check(done == planned and int(done) >= 3, f"{name}: {row['n/N']} seeds done (at least 3)")
    check(number(cnx["Δ FLOPs"]) < 0, f"CondenseNeXt has fewer FLOPs: {cnx['Δ FLOPs']}")
    check(number(cnx["Δ params"]) < 0, f"CondenseNeXt has fewer parameters: {cnx['Δ params']}")
    check(number(cnx["Δ size"]) < 0, f"CondenseNeXt's deploy model is smaller: {cnx['Δ size']}")
    check(
        number(cnx["Δ time per image"]) < 0,
        f"CondenseNeXt trains in less time per image: {cnx['Δ time per image']}",
    )
    check(
        re.match(r"\[[+-]\d", cnx["95% CI (pp)"]) is not None and cnx["test"] == "paired",
        f"top-1 has a paired interval (both ran seeds 0, 1, 2): {cnx['top-1 (%)']} vs "
        f"{base['top-1 (%)']}, Δ {cnx['Δ top-1 (pp)']} pp, 95% CI {cnx['95% CI (pp)']}, "
        f"p {cnx['p']}, Holm {cnx['p (Holm)']}, detectable {cnx['detectable Δ (pp)']} pp, "
        f"seeds/arm for Δ {cnx['seeds/arm for Δ']}",
    )
    for row in read(report, "table1"):
        check(row["trained on"].startswith("digits, "), f"Table I names the data: {row['trained on']}")
        check(
            row["paper top-1 (%)"].startswith("n/c") and row["Δ top-1 (pp)"] == "n/c",
            f"Table I sets no paper top-1 beside {row['model']}: {row['paper top-1 (%)']}",
        )
    for row in read(report, "table2"):
        check(row["trained on"].startswith("digits, "), f"Table II names the data: {row['trained on']}")
    if failures:
        raise SystemExit(f"{len(failures)} of the paper's claims or the table rules do not hold")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# CI's cross-check of the ablation table's statistics against scipy and statsmodels (from PyPI,
# into the venv tests/onnx/check.sh makes):
# 1. the reference values the unit tests of src/report/power.rs compare ablate against
#    (src/report/power_reference.rs) are what these libraries compute today;
# 2. the ablation table of a real experiment (paper_check: two presets, three seeds each) has
#    the test, p, Holm's p, the detectable difference and the seeds per arm that scipy and
#    statsmodels give for the per-seed top-1 in its runs' metrics.csv.
#
# usage: bash tests/stats/check.sh RESULTS_DIR/<experiment> REPORT_DIR/<experiment>
# STATS_VENV names the venv to use or create (default target/onnx-venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${STATS_VENV:-target/onnx-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/stats/requirements.txt
"$venv/bin/python" tests/stats/check.py "$1" "$2"

#!/usr/bin/env bash
# ablate's TensorBoard event files read by TensorBoard itself (tests/tensorboard/check.py, with
# `tensorboard` from PyPI in a venv): the runs of the experiments given (or of
# experiments/ci.toml, trained into a temp dir), a run stopped by SIGTERM whose last epoch's
# events are then cut (as a kill between checkpoint and event leaves it) and resumed, and a copy
# of the experiments without event files that `ablate report` fills. A copy of a run with one
# flipped byte in its event file must fail the check.
#
# usage: tests/tensorboard/check.sh [ABLATE] [EXPERIMENT_DIR ...]
#   ABLATE          the ablate binary (default target/release/ablate)
#   EXPERIMENT_DIR  results/<experiment> dirs of done runs; none given: experiments/ci.toml
# TENSORBOARD_VENV names the venv to use or create (default target/tensorboard-venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
ablate=$(realpath "${1:-target/release/ablate}")
shift || true
venv=${TENSORBOARD_VENV:-target/tensorboard-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/tensorboard/requirements.txt
check() { "$venv/bin/python" tests/tensorboard/check.py "$@"; }

work=$(mktemp -d /tmp/ablate-tensorboard.XXXXXX)
trap 'rm -rf "$work"' EXIT
exps=("$@")
if [ ${#exps[@]} -eq 0 ]; then
  "$ablate" run experiments/ci.toml --results "$work/results" --reports "$work/reports" --devices cpu >/dev/null
  exps=("$work/results/ci")
fi

# A run stopped by SIGTERM after its second epoch, its last epoch's events cut, then resumed.
run="$work/resumed"
"$ablate" train --model condensenet-86 --set 'stages=[1,1,1]' --dataset synthetic --subset 96 \
  --test-subset 32 --batch 32 --epochs 12 --out "$run" >"$work/resumed.log" 2>&1 &
pid=$!
until grep -qs '"epochs_done": [2-9]' "$run/status.json"; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/resumed.log"; echo "the run ended before SIGTERM" >&2; exit 1; }
  sleep 0.02
done
kill -TERM "$pid"
wait "$pid" && { echo "the stopped run exited 0" >&2; exit 1; }
grep -q '"status": "interrupted"' "$run/status.json"
check cut-last-epoch "$run"
"$ablate" train --resume --out "$run" >>"$work/resumed.log" 2>&1

# Runs trained before event files existed: copies without them, given them by `ablate report`.
mkdir "$work/old"
old=()
for exp in "${exps[@]}"; do
  cp -r "$exp" "$work/old/"
  old+=("$work/old/$(basename "$exp")")
done
find "$work/old" -name tensorboard -type d -prune -exec rm -r {} +
find "$work/old" -maxdepth 2 -name 'events.out.tfevents.*' -delete
"$ablate" report --results "$work/old" --out "$work/old-reports" >/dev/null

args=()
for exp in "${exps[@]}" "${old[@]}"; do args+=(--experiment "$exp"); done
first_run=$(dirname "$(ls -d "${exps[0]}"/*/tensorboard | head -1)")
check check "${args[@]}" --resumed "$run" --flip "$first_run"

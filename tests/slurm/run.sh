#!/usr/bin/env bash
# The Slurm backend against a real one-node cluster on localhost (tests/slurm/cluster.sh):
# submit experiments/ci.toml as a job array, follow it with `ablate status`, check every run dir,
# check that submitting again submits nothing, and stop every daemon the test started.
#
#   tests/slurm/run.sh [path/to/ablate]        # default: target/release/ablate
set -euo pipefail
cd "$(dirname "$0")/../.."
ablate=$(realpath "${1:-target/release/ablate}")
work=$(mktemp -d /tmp/ablate-slurm.XXXXXX)
state=$work/cluster
results=$work/results
exp=experiments/ci.toml

passed=0
# Stop every daemon the test started, then (only after a pass) remove the work dir, which holds
# the cluster's pid files.
cleanup() {
  tests/slurm/cluster.sh stop "$state"
  if (( passed )); then rm -rf "$work"; else echo "slurm test: files kept in $work" >&2; fi
}
trap cleanup EXIT
tests/slurm/cluster.sh start "$state"
export SLURM_CONF=$state/slurm.conf

fail() {
  echo "slurm test: FAILED: $*" >&2
  "$ablate" status "$exp" --results "$results" >&2 || true
  squeue -h -t all -o '%i %T %r' >&2 || true
  tail -n 20 "$results"/ci/slurm/logs/*.out >&2 || true
  exit 1
}

submit() {
  "$ablate" run "$exp" --backend slurm --gpus-per-run 0 --cpus-per-run 1 --max-parallel 2 \
    --results "$results" --data-dir "$work/data"
}

runs=$("$ablate" plan "$exp" --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')
submit | tee "$work/submit1.txt"
grep -q "submitted job array .* with $runs runs" "$work/submit1.txt" || fail "the first submission did not submit $runs runs"
# While the array is queued or running, submitting again must not submit anything.
submit | tee "$work/submit2.txt"
grep -q "nothing to submit" "$work/submit2.txt" || fail "a second submission while the array runs submitted runs again"

deadline=$((SECONDS + 900))
while true; do
  "$ablate" status "$exp" --results "$results" > "$work/status.txt"
  grep -q "ci: $runs runs: $runs done" "$work/status.txt" && break
  [[ -n $(squeue -h -o %i) ]] || { sleep 2; "$ablate" status "$exp" --results "$results" | grep -q "$runs done" && break; fail "Slurm has no jobs left but not every run is done"; }
  (( SECONDS < deadline )) || fail "timed out"
  sleep 3
done
cat "$work/status.txt"

# Every run dir is complete, trained once, by a Slurm array task.
python3 - "$results/ci" "$runs" <<'PY' || fail "run dirs incomplete"
import csv, json, os, sys
root, runs = sys.argv[1], int(sys.argv[2])
plan = json.load(open(os.path.join(root, "plan.json")))
assert len(plan["runs"]) == runs
for run in plan["runs"]:
    d = os.path.join(root, run["id"])
    status = json.load(open(os.path.join(d, "status.json")))
    assert status["status"] == "done", (d, status["status"])
    assert status["attempts"] == 1, (d, status["attempts"])
    attempt = status["history"][0]
    assert attempt["slurm_job"], (d, attempt)
    assert attempt["git_commit"], d
    for f in ["config.toml", "summary.json", "model.safetensors", "checkpoint.safetensors", "train.log"]:
        assert os.path.isfile(os.path.join(d, f)), (d, f)
    rows = list(csv.DictReader(open(os.path.join(d, "metrics.csv"))))
    assert len(rows) == 2, (d, len(rows))
    print(f"{run['id']}: done by Slurm task {attempt['slurm_job']} on {attempt['host']}")
PY

# Everything done: submitting again submits nothing and trains nothing.
submit | tee "$work/submit3.txt"
grep -q "nothing to submit" "$work/submit3.txt" || fail "submitting a finished experiment submitted runs"
grep -q "$runs done" "$work/submit3.txt" || fail "a finished experiment was not reported done"
echo "slurm test: passed ($runs runs through sbatch --array)"
passed=1

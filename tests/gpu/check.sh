#!/usr/bin/env bash
# One-shot check of the CUDA build on a GPU machine that has only the NVIDIA driver and CUDA
# (no Rust toolchain, no network). Builds nothing: it takes an `ablate` built with
# `--features cuda` elsewhere (tests/cuda/build-binary.sh makes one on a CPU machine) and, in
# about 10 minutes at most:
#   1. `ablate run experiments/ci.toml --devices cuda:0` (the real nvidia-smi; 4 tiny runs),
#      and checks that every run is done and trained on cuda:0;
#   2. the device path on the GPU against the CPU kernels: the same short training (3 epochs of
#      256 synthetic images, through every phase of the pruning schedule) of a small
#      CondenseNeXt and a small CondenseNet-dsc on cpu and on cuda:0, whose per-epoch train and
#      test losses must agree to 1% (float32 on two devices, 24 SGD steps);
#   3. one epoch of condensenet-86 and one of condensenext on 50,000 synthetic images at batch
#      64 (`ablate train --dataset synthetic --subset 50000 --epochs 1`: the whole pruning
#      schedule runs within that epoch, so it is the schedule's average speed) and prints the
#      seconds per epoch beside the paper's V100 figures and this project's CPU figures. An
#      epoch that does not finish within its time limit is stopped (SIGTERM) and its time is
#      extrapolated from the last progress line. Each epoch's peak GPU memory is sampled
#      (nvidia-smi, every 0.5 s);
#   4. the authors' PyTorch code on the same GPU, when `peer/` holds it (git-ignored; made by
#      tests/gpu/prepare-peer.sh and carried with the working tree): peer/gpu_peer.py times
#      its training step (batch 64, fp32, cudnn.benchmark) with this machine's python3 and
#      PyTorch, and the table ends with both epochs side by side, their ratio, the paper's V100
#      epoch and both peak memories.
# On a CUDA tensor every layer runs the device path (src/model/device_ops.rs: convs as one
# batched matmul over the unfolded input, depthwise as nine shifted views; candle's autograd
# as the backward). There are no CUDA kernels of the project's own, so none is tested here.
#
# usage: tests/gpu/check.sh ABLATE [OUT]
#   ABLATE  the CUDA build of ablate
#   OUT     folder for the logs and run dirs (default: a temp dir, removed at the end)
# Run from anywhere inside a copy of the repository (it reads experiments/ci.toml).
# GPU_CHECK_IMAGES (default 50000) and GPU_CHECK_LIMIT (seconds per epoch run, default 180)
# exist for dry runs on a CPU (with a fake nvidia-smi and ABLATE_TEST_CUDA_ON_CPU=1), and
# GPU_PEER_DEVICE (default cuda), GPU_PEER_STEPS (default 200) and PYTHON (default python3) for
# the reference's.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { sed -n '2,20p' "$0"; exit 2; }
ablate=$(realpath "$1")
if [ $# -ge 2 ]; then
  work=$2
  mkdir -p "$work"
else
  work=$(mktemp -d /tmp/ablate-gpu.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi
started=$SECONDS
fail=0
say() { echo "== [$((SECONDS - started)) s] $*"; }

# The CUDA libraries the binary was linked against (libcuda from the driver; nvrtc, curand,
# cublas, cublasLt from the toolkit).
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d
done
export LD_LIBRARY_PATH
missing=$(ldd "$ablate" | grep 'not found')
if [ -n "$missing" ]; then
  echo "$ablate cannot load these libraries (put their folder on LD_LIBRARY_PATH):" >&2
  echo "$missing" >&2
  exit 1
fi
say "GPU and libraries"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
ldd "$ablate" | grep -E 'libcuda|nvrtc|curand|cublas'
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 5 \
  >"$work/nvidia-smi.csv" 2>/dev/null &
smi=$!

# 1. The scheduler with the real nvidia-smi, one GPU slot.
say "ablate run experiments/ci.toml --devices cuda:0"
if timeout -k 10 150 "$ablate" run experiments/ci.toml --devices cuda:0 \
  --results "$work/results" --reports "$work/reports" >"$work/ci-run.log" 2>&1; then
  runs=$(ls -d "$work"/results/ci/*/ | wc -l)
  on_gpu=$(grep -l '"device": "cuda:0"' "$work"/results/ci/*/status.json | wc -l)
  done_=$(grep -l '"status": "done"' "$work"/results/ci/*/status.json | wc -l)
  echo "ci: $runs runs, $done_ done, $on_gpu trained on cuda:0"
  [ "$runs" -eq 4 ] && [ "$done_" -eq 4 ] && [ "$on_gpu" -eq 4 ] || fail=1
else
  echo "ci run FAILED (exit $?); last lines of its log:"
  fail=1
fi
tail -n 15 "$work/ci-run.log"

# 2. The same training on cpu and cuda:0: per-epoch losses agree.
agree() { # NAME MODEL SETTINGS...
  local name=$1 model=$2
  shift 2
  for dev in cpu cuda:0; do
    local out=$work/agree-$name-${dev%%:*}
    timeout -k 10 120 "$ablate" train --model "$model" "$@" --epochs 3 --batch 32 \
      --dataset synthetic --subset 256 --test-subset 64 --device "$dev" --out "$out" \
      >"$out.log" 2>&1 || { echo "$name on $dev FAILED (exit $?)"; tail -n 5 "$out.log"; fail=1; }
  done
  local cpu=$work/agree-$name-cpu/metrics.csv gpu=$work/agree-$name-cuda/metrics.csv
  if [ -s "$cpu" ] && [ -s "$gpu" ]; then
    # epoch,train_loss,train_top1,test_loss,test_top1,...: the largest relative difference of
    # the losses over the epochs.
    paste -d, "$cpu" "$gpu" | awk -F, -v name="$name" -v n="$(head -n 1 "$cpu" | tr , '\n' | wc -l)" '
      NR > 1 { for (c = 2; c <= 4; c += 2) { a = $c; b = $(c + n); d = (a > b ? a - b : b - a) / (1e-6 + (a > b ? a : b))
        if (d > worst) worst = d }
        printf "%s epoch %d: train loss cpu %.6f gpu %.6f, test loss cpu %.6f gpu %.6f\n", name, $1, $2, $(2 + n), $4, $(4 + n) }
      END { printf "%s: largest relative loss difference %.2e\n", name, worst; exit (worst > 0.01) }' || fail=1
  else
    fail=1
  fi
}
say "the device path on cuda:0 against the CPU kernels"
agree condensenext condensenext --set 'stages=[1,1,1]'
agree condensenet-dsc condensenet-86-dsc --set 'stages=[1,1,1]'

# 3. One epoch at batch 64 on 50,000 synthetic images.
# name, paper V100 s/epoch, ablate on 2 CPU cores s/epoch (issue 21's side_by_side.sh medians,
# whole pruning schedule, AMD EPYC Zen 3, 2 threads: 51.69 and 169.19 img/s)
images=${GPU_CHECK_IMAGES:-50000}
epoch() { # MODEL LIMIT_S
  local model=$1 limit=$2 out=$work/$1
  say "ablate train --model $model --device cuda:0 (1 epoch, $images images, batch 64; limit ${limit} s)"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 \
    >"$work/$model.mem" 2>/dev/null &
  local mem=$!
  timeout -k 20 "$limit" "$ablate" train --model "$model" --device cuda:0 --epochs 1 --batch 64 \
    --dataset synthetic --subset "$images" --test-subset 1000 --out "$out" >"$work/$model.log" 2>&1
  local rc=$?
  tail -n 6 "$work/$model.log"
  if [ -s "$out/metrics.csv" ]; then
    # epoch,train_loss,train_top1,test_loss,test_top1,lr,epoch_seconds,data_seconds,compute_seconds,...
    awk -F, 'NR == 2 { printf "%.1f %.1f %.1f measured\n", $7, $8, $9 }' "$out/metrics.csv" \
      >"$work/$model.seconds"
  else
    # Stopped before the epoch ended: all the images at the last reported rate.
    grep -o '[0-9]* img/s' "$work/$model.log" | tail -n 1 |
      awk -v n="$images" '{ if ($1 > 0) printf "%.1f - - extrapolated from %d img/s\n", n / $1, $1 }' \
        >"$work/$model.seconds"
    [ -s "$work/$model.seconds" ] || echo "- - - no progress line (exit $rc)" >"$work/$model.seconds"
    fail=1
  fi
  kill "$mem" 2>/dev/null
  [ $rc -eq 0 ] || echo "$model: exit $rc"
}
epoch condensenet-86 "${GPU_CHECK_LIMIT:-180}"
epoch condensenext "${GPU_CHECK_LIMIT:-180}"
kill "$smi" 2>/dev/null

# 4. The reference on the same GPU.
peer=$work/peer.json
if [ -f peer/gpu_peer.py ]; then
  say "the authors' PyTorch code on the same GPU (peer/gpu_peer.py, ${GPU_PEER_STEPS:-200} steps a model)"
  PEERS=$PWD/peer timeout -k 10 240 "${PYTHON:-python3}" peer/gpu_peer.py \
    --device "${GPU_PEER_DEVICE:-cuda}" --steps "${GPU_PEER_STEPS:-200}" --json "$peer" \
    >"$work/peer.log" 2>&1 || { echo "reference FAILED (exit $?)"; fail=1; }
  tail -n 4 "$work/peer.log"
else
  echo "no peer/ (tests/gpu/prepare-peer.sh makes it): the authors' code is not timed here"
fi

say "seconds per training epoch (batch 64)"
# The reference's CIFAR-10 epoch and peak memory for a model, from gpu_peer.py's JSON.
reference() { # KEY FIELD
  [ -s "$peer" ] || { echo -; return; }
  "${PYTHON:-python3}" -c 'import json, sys
rows = {r["model"]: r for r in json.load(open(sys.argv[1]))}
v = rows.get(sys.argv[2], {}).get(sys.argv[3])
print("-" if v is None else f"{v:.1f}")' "$peer" "$1" "$2" 2>/dev/null || echo -
}
peak() { # MODEL: ablate's peak GPU memory during its epoch (MiB, GPU-wide)
  awk '{ if ($1 + 0 > m) m = $1 + 0 } END { if (NR) printf "%d", m; else printf "-" }' \
    "$work/$1.mem" 2>/dev/null || echo -
}
printf '%-15s %9s %9s %14s %7s %8s %12s %13s %s\n' model "ablate" "reference" "ref / ablate" \
  "V100" "CPU" "data/compute" "peak MiB a/r" how
for row in "condensenet-86 cn86_train 53.79 967" "condensenext cnx_c10 19.42 296"; do
  set -- $row
  read -r total data compute how <"$work/$1.seconds"
  ref=$(reference "$2" cifar10_epoch_s)
  # ablate's epoch scaled to 50,000 images (the same figure when GPU_CHECK_IMAGES is 50000).
  full=$(awk -v t="$total" -v n="$images" 'BEGIN { if (t + 0 > 0) printf "%.1f", t * 50000 / n; else printf "-" }')
  ratio=$(awk -v a="$full" -v r="$ref" 'BEGIN { if (a + 0 > 0 && r + 0 > 0) printf "%.2fx", r / a; else printf "-" }')
  printf '%-15s %9s %9s %14s %7s %8s %12s %13s %s\n' "$1" "$full" "$ref" "$ratio" "$3" "$4" \
    "$data/$compute" "$(peak "$1")/$(reference "$2" peak_gpu_mb)" "$how"
done
echo "(seconds per CIFAR-10-sized epoch of 50,000 images. ablate: one epoch of $images images on this GPU,"
echo " whole pruning schedule, data loading included, scaled to 50,000; data/compute: its unscaled split; reference: the authors' training step at batch 64 on random"
echo " inputs, CondenseNet-86 in its train form and CondenseNeXt's released code (which never prunes):"
echo " 50,000 images at its img/s; ref / ablate above 1: ablate is faster. V100: the paper's epochs. CPU: ablate on"
echo " 2 cores of an AMD EPYC, averaged over the schedule. Peak memory: ablate's whole GPU (nvidia-smi)"
echo " during its epoch / the reference's torch.cuda.max_memory_allocated.)"
if [ -s "$work/nvidia-smi.csv" ]; then
  awk -F', ' '{ u = $2 + 0; m = $3 + 0; if (u > mu) mu = u; if (m > mm) mm = m }
    END { printf "GPU peak utilisation %d %%, peak memory %d MiB (5 s samples)\n", mu, mm }' \
    "$work/nvidia-smi.csv"
fi
say "done: $([ $fail -eq 0 ] && echo PASS || echo FAIL)"
exit $fail

#!/usr/bin/env bash
# Compiles the CUDA build without a GPU: installs a CUDA 13.0 toolkit from PyPI's wheels into a
# venv (tests/cuda/toolkit.sh), then `cargo check --locked --release --features cuda
# --all-targets`. candle-kernels compiles its .cu files to PTX with that nvcc (most of the
# time); nothing is linked (that needs libcuda.so, which no wheel has: see
# tests/cuda/build-binary.sh) and nothing runs on a GPU.
#
# usage: tests/cuda/check-build.sh
# CUDA_VENV names the venv to use or create (default target/cuda-venv); CUDA_CHECK_TARGET_DIR
# the cargo target dir (default target/cuda-check: the CPU build in target/ is left alone).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/cuda/toolkit.sh
export CARGO_TARGET_DIR=${CUDA_CHECK_TARGET_DIR:-target/cuda-check}
started=$SECONDS
cargo check --locked --release --features cuda --all-targets
echo "cargo check --features cuda --all-targets passed in $((SECONDS - started)) s"

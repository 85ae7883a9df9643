#!/usr/bin/env bash
# Builds `ablate` with `--features cuda` on a machine without a GPU or a driver, for
# tests/gpu/check.sh to run on a GPU machine that has no Rust toolchain. The CUDA 13.0 toolkit
# comes from PyPI (tests/cuda/toolkit.sh). candle links cudarc with `dynamic-linking`, so the
# executable needs libcuda, libnvrtc, libcurand, libcublas and libcublasLt at link time; none
# is in a wheel without a driver, so this links against stubs: small shared libraries, compiled
# here with gcc (plus libcudart, which the wheel has), that export every CUDA symbol the cudarc rlib references (`nm -u`), each
# function returning an error code, under the real libraries' sonames (libcuda.so.1,
# libnvrtc.so.13, libcurand.so.10, libcublas.so.13, libcublasLt.so.13), put beside the wheel's
# libcudart in $CUDA_PATH/lib (a folder cudarc's build script passes to the linker). On the GPU
# machine the dynamic loader binds those names to the real driver and toolkit libraries. The
# stubs are never shipped. With them in place, `cargo test --features cuda` links too (run its
# tests with $CUDA_PATH/lib on LD_LIBRARY_PATH: CPU tests pass, `cuda:0` fails to open).
#
# usage: tests/cuda/build-binary.sh [OUT]
#   OUT  where to copy the executable (default $CUDA_BUILD_TARGET_DIR/ablate-cuda)
# CUDA_BUILD_TARGET_DIR: the cargo target dir (default target/cuda-check, shared with
# check-build.sh so candle-kernels' PTX is compiled once).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/cuda/toolkit.sh
export CARGO_TARGET_DIR=${CUDA_BUILD_TARGET_DIR:-target/cuda-check}
out=${1:-$CARGO_TARGET_DIR/ablate-cuda}

# Everything but the executable (no link step needs the CUDA libraries yet).
cargo build --locked --release --features cuda --lib

src=$CARGO_TARGET_DIR/cuda-stubs stubs=$cuda/lib
rm -rf "$src"
mkdir -p "$src"
rlibs=("$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib)
symbols=$(nm -u --format=just-symbols "${rlibs[@]}" 2>/dev/null |
  grep -E '^(cu[A-Z]|nvrtc[A-Z]|curand[A-Z]|cublas)' | sort -u)
[ -n "$symbols" ] || { echo "no CUDA symbols found in ${rlibs[*]}" >&2; exit 1; }
stub() { # LIBRARY SONAME REGEX [EXCLUDE REGEX]
  local lib=$1 soname=$2 regex=$3 exclude=${4:-^$} c=$src/$1.c
  grep -E "$regex" <<<"$symbols" | grep -Ev "$exclude" |
    sed 's/.*/int &(void) { return 999; }/' >"$c" || true
  gcc -shared -fPIC -o "$stubs/$lib.so" -Wl,-soname,"$soname" "$c"
  ln -sf "$lib.so" "$stubs/$soname"
  echo "stub $soname: $(grep -c . "$c") symbols"
}
stub libcuda libcuda.so.1 '^cu[A-Z]'
stub libnvrtc libnvrtc.so.13 '^nvrtc'
stub libcurand libcurand.so.10 '^curand'
stub libcublasLt libcublasLt.so.13 '^cublasLt'
stub libcublas libcublas.so.13 '^cublas' '^cublasLt'
# candle-kernels' static libmoe also needs -lcudart: the wheel's real runtime, under its
# development name.
ln -sf libcudart.so.13 "$stubs/libcudart.so"

cargo build --locked --release --features cuda --bin ablate
cp "$CARGO_TARGET_DIR/release/ablate" "$out"
echo "built $out; it needs:"
readelf -d "$out" | grep NEEDED

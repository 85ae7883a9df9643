#!/usr/bin/env bash
# Puts the authors' PyTorch code where tests/gpu/check.sh looks for it: `peer/` at the top of
# the checkout (git-ignored), to be carried to the GPU machine with the working tree (the
# `../shared` beside a checkout does not travel). It holds the timing script gpu_peer.py and its
# helper bench_peer.py, and the source files of the two clones (CondenseNet/, CondenseNeXt/;
# no .git), under 1 MB in all.
#
# usage: tests/gpu/prepare-peer.sh SCRIPTS CLONES
#   SCRIPTS  the folder with gpu_peer.py and bench_peer.py (this workplace: ../shared/peer)
#   CLONES   the folder with the CondenseNet/ and CondenseNeXt/ clones (see that README)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { sed -n '2,12p' "$0"; exit 2; }
scripts=$1 clones=$2
for f in "$scripts/gpu_peer.py" "$scripts/bench_peer.py" "$clones/CondenseNet" "$clones/CondenseNeXt"; do
  [ -e "$f" ] || { echo "missing: $f" >&2; exit 2; }
done
rm -rf peer.tmp
mkdir -p peer.tmp
cp "$scripts/gpu_peer.py" "$scripts/bench_peer.py" peer.tmp/
for repo in CondenseNet CondenseNeXt; do
  (cd "$clones/$repo" && find . -path ./.git -prune -o -type f -print0 | tar --null -T - -cf -) |
    (mkdir -p "peer.tmp/$repo" && cd "peer.tmp/$repo" && tar -xf -)
done
rm -rf peer
mv peer.tmp peer
echo "peer/: $(du -sh peer | cut -f1); carry it: run(carry=[\"peer\"], command=\"bash tests/gpu/check.sh ...\")"

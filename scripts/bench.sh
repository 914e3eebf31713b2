#!/usr/bin/env bash
# Run the benchmarks (set-up as for the tests); copy their figures into bench/RESULTS.md.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
edge-asr models prepare
for bench in bench/*.py; do
  echo "== $bench"
  python "$bench" "$@"
done

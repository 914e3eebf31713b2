#!/usr/bin/env bash
# Run the benchmarks (all, or those named: `bash scripts/bench.sh lifecycle`), set up as for the
# tests; copy their figures into bench/RESULTS.md. One alone, with its options:
# `source scripts/env.sh && python -m bench.lifecycle --cycles 50`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
edge-asr models prepare
names=("$@")
[ ${#names[@]} -gt 0 ] || names=($(cd bench && ls [a-z]*.py | sed 's/\.py$//'))
for name in "${names[@]}"; do
  if [ "$name" = transcription ] || [ "$name" = wyoming ]; then
    debian_packages espeak-ng:espeak-ng
  elif [ "$name" = fleet ]; then
    debian_packages haproxy:haproxy
  fi
  echo "== bench.$name"
  python -m "bench.$name"
done

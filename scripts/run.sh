#!/usr/bin/env bash
# Command 1: set up everything (cached), prepare the default models on first run, then transcribe
# the sample clips with the default speech model. (The HTTP service replaces this demo in issue 3.)
set -euo pipefail
source "$(dirname "$0")/env.sh"
edge-asr models prepare
edge-asr samples | while IFS=$'\t' read -r name path; do
  echo "== $name"
  edge-asr transcribe "$path" "$@"
done

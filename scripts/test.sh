#!/usr/bin/env bash
# Command 2: set up everything (cached) and run the checks and the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k audio`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
debian_packages espeak-ng:espeak-ng chromium:chromium chromedriver:chromium-driver haproxy:haproxy  # German and Spanish speech; the page in a browser; a router
edge-asr models prepare
ruff check .
ruff format --check .
python -m pytest --durations=20 "$@"  # the slowest: what a CI run spends its time on

#!/usr/bin/env bash
# Command 1: set up everything (cached), prepare the default models on first run, then run the
# service. Arguments go to `edge-asr serve` (e.g. --host 0.0.0.0 to answer the LAN).
set -euo pipefail
source "$(dirname "$0")/env.sh"
edge-asr models prepare
exec edge-asr serve "$@"

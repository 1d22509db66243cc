#!/usr/bin/env bash
# The fault suite's one command: runs the nemesis (tests/nemesis.rs) with a seeded schedule,
# one of every fault kind and then random ones for the given time, and writes a report.
#
#   bash scripts/nemesis.sh [SEED] [SECONDS] [OUT_DIR]
#
# SEED (default: random, printed) replays a run exactly; SECONDS (default 300) is the extra
# randomized fault time; OUT_DIR (default ./nemesis-SEED) gets report.md and report.json, and on
# failure the nodes' data dirs and logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
seed="${1:-$RANDOM$RANDOM}"
secs="${2:-300}"
out="${3:-$ROOT/nemesis-$seed}"
echo "nemesis: seed $seed, $secs s of random faults after one of each kind; report in $out"
NACRE_NEMESIS_SEED="$seed" NACRE_NEMESIS_SECS="$secs" NACRE_NEMESIS_OUT="$out" \
    cargo nextest run --workspace --no-capture --no-fail-fast \
    -E 'binary(nemesis)'

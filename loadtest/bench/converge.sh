#!/usr/bin/env bash
# How long a node that lost its data takes to converge on a loaded cluster: three registry
# nodes and a gateway, FLEET_SERVICES × FLEET_INSTANCES ephemeral instances registered through
# the gateway (kept alive by day-long `preserved.*` timeouts, so nothing expires while it
# runs), then one node is killed with -9, its data wiped, and it is started again. The figure is
# the time from that start to the node reporting UP (rule S1: ready only once it holds a
# loaded peer's snapshot) and the instances it then holds.
#
#   bash loadtest/bench/converge.sh            # results under $NACRE_BENCH_OUT (printed)
#
# Knobs (environment): FLEET_SERVICES (100000), FLEET_INSTANCES (10), BENCH_CONCURRENCY (64),
# BENCH_PORT_BASE (29000), NACRE_BENCH_CACHE, NACRE_BENCH_OUT, NACRE_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"
bench_addresses
OUT="${NACRE_BENCH_OUT:-$CACHE/converge-$(date +%Y%m%d-%H%M%S)}"
SERVICES="${FLEET_SERVICES:-100000}"
INSTANCES="${FLEET_INSTANCES:-10}"
CONC="${BENCH_CONCURRENCY:-64}"
cluster_addresses converge-bench-cluster-secret
GW="127.0.0.1:$((PORT + 10))"
mkdir -p "$OUT"
forget_knobs
build_nacre

start_nodes "$OUT/node"
NACRE_LOG=warn "$NACRE" gateway --listen "$GW" --cluster-secret "$SECRET" \
    --upstreams "$MEMBERS" >"$OUT/gateway.log" 2>&1 &
PIDS+=($!)
wait_for "gateway $GW" "http://$GW/nacre/gateway/ready" '"feedsFollowed":true'

echo "== registering $SERVICES x $INSTANCES instances through the gateway"
run load --target "$GW" --target-pid "${NODE_PIDS[0]}" --scenario memory \
    --services "$SERVICES" --instances-per-service "$INSTANCES" --concurrency "$CONC"

count() { # addr -> instances the node holds
    curl -fsS "http://$1/nacos/v1/ns/operator/metrics" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["instanceCount"])'
}
LAST=$((${#NODES[@]} - 1))
ADDR="${NODES[$LAST]}"
echo "== node $ADDR holds $(count "$ADDR") instances; kill -9, wipe, restart"
kill -9 "${NODE_PIDS[$LAST]}"
wait "${NODE_PIDS[$LAST]}" 2>/dev/null || true
DIR="$OUT/node$((LAST + 1))"
rm -rf "$DIR" && mkdir -p "$DIR"
START=$(date +%s.%N)
NACRE_LOG=info "$NACRE" registry --listen "$ADDR" --data "$DIR" \
    --cluster-secret "$SECRET" --members "$MEMBERS" >"$DIR/nacre.log" 2>&1 &
PIDS+=($!)
until curl -fsS "http://$ADDR/nacos/v1/ns/operator/metrics" 2>/dev/null | grep -qF '"status":"UP"'; do
    sleep 0.05
done
END=$(date +%s.%N)
HELD=$(count "$ADDR")
python3 - "$START" "$END" "$HELD" "$((SERVICES * INSTANCES))" <<'PY' | tee "$OUT/summary.md"
import sys
start, end, held, want = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"restarted node ready after {end - start:.2f} s holding {held:,} of {want:,} instances")
PY
grep -F "loaded distro snapshot" "$DIR/nacre.log" || true

#!/usr/bin/env bash
# The same fleet against each deployment, one after the other, with the server CPU each spends
# per request: a standalone nacre node, `nacre up` (gateway + 3 nodes in one process), a
# standalone r-nacos 0.8.8 and a 3-node r-nacos cluster (the harness talks to its first node,
# which hands each write to its service's owner as r-nacos's Distro does; CPU summed over the
# three processes with `--also-pid`), each fresh.
#
#   bash loadtest/bench/fleet.sh               # results under $NACRE_BENCH_OUT (printed)
#
# The fleet is `nacre loadtest --scenario mixed`: every instance beats every 5 s and its client
# lists --dependencies services every 10 s with a push subscription (400 services × 50
# instances by default: 4,000 beats/s + 6,000 lists/s).
#
# A standalone node and `nacre up` run FLEET_PAIRS times, alternately, each time fresh: this
# machine's speed drifts by up to 2x over minutes, so their ratio is taken per pair (runs
# side by side) and the summary gives each pair's and their median. With FLEET_TOGETHER=1 the
# two of a pair run at the same time, each with its own harness, so both see the same machine
# whatever its speed at that moment (the fleet needs ~1.3 of this machine's 2 cores for both
# servers and both harnesses); a pair's ratio is then free of the drift between two runs. Each
# harness first registers its fleet as fast as it can, unmeasured, so the two measured windows
# start a moment apart.
#
# Knobs (environment): FLEET_SERVICES (400), FLEET_INSTANCES (50), FLEET_PAIRS (3),
# FLEET_TOGETHER (0), FLEET_RNACOS (1; 0 runs nacre only),
# BENCH_DURATION (40s), BENCH_CONCURRENCY (64), BENCH_PORT_BASE (29000), NACRE_BENCH_CACHE,
# NACRE_BENCH_OUT, NACRE_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"
bench_addresses
OUT="${NACRE_BENCH_OUT:-$CACHE/fleet-$(date +%Y%m%d-%H%M%S)}"
DURATION="${BENCH_DURATION:-40s}"
CONC="${BENCH_CONCURRENCY:-64}"
SERVICES="${FLEET_SERVICES:-400}"
INSTANCES="${FLEET_INSTANCES:-50}"
PAIRS="${FLEET_PAIRS:-3}"
TOGETHER="${FLEET_TOGETHER:-0}"
RNACOS="${FLEET_RNACOS:-1}"
UP_ADDR="127.0.0.1:$((PORT + 20))"
mkdir -p "$OUT"
forget_knobs
# A pair's background harness (FLEET_TOGETHER) ends with the script, however it ends: lib.sh's
# cleanup stops the servers, not the pipeline `run` starts in the background subshell.
ALONE=""
trap 'if [ -n "$ALONE" ]; then pkill -P "$ALONE" 2>/dev/null || true; fi; cleanup' EXIT
if [ "$RNACOS" != 0 ]; then install_rnacos; fi
build_nacre

fleet() { # name addr pid [further arguments]
    local name=$1 addr=$2 pid=$3
    shift 3
    run "fleet-$name" --target "$addr" --target-pid "$pid" --scenario mixed \
        --services "$SERVICES" --instances-per-service "$INSTANCES" --concurrency "$CONC" \
        --duration "$DURATION" --seed 130 "$@"
}

echo "fleet of $SERVICES x $INSTANCES for $DURATION, $PAIRS pairs; results in $OUT"
for pair in $(seq 1 "$PAIRS"); do
    # The first pair keeps the plain names the r-nacos rows are compared with.
    tag=""
    if [ "$pair" -gt 1 ]; then tag="-$pair"; fi
    start_nacre "$OUT/standalone$tag"
    if [ "$TOGETHER" = 0 ]; then
        fleet "standalone$tag" "$NACRE_ADDR" "$NACRE_PID"
        stop "$NACRE_PID"
    fi

    rm -rf "$OUT/up$tag" && mkdir -p "$OUT/up$tag"
    NACRE_LOG=warn "$NACRE" up --listen "$UP_ADDR" --data "$OUT/up$tag" \
        >"$OUT/up$tag/nacre-up.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    wait_up "$UP_ADDR" "nacre up" '"status":"UP"'
    if [ "$TOGETHER" = 0 ]; then
        fleet "nacre-up$tag" "$UP_ADDR" "$UP_PID"
    else
        # Both fleets at once; the standalone one's output goes to its report files only.
        fleet "standalone$tag" "$NACRE_ADDR" "$NACRE_PID" >/dev/null &
        ALONE=$!
        fleet "nacre-up$tag" "$UP_ADDR" "$UP_PID"
        wait "$ALONE"
        ALONE=""
        stop "$NACRE_PID"
    fi
    stop "$UP_PID"
done

if [ "$RNACOS" != 0 ]; then
    start_rnacos "$OUT/rnacos"
    fleet r-nacos "$RNACOS_ADDR" "$RNACOS_PID"
    stop "$RNACOS_PID"

    start_rnacos_cluster "$OUT/rnacos-cluster"
    fleet r-nacos-3 "${RNACOS_CLUSTER_ADDRS[0]}" "${RNACOS_CLUSTER_PIDS[0]}" \
        --also-pid "${RNACOS_CLUSTER_PIDS[1]}" --also-pid "${RNACOS_CLUSTER_PIDS[2]}"
    for p in "${RNACOS_CLUSTER_PIDS[@]}"; do stop "$p"; done
fi

python3 - "$OUT" "$PAIRS" <<'PY' | tee "$OUT/summary.md"
import json, os, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def cpu_per_request(r):
    return (r.get("server") or {}).get("cpu_seconds", 0) / max(r["requests"], 1)
ratios = []
print("| pair | standalone CPU-s | nacre up CPU-s | nacre up per request vs standalone |")
print("|---|---|---|---|")
for pair in range(1, pairs + 1):
    tag = "" if pair == 1 else f"-{pair}"
    paths = [os.path.join(out, f"fleet-{n}{tag}.json") for n in ("standalone", "nacre-up")]
    if not all(os.path.exists(p) for p in paths):
        continue
    single, up = (json.load(open(p)) for p in paths)
    ratio = cpu_per_request(up) / max(cpu_per_request(single), 1e-12)
    ratios.append(ratio)
    print(f"| {pair} | {single['server']['cpu_seconds']:.2f} | {up['server']['cpu_seconds']:.2f} | x{ratio:.2f} |")
if ratios:
    print(f"\nnacre up vs standalone, median of {len(ratios)} pairs: x{statistics.median(ratios):.2f} "
          f"(lowest x{min(ratios):.2f}, highest x{max(ratios):.2f})\n")
rows = []
for name in ["standalone", "nacre-up", "r-nacos", "r-nacos-3"]:
    p = os.path.join(out, f"fleet-{name}.json")
    if os.path.exists(p):
        rows.append((name, json.load(open(p))))
base = next((r["server"]["cpu_seconds"] / max(r["requests"], 1) for n, r in rows if n == "standalone"), None)
print("| target | requests | errors | instances lost | p50 ms | p99 ms | server CPU-s | requests per server CPU-s | CPU per request vs standalone |")
print("|---|---|---|---|---|---|---|---|---|")
for name, r in rows:
    s = r.get("server") or {}
    lost = r.get("lost") or {}
    per = s.get("cpu_seconds", 0) / max(r["requests"], 1)
    rel = f"x{per / base:.2f}" if base else ""
    print(f"| {name} | {r['requests']} | {r['errors']} | {lost.get('beats_unknown', 0) + lost.get('lists_short', 0)} | "
          f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {s.get('cpu_seconds', 0):.2f} | "
          f"{s.get('requests_per_cpu_second', 0):.0f} | {rel} |")
PY
echo "results: $OUT"

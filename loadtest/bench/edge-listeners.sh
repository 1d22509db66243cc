#!/usr/bin/env bash
# Config listeners held at the gateway's edge: what 100,000 parked long-polls cost, and that
# the nodes hold none of them. Three registry nodes and one gateway (separate processes, so
# each one's memory and CPU is its own) on loopback; `nacre loadtest --scenario config-listen`
# through the gateway: one listener per config, each holding a 30 s long-poll with the md5 it
# knows, while publishes land at a fixed rate (each times the notification it causes).
#
# Two modes, one after the other on fresh processes:
#   edge   the gateway holds the listeners (the default, `hold_config_listeners = true`)
#   node   the gateway passes them to a node, which holds them (`hold_config_listeners = false`)
#
# A sampler reads every second: RSS and CPU time of the gateway and of the nodes, the
# listeners parked at the gateway (`nacre_gateway_config_listeners`) and on the nodes
# (`nacre_config{field="parked_listeners"}`). The summary gives, per mode, memory per parked
# listener ((RSS at the plateau − RSS just before the listeners came) / listeners parked) and
# the CPU each tier used per second on the plateau (≥ 95 % of the listeners parked).
#
#   bash loadtest/bench/edge-listeners.sh          # results under $NACRE_BENCH_OUT (printed)
#
# Knobs (environment): NACRE_BENCH_OUT (results dir, default
# ~/.cache/nacre-bench/edge-listeners-DATE), BENCH_LISTENERS (default: what the descriptor
# limit allows in both modes, at most 100000; see below), BENCH_PUBLISH_RATE
# (publishes per second, 100), BENCH_DURATION (measured stream, 90s), BENCH_MODES ("edge node"),
# BENCH_PORT_BASE (first loopback port, 29300; uses base+1..+3 and +10), NACRE_BIN (an already
# built nacre binary: skips the release build).
#
# Every listener is one connection, so the open-file limit bounds the run: the script raises
# the soft limit to the hard one. In `edge` mode the gateway holds one descriptor per
# listener, in `node` mode two (the client's and the one to the node); the default count is
# therefore (hard limit − 1,000) / 2, capped at 100,000. Where the hard limit can be raised
# (root with CAP_SYS_RESOURCE: `ulimit -Hn 1048576` before running), 100,000 listeners need it
# above 201,000.
# Needs: cargo, curl, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"
OUT="${NACRE_BENCH_OUT:-$HOME/.cache/nacre-bench/edge-listeners-$(date +%Y%m%d-%H%M%S)}"
ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
DEFAULT_LISTENERS=$(((FD_LIMIT - 1000) / 2))
[ "$DEFAULT_LISTENERS" -gt 100000 ] && DEFAULT_LISTENERS=100000
LISTENERS="${BENCH_LISTENERS:-$DEFAULT_LISTENERS}"
RATE="${BENCH_PUBLISH_RATE:-100}"
MEASURE="${BENCH_DURATION:-90s}"
MODES="${BENCH_MODES:-edge node}"
PORT="${BENCH_PORT_BASE:-29300}"
cluster_addresses edge-listeners-bench-cluster-secret
GW="127.0.0.1:$((PORT + 10))"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
forget_knobs
echo "== $LISTENERS listeners (open-file limit $FD_LIMIT)"
build_nacre


# One sample per second until the file $OUT/$1.stop appears: seconds, then for the gateway
# and for the nodes together RSS (KiB) and CPU ticks, then listeners parked at each tier.
sample() { # mode, gateway pid, node pids…
    local mode=$1 gw=$2
    shift 2
    local hz
    hz=$(getconf CLK_TCK)
    echo "t gw_rss_kib gw_cpu_s nodes_rss_kib nodes_cpu_s gw_parked nodes_parked" >"$OUT/$mode.samples"
    local start
    start=$(date +%s.%N)
    while [ ! -e "$OUT/$mode.stop" ]; do
        local now gw_rss gw_cpu n_rss=0 n_cpu=0 gw_parked n_parked=0
        now=$(date +%s.%N)
        gw_rss=$(awk '/^VmRSS/ {print $2}' "/proc/$gw/status")
        gw_cpu=$(awk -v hz="$hz" '{print ($14 + $15) / hz}' "/proc/$gw/stat")
        for p in "$@"; do
            n_rss=$((n_rss + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
            n_cpu=$(awk -v a="$n_cpu" -v hz="$hz" '{print a + ($14 + $15) / hz}' "/proc/$p/stat")
        done
        gw_parked=$(curl -fsS "http://$GW/metrics" | awk '/^nacre_gateway_config_listeners / {print $2}')
        for n in "${NODES[@]}"; do
            n_parked=$((n_parked + $(curl -fsS "http://$n/metrics" \
                | awk '/^nacre_config\{field="parked_listeners"\}/ {print $2}')))
        done
        echo "$(awk -v a="$now" -v b="$start" 'BEGIN {print a - b}') $gw_rss $gw_cpu $n_rss $n_cpu ${gw_parked:-0} $n_parked" \
            >>"$OUT/$mode.samples"
        sleep 1
    done
}

for mode in $MODES; do
    case $mode in
    edge) hold=true ;;
    node) hold=false ;;
    *) echo "unknown mode $mode (edge, node)" >&2; exit 2 ;;
    esac
    start_nodes "$OUT/$mode-node"
    echo "hold_config_listeners = $hold" >"$OUT/$mode-gateway.toml"
    NACRE_LOG=warn "$NACRE" gateway --listen "$GW" --threads 2 --cluster-secret "$SECRET" \
        --upstreams "$MEMBERS" --config "$OUT/$mode-gateway.toml" >"$OUT/$mode-gateway.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_for "gateway $GW" "http://$GW/nacre/gateway/ready" '"feedsFollowed":true'
    rm -f "$OUT/$mode.stop"
    sample "$mode" "$GW_PID" "${NODE_PIDS[@]}" &
    SAMPLER=$!
    run "$mode-config-listen" --target "$GW" --target-pid "$GW_PID" --scenario config-listen \
        --services "$LISTENERS" --listeners "$LISTENERS" --config-bytes 256 --rate "$RATE" \
        --duration "$MEASURE" --concurrency 64 --seed 301
    touch "$OUT/$mode.stop"
    wait "$SAMPLER"
    for p in "$GW_PID" "${NODE_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
done

python3 - "$OUT" "$LISTENERS" $MODES <<'EOF'
import sys
out, target, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"\n== parked config listeners ({target:,} listeners), per mode")
print("| mode | held by | parked at the gateway | parked on nodes | gateway RSS before → with | gateway B/listener | nodes B/listener | gateway CPU %/s | nodes CPU %/s |")
print("|---|---|---|---|---|---|---|---|---|")
for mode in modes:
    rows = [list(map(float, l.split())) for l in open(f"{out}/{mode}.samples").read().split("\n")[1:] if l.strip()]
    parked = [r[5] + r[6] for r in rows]
    peak = max(parked)
    # Baseline: setup done (configs published), no listener connected yet. The sample right
    # before the first parked one may already hold connecting listeners: it is left out.
    first = next(i for i, p in enumerate(parked) if p > 0)
    base = rows[max(first - 2, 0)]
    plateau = [r for r, p in zip(rows, parked) if p >= 0.95 * target]
    if len(plateau) < 2:
        print(f"| {mode} | plateau not reached (peak {peak:,.0f} parked) |")
        continue
    last = plateau[-1]
    n = max(last[5] + last[6], 1)
    gw_b = (last[1] - base[1]) * 1024 / n
    nodes_b = (last[3] - base[3]) * 1024 / n
    span = plateau[-1][0] - plateau[0][0]
    gw_cpu = (plateau[-1][2] - plateau[0][2]) / span * 100
    nodes_cpu = (plateau[-1][4] - plateau[0][4]) / span * 100
    held = "gateway" if last[5] >= last[6] else "nodes"
    print(f"| {mode} | {held} | {last[5]:,.0f} | {last[6]:,.0f} | {base[1] / 1024:.0f} → {last[1] / 1024:.0f} MiB | {gw_b:,.0f} | {nodes_b:,.0f} | {gw_cpu:.1f} | {nodes_cpu:.1f} |")
print(f"\n(samples and reports in {out})")
EOF

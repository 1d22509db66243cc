#!/usr/bin/env bash
# Graceful overload (Issue 14, item 3): each server under a CPU limit, offered twice the lists
# it serves while a fleet keeps beating, then backed off to half of them.
#
#   sudo bash loadtest/bench/overload.sh     # results under $NACRE_BENCH_OUT (printed)
#
# Why a CPU limit: on a 2-core machine the load generator cannot offer twice what an unlimited
# server serves, since both share the cores. The server runs in a cgroup (v1 `cpu` or v2) with
# OVERLOAD_CPU cores (0.4 by default), as under a Kubernetes CPU limit; the harness keeps the
# rest. Each server, fresh each time:
#   1. capacity: closed-loop lists (`--scenario list`, 64 connections) -> C lists/s;
#   2. restarted fresh, `--scenario overload`: lists at 2 x C for OVERLOAD_FOR, then C / 2
#      until the end, while every instance beats every 5 s on connections of its own.
# Servers: nacre standalone as configured by default (reads wait their turns and are never
# shed; its measured lag holds expiry back), nacre with NACRE_OVERLOAD_LAG_MS=1000 (reads shed
# past 1 s of lag), r-nacos 0.8.8, and on request (OVERLOAD_SERVERS) `nacre-up`: `nacre up`,
# gateway and three nodes in one process under the one limit (its gateway on OVERLOAD_UP_THREADS
# threads, 1 as `nacre up` runs it by default).
# With OVERLOAD_PUSH_CLIENTS=N, pushes compete with the flood: every list subscribes from one of N
# client addresses and each service changes once a second (`--push-clients`, nacre only: the
# harness's client addresses are 127.0.0.x), and the summary adds what the pushes showed. C is
# then what the server serves with that mix (step 1b: offered C for 15 s with beats, changes and
# pushes on, the median of the lists it served per second), when lower than lists alone: the
# run offers twice it and backs off to half of it.
#
# Knobs (environment): OVERLOAD_SERVERS ("nacre nacre-shedding r-nacos"), OVERLOAD_CPU (0.4),
# OVERLOAD_UP_THREADS (1), OVERLOAD_PUSH_CLIENTS (none),
# OVERLOAD_FOR (40s), BENCH_DURATION (60s),
# FLEET_SERVICES (100), FLEET_INSTANCES (20), BENCH_CONCURRENCY (6000), BENCH_PORT_BASE
# (29000), NACRE_BENCH_CACHE, NACRE_BENCH_OUT, NACRE_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"
bench_addresses
OUT="${NACRE_BENCH_OUT:-$CACHE/overload-$(date +%Y%m%d-%H%M%S)}"
DURATION="${BENCH_DURATION:-60s}"
OVERLOAD_FOR="${OVERLOAD_FOR:-40s}"
CPU="${OVERLOAD_CPU:-0.4}"
CONC="${BENCH_CONCURRENCY:-6000}"
SERVICES="${FLEET_SERVICES:-100}"
INSTANCES="${FLEET_INSTANCES:-20}"
SERVERS="${OVERLOAD_SERVERS:-nacre nacre-shedding r-nacos}"
mkdir -p "$OUT"
forget_knobs
case " $SERVERS " in *" r-nacos "*) install_rnacos ;; esac
build_nacre

# The cgroup the servers run in, limited to $CPU cores.
QUOTA=$(python3 -c "print(int(float('$CPU') * 100000))")
if [ -d /sys/fs/cgroup/cpu ]; then
    CG=/sys/fs/cgroup/cpu/nacre-bench-overload
    mkdir -p "$CG"
    echo 100000 >"$CG/cpu.cfs_period_us"
    echo "$QUOTA" >"$CG/cpu.cfs_quota_us"
else
    # cgroup v2: the cpu controller must be enabled for the children of the root.
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    CG=/sys/fs/cgroup/nacre-bench-overload
    mkdir -p "$CG"
    echo "$QUOTA 100000" >"$CG/cpu.max"
fi
# The servers are stopped first (lib.sh's cleanup), then the emptied cgroup goes.
trap 'cleanup; rmdir "$CG" 2>/dev/null || true' EXIT
# A command prefix that enters the cgroup, then becomes the command.
# shellcheck disable=SC2016 # $$ and "$@" belong to the inner shell.
CGROUP_ENTER=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG")
limited() { # command…: becomes it, inside the cgroup (call in the background: `limited … &`)
    exec "${CGROUP_ENTER[@]}" "$@"
}

start_server() { # name dir: sets SERVER_ADDR, SERVER_PID
    rm -rf "$2" && mkdir -p "$2"
    case "$1" in
    nacre | nacre-shedding)
        local lag=0
        [ "$1" = nacre-shedding ] && lag=1000
        NACRE_LOG=warn NACRE_OVERLOAD_LAG_MS=$lag limited "$NACRE" registry --standalone \
            --listen "$NACRE_ADDR" --data "$2" >"$2/nacre.log" 2>&1 &
        SERVER_PID=$!
        SERVER_ADDR=$NACRE_ADDR
        PIDS+=("$SERVER_PID")
        wait_up "$NACRE_ADDR" nacre '"status":"UP"'
        ;;
    nacre-up)
        # Gateway and three nodes in one process, all inside the same CPU limit.
        NACRE_LOG=warn limited "$NACRE" up --listen "$NACRE_ADDR" --data "$2" \
            --threads "${OVERLOAD_UP_THREADS:-1}" >"$2/nacre.log" 2>&1 &
        SERVER_PID=$!
        SERVER_ADDR=$NACRE_ADDR
        PIDS+=("$SERVER_PID")
        wait_up "$NACRE_ADDR" "nacre up" '"status":"UP"'
        ;;
    r-nacos)
        RNACOS_WRAP=("${CGROUP_ENTER[@]}")
        start_rnacos "$2"
        RNACOS_WRAP=()
        SERVER_PID=$RNACOS_PID
        SERVER_ADDR=$RNACOS_ADDR
        ;;
    esac
}

# The lists a server served per second with the whole mix on (step 1b), from a run's report:
# the median of measured seconds 5 to 13 (the one before the back-off). The harness counts a
# list in the second it was due and sends it up to its 5 s timeout late, so the first seconds
# read as fully served while the backlog builds. Prints the lower of that and the second
# argument, at least 1 (a rate the harness takes).
mix_capacity() { # report.json lists-only-capacity
    python3 - "$1" "$2" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
seconds = r["timeline"]["list"][:r["overload"]["backoff_at_s"]]
served = [s["ok"] for s in (seconds[5:] or seconds)] or [0]
print(max(1, min(int(sys.argv[2]), round(statistics.median(served)))))
PY
}

overload_run() { # report-name rate duration overload-for seed [further arguments]
    local name=$1 rate=$2 duration=$3 overload_for=$4 seed=$5
    shift 5
    run "$name" --target "$SERVER_ADDR" --target-pid "$SERVER_PID" \
        --scenario overload --services "$SERVICES" --instances-per-service "$INSTANCES" \
        --concurrency "$CONC" --duration "$duration" --overload-for "$overload_for" \
        --rate "$rate" --threads 2 --timeout 5s --seed "$seed" "${PUSHES[@]}" "$@"
}

for name in $SERVERS; do
    start_server "$name" "$OUT/$name-capacity"
    run "capacity-$name" --target "$SERVER_ADDR" --target-pid "$SERVER_PID" --scenario list \
        --services "$SERVICES" --instances-per-service "$INSTANCES" --keep-alive \
        --concurrency 64 --duration 10s --threads 2 --seed 140
    stop "$SERVER_PID"
    C=$(python3 -c "import json; print(round(json.load(open('$OUT/capacity-$name.json'))['throughput_rps']))")
    # Pushes for nacre only: its nodes push to the address a list came from, which the
    # harness's client addresses are; r-nacos pushes to `clientIP`, one address for all.
    PUSHES=()
    if [ -n "${OVERLOAD_PUSH_CLIENTS:-}" ] && [ "$name" != r-nacos ]; then
        PUSHES=(--push-clients "$OVERLOAD_PUSH_CLIENTS")
        # With pushes and churn the server serves fewer lists than closed-loop lists alone
        # show. Offered C with the whole mix on (fresh server, the overload run's connections),
        # the lists it serves are its capacity for this mix; a back-off to half the lists-only
        # figure could still be above it, and then nothing could recover.
        start_server "$name" "$OUT/$name-capacity-mix"
        overload_run "capacity-mix-$name" "$C" 15s 14s 142
        stop "$SERVER_PID"
        C=$(mix_capacity "$OUT/capacity-mix-$name.json" "$C")
        echo "$C" >"$OUT/capacity-mix-$name.capacity"
    fi
    start_server "$name" "$OUT/$name-overload"
    # nacre's own view, once a second: its lag, the share of reads it turns away, expiries.
    if [ "$name" != r-nacos ]; then
        (
            set +e +o pipefail
            while sleep 1; do
                curl -s -m 2 "http://$SERVER_ADDR/metrics" |
                    grep -E '^nacre_(overload_lag_seconds|overload_shed_share|expirations_total)' |
                    tr '\n' ' '
                echo
            done
        ) >"$OUT/gauges-$name.log" 2>/dev/null &
        SAMPLER=$!
        PIDS+=("$SAMPLER")
    fi
    overload_run "overload-$name" $((C * 2)) "$DURATION" "$OVERLOAD_FOR" 141 \
        --backoff-rate $((C / 2))
    if [ "$name" != r-nacos ]; then stop "$SAMPLER"; fi
    stop "$SERVER_PID"
done

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, os, sys
out = sys.argv[1]
print("| server | capacity lists/s | offered | lists served/s in overload | turned away (503) | other list failures | beats sent | beats failed | beat p99 ms | instances lost | all lists served again after |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
pushes = []
for name in ["nacre", "nacre-shedding", "nacre-up", "r-nacos"]:
    p = os.path.join(out, f"overload-{name}.json")
    if not os.path.exists(p):
        continue
    cap = json.load(open(os.path.join(out, f"capacity-{name}.json")))["throughput_rps"]
    mix = os.path.join(out, f"capacity-mix-{name}.json")
    cap = f"{cap:.0f}"
    if os.path.exists(mix):
        cap += f" (with the mix: {open(mix[:-5] + '.capacity').read().strip()})"
    r = json.load(open(p))
    o = r["overload"] or {}
    beat = next((op for op in r["operations"] if op["op"] == "beat"), {})
    lost = r["lost"]["beats_unknown"] + r["lost"]["lists_short"]
    rec = o.get("recovered_after_s")
    print(f"| {name} | {cap} | {o.get('offered_list_rps', 0):.0f}/s for {o.get('backoff_at_s')} s | "
          f"{o.get('served_list_rps', 0):.0f} | {o.get('shed_lists')} | {o.get('failed_lists')} | "
          f"{o.get('beats')} | {o.get('beats_failed')} | {beat.get('p99_ms', 0):.1f} | {lost} | "
          f"{'%d s' % rec if rec is not None else 'not by the end'} |")
    if (r.get("push") or {}).get("changes"):
        pushes.append((name, r["push"]))
if pushes:
    print()
    print("| server | changes made | seen in a push | overtaken before a push | never seen | packets received | acked | push p50 / p99 / max ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, q in pushes:
        never = q["changes"] - q["observed"] - q["superseded"]
        print(f"| {name} | {q['changes']} | {q['observed']} | {q['superseded']} | {never} | "
              f"{q['received']} | {q['acked']} | {q['p50_ms']:.1f} / {q['p99_ms']:.1f} / {q['max_ms']:.1f} |")
PY
echo "results: $OUT"

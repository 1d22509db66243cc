#!/usr/bin/env bash
# Side-by-side benchmark: a nacre standalone node against r-nacos 0.8.8, both on loopback,
# driven by the same harness (`nacre loadtest`) in alternating rounds (--compare), plus the
# memory mode (RSS per instance at 10k and 100k instances, fresh processes each) and a check
# of the harness's own cost per request against wrk's on the same server.
#
#   bash loadtest/bench/vs-rnacos.sh            # results under $NACRE_BENCH_OUT (printed)
#
# Knobs (environment): NACRE_BENCH_CACHE (r-nacos install root, default ~/.cache/nacre-bench),
# NACRE_BENCH_OUT (results dir), BENCH_DURATION (per round, default 10s), BENCH_ROUNDS (3),
# BENCH_CONCURRENCY (32), BENCH_PORT_BASE (first of the loopback ports used, default 29000,
# below the kernel's ephemeral range, where an outgoing connection could hold it),
# NACRE_BIN (an already built nacre binary: skips the release build), BENCH_PARTS (which parts
# to run, default "naming memory harness config").
# Needs: cargo, curl, python3; wrk for the harness-cost section (skipped if missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"
bench_addresses
OUT="${NACRE_BENCH_OUT:-$CACHE/results-$(date +%Y%m%d-%H%M%S)}"
CONC="${BENCH_CONCURRENCY:-32}"
mkdir -p "$OUT"
forget_knobs

install_rnacos
build_nacre

PARTS=" ${BENCH_PARTS:-naming memory harness config} "
part() { [[ "$PARTS" == *" $1 "* ]]; }

echo "nacre $NACRE_ADDR, r-nacos $RNACOS_ADDR; results in $OUT"
start_nacre "$OUT/nacre-data"
start_rnacos "$OUT/rnacos-data"
COMMON=(--target "$NACRE_ADDR" --target-pid "$NACRE_PID" --compare "$RNACOS_ADDR"
    --compare-pid "$RNACOS_PID" --rounds "$ROUNDS" --duration "$DURATION"
    --concurrency "$CONC")
if part naming; then
    run register "${COMMON[@]}" --scenario register --services 10 --instances-per-service 1000 --seed 101
    run list "${COMMON[@]}" --scenario list --services 10 --instances-per-service 100 --seed 102
    run beat "${COMMON[@]}" --scenario beat --services 10 --instances-per-service 100 --seed 103
    # Beats as the Python and Node clients send them: the whole beat JSON with the instance's
    # metadata (about 100 bytes), every time.
    run beat-full "${COMMON[@]}" --scenario beat --full-beats --metadata-bytes 100 --services 10 \
        --instances-per-service 100 --seed 109
fi
if part config; then
    # Config center: 100 configs of 1 KiB; publishes closed-loop, reads closed-loop, and
    # notification latency with 1,000 listeners while 100 publishes per second land.
    run config-publish "${COMMON[@]}" --scenario config-publish --services 100 --config-bytes 1024 --seed 106
    run config-get "${COMMON[@]}" --scenario config-get --services 100 --config-bytes 1024 --seed 107
    run config-listen "${COMMON[@]}" --scenario config-listen --services 100 --config-bytes 1024 \
        --listeners 1000 --rate 100 --seed 108
fi
stop "$NACRE_PID"
stop "$RNACOS_PID"

# Memory: a fresh process per server and size, so the baseline is an empty registry. Every
# instance's metadata holds the harness's day-long keep-alive timeouts (about 90 bytes); the
# "-meta" size pads it to 200 bytes, the same map for every instance as a fleet's mostly is.
part memory && for n in 10k 100k 100k-meta; do
    per=$([ "$n" = 10k ] && echo 100 || echo 1000)
    meta=$([ "$n" = 100k-meta ] && echo 200 || echo 0)
    start_nacre "$OUT/nacre-mem-$n"
    run "memory-$n-nacre" --target "$NACRE_ADDR" --target-pid "$NACRE_PID" --scenario memory \
        --services 100 --instances-per-service "$per" --metadata-bytes "$meta" \
        --concurrency "$CONC" --seed 104
    stop "$NACRE_PID"
    start_rnacos "$OUT/rnacos-mem-$n"
    run "memory-$n-rnacos" --target "$RNACOS_ADDR" --target-pid "$RNACOS_PID" \
        --scenario memory --services 100 --instances-per-service "$per" --metadata-bytes "$meta" \
        --concurrency "$CONC" --seed 104
    stop "$RNACOS_PID"
done

# Harness cost per request against wrk's, same server, same beat request, alternating.
if part harness && command -v wrk >/dev/null 2>&1; then
    start_nacre "$OUT/nacre-wrk"
    BEAT="http://$NACRE_ADDR/nacos/v1/ns/instance/beat?serviceName=lt105-svc00000&groupName=DEFAULT_GROUP&namespaceId=public&ip=127.0.0.1&port=8080&clusterName=DEFAULT"
    echo 'wrk.method = "PUT"' >"$OUT/beat.lua"
    for i in 1 2 3; do
        run "harness-$i" --target "$NACRE_ADDR" --target-pid "$NACRE_PID" --scenario beat \
            --services 1 --instances-per-service 1 --concurrency "$CONC" --duration "$DURATION" \
            --seed 105
        echo "== wrk-$i"
        echo "wrk -t1 -c$CONC -d$DURATION -s beat.lua '$BEAT'" >"$OUT/wrk-$i.cmd"
        /usr/bin/time -f "wrk_cpu_seconds %U %S" -o "$OUT/wrk-$i.time" \
            wrk -t1 -c"$CONC" -d"$DURATION" -s "$OUT/beat.lua" "$BEAT" | tee "$OUT/wrk-$i.txt"
    done
    stop "$NACRE_PID"
fi

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, os, re, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
print("| scenario | server | req/s | p50 ms | p99 ms | max ms | errors | server CPU-s | req per server CPU-s | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for sc in ["register", "list", "beat", "beat-full", "config-publish", "config-get", "config-listen"]:
    c = load(sc)
    if not c:
        continue
    for label, r in [("nacre", c["a"]), ("r-nacos", c["b"])]:
        s = r.get("server") or {}
        print(f"| {sc} | {label} | {r['throughput_rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['max_ms']:.2f} | {r['errors']} | {s.get('cpu_seconds', 0):.1f} | "
              f"{s.get('requests_per_cpu_second', 0):.0f} | {s.get('peak_rss_bytes', 0)/2**20:.1f} |")
        for op in r.get("operations", []):
            if sc == "config-listen":
                print(f"| {sc} `{op['op']}` | {label} | {op.get('throughput_rps', 0):.0f} | {op['p50_ms']:.3f} | "
                      f"{op['p99_ms']:.3f} | {op['max_ms']:.2f} | {op['errors']} | | | |")
    x = c["ratios"]
    print(f"| {sc} | r-nacos / nacre | x{x['throughput']:.2f} | x{x['p50']:.2f} | x{x['p99']:.2f} | x{x['max']:.2f} | | | "
          f"x{(x.get('server_requests_per_cpu_second') or 0):.2f} | |")
print()
print("| memory | server | instances listed back | RSS before MiB | RSS after MiB | bytes per instance | register req/s |")
print("|---|---|---|---|---|---|---|")
for n in ["10k", "100k", "100k-meta"]:
    for label in ["nacre", "rnacos"]:
        r = load(f"memory-{n}-{label}")
        if not r:
            continue
        m = r["memory"]
        print(f"| {n} | {label} | {m['verified_instances']} / {m['instances']} | {m['rss_before_bytes']/2**20:.1f} | "
              f"{m['rss_after_bytes']/2**20:.1f} | {m['bytes_per_instance']:.0f} | {r['throughput_rps']:.0f} |")
print()
print("| harness vs wrk (beat, nacre) | requests/s | client CPU-s | requests per client CPU-s |")
print("|---|---|---|---|")
for i in [1, 2, 3]:
    r = load(f"harness-{i}")
    if r:
        h = r["harness"]
        print(f"| nacre loadtest run {i} | {r['throughput_rps']:.0f} | {h['cpu_seconds']:.2f} | {h['requests_per_cpu_second']:.0f} |")
    t = os.path.join(out, f"wrk-{i}.time")
    w = os.path.join(out, f"wrk-{i}.txt")
    if os.path.exists(t) and os.path.exists(w):
        cpu = sum(float(v) for v in re.search(r"wrk_cpu_seconds (\S+) (\S+)", open(t).read()).groups())
        text = open(w).read()
        n = int(re.search(r"(\d+) requests in", text).group(1))
        rps = float(re.search(r"Requests/sec:\s+(\S+)", text).group(1))
        print(f"| wrk run {i} | {rps:.0f} | {cpu:.2f} | {n / cpu:.0f} |")
EOF
echo "results: $OUT"

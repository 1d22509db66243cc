#!/usr/bin/env bash
# Side-by-side benchmark of the gateway tier: `nacre gateway` (one proxy thread) against nginx
# (Debian's nginx-light, one worker, round-robin upstream with keepalive) in front of the same
# three registry nodes on loopback, driven by the same harness (`nacre loadtest`) in alternating
# rounds (--compare, nginx always A, so every ratio is "B / nginx"):
#
#   register       POST /instance through nginx vs through the gateway, cache off (relayed in
#                  batches, or proxied to a node that does not take relayed writes)
#   list-proxied   GET /instance/list (~25 KiB answers) through nginx vs gateway, cache off
#   list-hits      the same list through nginx vs a gateway with its cache on (hits)
#   list-direct    the same list through nginx vs straight to the service's owner node
#
# Besides requests/s and latency, each run reports the CPU the measured process used (the
# nginx *worker*, the whole gateway process, or the owner node) over the measured windows, as
# CPU µs per request and requests per CPU-second: on a 2-core machine, where the load
# generator and the nodes compete with the proxy, that "per core" figure is the fair one. The
# gateway's cache counters are read before and after list-hits to show the hits were hits.
#
#   bash loadtest/bench/vs-nginx.sh             # results under $NACRE_BENCH_OUT (printed)
#   NACRE_BIN=target/release/nacre BENCH_DURATION=10s bash loadtest/bench/vs-nginx.sh
#
# Knobs (environment): NACRE_BENCH_OUT (results dir, default ~/.cache/nacre-bench/nginx-DATE),
# BENCH_DURATION (per round, default 10s; keep it under ~13s: the listed instances are
# ephemeral, registered by each round's setup and never beaten, and Nacos marks them unhealthy
# 15 s after registration), BENCH_ROUNDS (3), BENCH_CONCURRENCY (connections, 64),
# BENCH_LIST_INSTANCES (instances of the one listed service, 66) and BENCH_LIST_METADATA
# (metadata bytes per instance, 128) which together size the list answer (~25 KiB, printed),
# BENCH_REGISTER_INSTANCES (instances per service of the 10 registered services, 10: mostly
# re-registrations, which a node takes at ~14k/s here; with 1000 per service a node manages
# only ~1k registrations/s and the proxies would be measured idling),
# BENCH_PORT_BASE (first loopback port used, default 29100, below the kernel's ephemeral range
# where an outgoing connection could hold it; uses base+1..+3, +10, +11, +20),
# NACRE_BIN (an already built nacre binary: skips the release build).
# Needs: cargo, curl, python3, and nginx (nginx-light is installed with apt-get when missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"
OUT="${NACRE_BENCH_OUT:-$HOME/.cache/nacre-bench/nginx-$(date +%Y%m%d-%H%M%S)}"
CONC="${BENCH_CONCURRENCY:-64}"
LIST_INSTANCES="${BENCH_LIST_INSTANCES:-66}"
REG_INSTANCES="${BENCH_REGISTER_INSTANCES:-10}"
LIST_METADATA="${BENCH_LIST_METADATA:-128}"
PORT="${BENCH_PORT_BASE:-29100}"
cluster_addresses vs-nginx-bench-cluster-secret
GW_OFF="127.0.0.1:$((PORT + 10))" # cache off: every request proxied
GW_ON="127.0.0.1:$((PORT + 11))"  # cache on (default size)
NGINX_ADDR="127.0.0.1:$((PORT + 20))"
LIST_SEED=202
LIST_SERVICE="lt$LIST_SEED-svc00000"
LIST_QUERY="/nacos/v1/ns/instance/list?serviceName=$LIST_SERVICE&groupName=DEFAULT_GROUP&namespaceId=public&clusters=&healthyOnly=false"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)" # nginx wants absolute paths
forget_knobs

if ! command -v nginx >/dev/null 2>&1; then
    echo "== installing nginx-light"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
fi
build_nacre

wait_ready() { wait_for "gateway $1" "http://$1/nacre/gateway/ready" '"feedsFollowed":true'; }

# Registry nodes: each gets the full member list, itself included.
start_nodes "$OUT/node"

# Gateways, one proxy thread each: one with the cache off (the proxied path), one with it on.
# The proxied one also leaves config listeners to the nodes: holding them needs the nodes'
# change feeds, whose processing is not proxying (it cost ~35 % more gateway CPU per
# register in an A/B run, 2026-11-30).
printf "cache_bytes = 0\nhold_config_listeners = false\n" >"$OUT/gateway-nocache.toml"
start_gateway() { # name, listen, extra args…; sets GW_PID
    local name=$1 listen=$2
    shift 2
    NACRE_LOG=warn "$NACRE" gateway --listen "$listen" --threads 1 --cluster-secret "$SECRET" \
        --upstreams "$MEMBERS" "$@" >"$OUT/$name.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
}
start_gateway gateway-nocache "$GW_OFF" --config "$OUT/gateway-nocache.toml"
GW_OFF_PID=$GW_PID
start_gateway gateway-cache "$GW_ON"
GW_ON_PID=$GW_PID
wait_ready "$GW_OFF"
wait_ready "$GW_ON"

# nginx: one worker, round-robin over the nodes with upstream keepalive. keepalive_requests
# raised on both sides so neither the harness's connections nor the upstream ones are recycled
# every 1000 requests (the gateway does not recycle them either).
mkdir -p "$OUT/nginx/logs" "$OUT/nginx/tmp"
cat >"$OUT/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $OUT/nginx/tmp/body;
    proxy_temp_path $OUT/nginx/tmp/proxy;
    fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
    scgi_temp_path $OUT/nginx/tmp/scgi;
    keepalive_requests 1000000;
    upstream nacre {
$(for n in "${NODES[@]}"; do echo "        server $n;"; done)
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen $NGINX_ADDR;
        location / {
            proxy_pass http://nacre;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
nginx -t -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" 2>"$OUT/nginx/logs/test.log" || {
    cat "$OUT/nginx/logs/test.log" >&2
    exit 1
}
nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_up "$NGINX_ADDR" "nodes behind nginx" '"status":"UP"'
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n1)
[ -n "$NGINX_WORKER" ] || { echo "no nginx worker under $NGINX_PID" >&2; exit 1; }

echo "nodes $MEMBERS (pids ${NODE_PIDS[*]}); gateway cache off $GW_OFF (pid $GW_OFF_PID)," \
    "cache on $GW_ON (pid $GW_ON_PID); nginx $NGINX_ADDR (worker pid $NGINX_WORKER)"
echo "results in $OUT"

gw_metrics() { # addr, file
    curl -fsS "http://$1/metrics" >"$2"
}

# The list data set: one service, filled once straight on a node so its owner can be asked
# and the answer measured on every path (each measured round's setup registers it again).
LIST_SHAPE=(--scenario list --services 1 --instances-per-service "$LIST_INSTANCES"
    --metadata-bytes "$LIST_METADATA" --seed "$LIST_SEED")
echo "== filling the list service"
"$NACRE" loadtest --target "${NODES[0]}" "${LIST_SHAPE[@]}" --duration 1s --warmup 0s \
    --concurrency 4 >"$OUT/list-fill.txt"
OWNER=$(curl -fsS "http://${NODES[0]}/nacos/v1/ns/operator/distro/server?serviceName=$LIST_SERVICE&groupName=DEFAULT_GROUP&namespaceId=public" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["responsibleServer"])')
OWNER_PID=""
for i in 0 1 2; do
    [ "${NODES[$i]}" = "$OWNER" ] && OWNER_PID=${NODE_PIDS[$i]}
done
[ -n "$OWNER_PID" ] || { echo "owner $OWNER of $LIST_SERVICE is not one of $MEMBERS" >&2; exit 1; }
echo "owner of $LIST_SERVICE: $OWNER (pid $OWNER_PID)"
: >"$OUT/bodies.txt"
for t in "nginx $NGINX_ADDR" "gateway-nocache $GW_OFF" "gateway-cache $GW_ON" "owner $OWNER"; do
    read -r path addr <<<"$t"
    curl -sS -o "$OUT/body-$path.json" -w "$path: HTTP %{http_code}, %{size_download} bytes\n" \
        "http://$addr$LIST_QUERY" >>"$OUT/bodies.txt"
done
cat "$OUT/bodies.txt"
python3 - "$OUT" <<'EOF' | tee -a "$OUT/bodies.txt"
import json, os, sys
out = sys.argv[1]
hosts = {}
for name in ["nginx", "gateway-nocache", "gateway-cache", "owner"]:
    b = json.load(open(os.path.join(out, f"body-{name}.json")))
    hosts[name] = sorted((h["ip"], h["port"], h["healthy"]) for h in b["hosts"])
same = all(h == hosts["owner"] for h in hosts.values())
print(f"list answer: {len(hosts['owner'])} hosts; same hosts on every path: {same}")
EOF

# Background CPU of each proxy with no traffic (gateway: node probes and change feeds), which
# every CPU-per-request figure below includes.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
IDLE_S=5
echo "== idle CPU over ${IDLE_S}s"
declare -A IDLE0
for p in "$NGINX_WORKER" "$GW_OFF_PID" "$GW_ON_PID"; do IDLE0[$p]=$(cpu_ticks "$p"); done
sleep "$IDLE_S"
TICKS=$(getconf CLK_TCK)
{
    for t in "nginx-worker $NGINX_WORKER" "gateway-nocache $GW_OFF_PID" "gateway-cache $GW_ON_PID"; do
        read -r name p <<<"$t"
        echo "$name $(((($(cpu_ticks "$p") - IDLE0[$p]) * 1000) / (TICKS * IDLE_S)))"
    done
} | tee "$OUT/idle-cpu.txt" | sed 's/$/ ms CPU per s idle/'

COMMON=(--target "$NGINX_ADDR" --target-pid "$NGINX_WORKER" --rounds "$ROUNDS"
    --duration "$DURATION" --concurrency "$CONC")
run register "${COMMON[@]}" --compare "$GW_OFF" --compare-pid "$GW_OFF_PID" \
    --scenario register --services 10 --instances-per-service "$REG_INSTANCES" --seed 201
run list-proxied "${COMMON[@]}" --compare "$GW_OFF" --compare-pid "$GW_OFF_PID" "${LIST_SHAPE[@]}"
gw_metrics "$GW_ON" "$OUT/gateway-cache.metrics.before"
run list-hits "${COMMON[@]}" --compare "$GW_ON" --compare-pid "$GW_ON_PID" "${LIST_SHAPE[@]}"
gw_metrics "$GW_ON" "$OUT/gateway-cache.metrics.after"
gw_metrics "$GW_OFF" "$OUT/gateway-nocache.metrics.after"
run list-direct "${COMMON[@]}" --compare "$OWNER" --compare-pid "$OWNER_PID" "${LIST_SHAPE[@]}"

# Anything the processes complained about.
{
    for f in "$OUT"/node*/nacre.log "$OUT"/gateway-*.log "$OUT/nginx/logs/error.log"; do
        echo "--- ${f#"$OUT"/}: $(wc -l <"$f") lines"
        tail -n 5 "$f"
    done
} >"$OUT/logs.txt"

python3 - "$OUT" "$CONC" "$DURATION" "$ROUNDS" <<'EOF' | tee "$OUT/summary.txt"
import json, os, re, sys
out, conc, duration, rounds = sys.argv[1:5]
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
def cache_counts(path):
    counts = {}
    if os.path.exists(path):
        for line in open(path):
            m = re.match(r'nacre_gateway_cache_total\{result="(\w+)"\}\s+(\S+)', line)
            if m:
                counts[m.group(1)] = float(m.group(2))
    return counts
print(open(os.path.join(out, "bodies.txt")).read().strip())
idle = dict(l.split() for l in open(os.path.join(out, "idle-cpu.txt")) if l.strip())
print("idle CPU (ms per s, no traffic): " + ", ".join(f"{k} {v}" for k, v in idle.items()))
print(f"gateway --threads 1, nginx worker_processes 1; harness 1 thread, {conc} connections, "
      f"{rounds} alternating rounds of {duration} per target")
print()
hdr = ("test", "path", "CPU of", "req/s", "p50 ms", "p99 ms", "errors", "CPU-s",
       "CPU us/req", "req/CPU-s", "req/s vs nginx", "req/CPU-s vs nginx")
rows = []
tests = [("register", "gateway (relayed)", "gateway"),
         ("list-proxied", "gateway (proxied)", "gateway"),
         ("list-hits", "gateway (cache hits)", "gateway"),
         ("list-direct", "owner node (no proxy)", "owner node")]
for name, b_label, b_cpu in tests:
    c = load(name)
    if not c:
        continue
    for label, cpu_of, r in [("nginx", "nginx worker", c["a"]), (b_label, b_cpu, c["b"])]:
        s = r.get("server") or {}
        cpu = s.get("cpu_seconds", 0.0)
        us = cpu * 1e6 / r["requests"] if r["requests"] else 0.0
        vs = ("", "") if r is c["a"] else (
            f"x{c['ratios']['throughput']:.2f}",
            f"x{(c['ratios'].get('server_requests_per_cpu_second') or 0):.2f}")
        rows.append((name, label, cpu_of, f"{r['throughput_rps']:.0f}", f"{r['p50_ms']:.3f}",
                     f"{r['p99_ms']:.3f}", str(r["errors"]), f"{cpu:.2f}", f"{us:.1f}",
                     f"{s.get('requests_per_cpu_second', 0):.0f}", *vs))
widths = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
for row in [hdr] + rows:
    print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
print()
errs = {n: (load(n)["a"]["errors_by_kind"], load(n)["b"]["errors_by_kind"])
        for n, _, _ in tests if load(n)}
bad = {n: e for n, e in errs.items() if e[0] or e[1]}
print("errors by kind (nginx, other):", bad if bad else "none")
before = cache_counts(os.path.join(out, "gateway-cache.metrics.before"))
after = cache_counts(os.path.join(out, "gateway-cache.metrics.after"))
delta = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))}
hits = load("list-hits")
if hits:
    served = hits["b"]["requests"]
    print(f"gateway cache during list-hits (all rounds, incl. warm-up and setup): "
          + ", ".join(f"{k} {v:.0f}" for k, v in delta.items())
          + f"; measured list requests {served}")
off = cache_counts(os.path.join(out, "gateway-nocache.metrics.after"))
print("gateway with cache off, cache counters at the end:",
      ", ".join(f"{k} {v:.0f}" for k, v in off.items()) or "none")
lp, lh, rg = load("list-proxied"), load("list-hits"), load("register")
print()
if lh:
    x = lh["ratios"]["throughput"]
    print(f"goal: cache hits >= 2x nginx proxied list rate: x{x:.2f} "
          f"(per proxy CPU-s x{lh['ratios']['server_requests_per_cpu_second'] or 0:.2f})")
for name, c in [("register", rg), ("list", lp)]:
    if c:
        x = c["ratios"]["server_requests_per_cpu_second"] or 0
        print(f"goal: {name} through the gateway per core within 1.5x of nginx: nginx / gateway = "
              f"x{1 / x if x else float('inf'):.2f} in requests per proxy CPU-s "
              f"(req/s x{c['ratios']['throughput']:.2f} of nginx)")
EOF
echo "results: $OUT"

# shellcheck shell=bash
# Shared by the benchmark scripts (sourced right after they set ROOT, not run): the common
# knobs, the release build, child-process cleanup, readiness polling and loadtest runs.

# Read by the sourcing scripts.
# shellcheck disable=SC2034
DURATION="${BENCH_DURATION:-10s}"
# shellcheck disable=SC2034
ROUNDS="${BENCH_ROUNDS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PREBUILT="${NACRE_BIN:-}"
# shellcheck disable=SC2034
NACRE="${PREBUILT:-$CARGO_TARGET_DIR/release/nacre}"

# nacre refuses to start on an unknown NACRE_* variable (a typo must not pass silently), so
# the scripts' own knobs must not reach it: call once the script has read them.
forget_knobs() {
    unset NACRE_BIN
    for v in $(compgen -e | grep '^NACRE_BENCH_' || true); do unset "$v"; done
}

# Builds the release binary unless an already built one was given.
build_nacre() {
    if [ -z "$PREBUILT" ]; then
        echo "== building nacre (release)"
        # Always the whole workspace: a -p build recompiles dozens of crates per feature set.
        (cd "$ROOT" && nice -n 10 cargo build --release --workspace)
    fi
}

# Every server the script starts goes into PIDS and is stopped on exit.
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

# Polls `url` for up to 30 s until it answers 2xx and, when `text` is given, contains it.
wait_for() { # what, url, [text]
    for _ in $(seq 1 150); do
        if curl -fsS "$2" 2>/dev/null | grep -qF -- "${3:-}"; then
            return 0
        fi
        sleep 0.2
    done
    echo "$1 did not come up (${2}${3:+ never answered with $3})" >&2
    return 1
}

# Runs one `nacre loadtest` (name, then its arguments), keeping its command line, text report,
# JSON and SVG under $OUT.
run() {
    local name=$1
    shift
    echo "== $name"
    local cmd=("$NACRE" loadtest "$@" --json "$OUT/$name.json" --svg "$OUT/$name.svg")
    echo "${cmd[*]//$NACRE/nacre}" >"$OUT/$name.cmd"
    "${cmd[@]}" | tee "$OUT/$name.txt"
}

# A 3-node cluster's addresses just above PORT in NODES (joined in MEMBERS, each node's member
# list) and its shared SECRET. Call once PORT is set.
cluster_addresses() { # secret
    SECRET="$1"
    NODES=("127.0.0.1:$((PORT + 1))" "127.0.0.1:$((PORT + 2))" "127.0.0.1:$((PORT + 3))")
    MEMBERS="$(IFS=,; echo "${NODES[*]}")"
}

# Starts one registry node per address in NODES (the full list, joined in MEMBERS, as each
# node's members), data under "<prefix>1", "<prefix>2"…, with SECRET; waits until each answers
# UP. Sets NODE_PIDS (also added to PIDS).
start_nodes() { # data dir prefix
    NODE_PIDS=()
    local i d
    for i in "${!NODES[@]}"; do
        d="$1$((i + 1))"
        rm -rf "$d" && mkdir -p "$d"
        NACRE_LOG=warn "$NACRE" registry --listen "${NODES[$i]}" --data "$d" \
            --cluster-secret "$SECRET" --members "$MEMBERS" >"$d/nacre.log" 2>&1 &
        NODE_PIDS+=($!)
        PIDS+=($!)
    done
    for d in "${NODES[@]}"; do
        wait_for "node $d" "http://$d/nacos/v1/ns/operator/metrics" '"status":"UP"'
    done
}

# The knobs and addresses the r-nacos comparisons share: CACHE (r-nacos install root and default
# results), PORT (first loopback port), a standalone nacre on PORT and r-nacos ten above.
# Call after sourcing, before forget_knobs.
bench_addresses() {
    CACHE="${NACRE_BENCH_CACHE:-$HOME/.cache/nacre-bench}"
    PORT="${BENCH_PORT_BASE:-29000}"
    NACRE_ADDR="127.0.0.1:$PORT"
    RNACOS_PORT=$((PORT + 10))
    RNACOS_ADDR="127.0.0.1:$RNACOS_PORT"
}

# Until a node is ready its metrics answer 200 with "status":"DOWN" (and writes get 503), so
# wait for "UP" where the server says it (nacre); any answer counts for r-nacos.
wait_up() { wait_for "$2 on $1" "http://$1/nacos/v1/ns/operator/metrics" "${3:-}"; } # addr name [text]

# Starts a standalone nacre node on $NACRE_ADDR with data under the given dir; sets NACRE_PID.
start_nacre() { # data dir
    rm -rf "$1" && mkdir -p "$1"
    NACRE_LOG=warn "$NACRE" registry --standalone --listen "$NACRE_ADDR" --data "$1" \
        >"$1/nacre.log" 2>&1 &
    NACRE_PID=$!
    PIDS+=("$NACRE_PID")
    wait_up "$NACRE_ADDR" nacre '"status":"UP"'
}

# r-nacos 0.8.8, installed once under $CACHE (the scripts set it).
install_rnacos() {
    if [ ! -x "$CACHE/bin/rnacos" ]; then
        echo "== installing r-nacos 0.8.8 into $CACHE (nice 19; takes a while)"
        nice -n 19 cargo install rnacos --version 0.8.8 --locked --root "$CACHE"
    fi
}

# A command prefix r-nacos runs under (e.g. one entering a cgroup); empty by default.
RNACOS_WRAP=()

# Runs r-nacos 0.8.8 in the background: data under DIR, HTTP on HTTP, gRPC on GRPC, further
# RNACOS_* settings as NAME=VALUE arguments, under RNACOS_WRAP; sets RNACOS_LAST_PID (also
# added to PIDS).
run_rnacos() { # dir http grpc [NAME=VALUE…]
    # r-nacos reads only RNACOS_* variables (and a .env file in its working directory, hence
    # the fresh cwd). RUST_LOG=warn: its actix Logger middleware otherwise writes a line per
    # request at info, which would be measured as server cost. Console off (port 0).
    local dir=$1 http=$2 grpc=$3
    shift 3
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && exec env RNACOS_HTTP_PORT="$http" RNACOS_GRPC_PORT="$grpc" \
        RNACOS_RAFT_NODE_ADDR="127.0.0.1:$grpc" RNACOS_HTTP_CONSOLE_PORT=0 \
        RNACOS_SDK_HOST=127.0.0.1 RNACOS_CONSOLE_HOST=127.0.0.1 \
        RNACOS_DATA_DIR="$dir/db" RNACOS_CONFIG_DB_DIR="$dir/db" \
        RNACOS_ENABLE_METRICS=false RUST_LOG=warn "$@" \
        "${RNACOS_WRAP[@]}" "$CACHE/bin/rnacos" >"$dir/rnacos.log" 2>&1) &
    RNACOS_LAST_PID=$!
    PIDS+=("$RNACOS_LAST_PID")
}

# Starts r-nacos standalone on $RNACOS_PORT with data under the given dir; sets RNACOS_PID.
start_rnacos() { # data dir
    run_rnacos "$1" "$RNACOS_PORT" $((RNACOS_PORT + 1))
    RNACOS_PID=$RNACOS_LAST_PID
    wait_up "$RNACOS_ADDR" r-nacos
}

# Starts a 3-node r-nacos 0.8.8 cluster (node 1 initializes the Raft group, the others join
# it), HTTP on RNACOS_PORT+20, +22, +24 (gRPC one above each), data under "<dir>1", "<dir>2"…;
# sets RNACOS_CLUSTER_ADDRS and RNACOS_CLUSTER_PIDS (also added to PIDS).
start_rnacos_cluster() { # data dir prefix
    RNACOS_CLUSTER_ADDRS=()
    RNACOS_CLUSTER_PIDS=()
    local i http grpc join=""
    for i in 1 2 3; do
        http=$((RNACOS_PORT + 18 + 2 * i))
        grpc=$((http + 1))
        run_rnacos "$1$i" "$http" "$grpc" RNACOS_RAFT_NODE_ID="$i" \
            RNACOS_RAFT_AUTO_INIT="$([ "$i" = 1 ] && echo true || echo false)" \
            ${join:+RNACOS_RAFT_JOIN_ADDR="$join"}
        RNACOS_CLUSTER_PIDS+=("$RNACOS_LAST_PID")
        RNACOS_CLUSTER_ADDRS+=("127.0.0.1:$http")
        wait_up "127.0.0.1:$http" "r-nacos node $i"
        [ "$i" = 1 ] && join="127.0.0.1:$grpc"
    done
    # The joins go through Raft; give the members a moment to see each other.
    sleep 3
}

# Stops one server started here.
stop() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}


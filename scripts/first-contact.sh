#!/usr/bin/env bash
# Runs the README's "Set up" commands the way a newcomer does, and checks what they give.
#
#   bash scripts/first-contact.sh run    # the run command: a gateway on 127.0.0.1:8848 that
#                                        # registers and lists through a 3-node cluster, a short
#                                        # status on the terminal, a clean stop on Ctrl-C
#   bash scripts/first-contact.sh test   # the test command, as written
#
# The commands are read from README.md (the first and second ```sh blocks under "## Set up"),
# so CI runs what the README says, not a copy of it. A `cmake` that always fails is put first
# on PATH: the build must not need it (see patches/libz-ng-sys), even on a machine that has it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
what="${1:?usage: first-contact.sh run|test}"

# The Nth command block under "## Set up" (1-based), without its fences.
readme_block() {
    awk -v want="$1" '
        /^## / { in_setup = ($0 == "## Set up") }
        in_setup && /^```sh$/ { n++; inside = (n == want); next }
        inside && /^```$/ { inside = 0; next }
        inside { print }
    ' README.md
}

no_cmake_dir="$(mktemp -d)"
trap 'rm -rf "$no_cmake_dir"' EXIT
printf '#!/bin/sh\necho "cmake is not available: nacre must build without it" >&2\nexit 127\n' \
    >"$no_cmake_dir/cmake"
chmod +x "$no_cmake_dir/cmake"
export PATH="$no_cmake_dir:$PATH"
if cargo tree --workspace --target all -e normal,build,dev -i cmake >/dev/null 2>&1; then
    echo "first contact: the cmake crate is in the build graph again:" >&2
    cargo tree --workspace --target all -e normal,build,dev -i cmake >&2
    exit 1
fi

case "$what" in
test)
    cmd="$(readme_block 2)"
    echo "first contact: test command from README.md: $cmd"
    eval "$cmd"
    ;;
run)
    cmd="$(readme_block 1)"
    echo "first contact: run command from README.md: $cmd"
    [ -n "$cmd" ] || { echo "no run command found in README.md" >&2; exit 1; }
    gw=127.0.0.1:8848
    if curl -s -o /dev/null "http://$gw/"; then
        echo "first contact: something already listens on $gw" >&2
        exit 1
    fi
    rm -rf data
    out="$(mktemp)"
    err="$(mktemp)"
    # setsid: the command gets its own process group, so Ctrl-C (SIGINT) reaches cargo and
    # nacre as it would from a terminal.
    setsid bash -c "$cmd" >"$out" 2>"$err" &
    pid=$!
    stop() { kill -INT -- "-$pid" 2>/dev/null || true; }
    fail() {
        echo "first contact: $*" >&2
        stop
        echo "--- stdout"; cat "$out"; echo "--- stderr (tail)"; tail -n 40 "$err"
        for f in data/logs/*.log; do [ -f "$f" ] && { echo "--- $f (tail)"; tail -n 40 "$f"; }; done
        exit 1
    }
    # The first run builds nacre in release mode (about ten minutes on two cores).
    deadline=$((SECONDS + 1800))
    until grep -q "nacre: ready" "$out"; do
        kill -0 "$pid" 2>/dev/null || fail "the run command exited before the cluster was ready"
        [ "$SECONDS" -lt "$deadline" ] || fail "not ready within 30 minutes"
        sleep 1
    done
    ready="$(curl -sf "http://$gw/nacre/gateway/ready")" || fail "gateway not ready"
    case "$ready" in *'"nodes":3'*) ;; *) fail "gateway routes to fewer than 3 nodes: $ready" ;; esac
    reg="$(curl -s -X POST "http://$gw/nacos/v1/ns/instance?serviceName=first-contact&ip=10.0.0.1&port=8080&ephemeral=false")"
    [ "$reg" = "ok" ] || fail "register answered: $reg"
    list="$(curl -s "http://$gw/nacos/v1/ns/instance/list?serviceName=first-contact")"
    case "$list" in *'"ip":"10.0.0.1"'*) ;; *) fail "list does not show the instance: $list" ;; esac
    servers="$(curl -s "http://$gw/nacos/serverlist" | tr -d '\r')"
    [ "$servers" = "127.0.0.1" ] || fail "serverlist answered: $servers"
    stop
    status=0
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || fail "exit status $status after Ctrl-C"
    grep -q "nacre: stopped" "$out" || fail "no clean stop"
    lines="$(wc -l <"$out")"
    [ "$lines" -le 16 ] || fail "the terminal got $lines lines, not a short status"
    if grep -v '^\s*\(Compiling\|Finished\|Running\|Downloaded\|Downloading\|Updating\|Locking\|Adding\|Blocking\|Building\|warning: .*unused manifest\)' "$err" | grep -q .; then
        fail "unexpected output on stderr besides cargo's"
    fi
    ls data/logs/nacre.*.log >/dev/null || fail "no log file under data/logs"
    echo "first contact: ok — the run command served register/list/serverlist through the gateway and stopped cleanly; its terminal output:"
    cat "$out"
    rm -rf data
    ;;
*)
    echo "usage: first-contact.sh run|test" >&2
    exit 2
    ;;
esac

# Shared by the benchmark scripts (sourced, not run): the release build, child-process cleanup
# and readiness polling. Expects ROOT and PREBUILT (NACRE_BIN, possibly empty) to be set.

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

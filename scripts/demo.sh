#!/usr/bin/env bash
# The README's first command: what blockwire is worth on this machine, measured end to end.
#
# 1. Installs what the build needs on a fresh Debian 12 machine (as root; otherwise it names the
#    missing packages and stops). The Rust toolchain must already be on the PATH (rustup).
# 2. Builds the workspace in release mode.
# 3. Starts a real two-node cluster from examples/config/two-node-shm.toml as two separate
#    blockwire-datanode processes and asks node 1 for its counters (the link is up).
# 4. Measures, over every transport available here: round trips through the full stack (driver
#    block -> runtime -> transporter -> runtime -> echo block and back) and a one-way stream.
#    tcp and shm: data node 1 is a blockwire-datanode process started from
#    examples/config/two-node-{tcp,shm}.toml, data node 2 (with the driver block) is the bench's
#    own process, assembled from the same file. local: two block threads of one node, spinning
#    50 us then sleeping as the example files do. The bare transporter (no runtime) is measured
#    too, so the runtime's own cost shows. Each latency is compared with its physical reference
#    (cache-line ping-pong, eventfd wake, bare TCP_NODELAY socket) measured in the same run.
#    RDMA runs through scripts/rxe-vm.sh when this build measures it (see the hook below).
# 5. Prints one comparison table and writes the latency plot (docs/latency.svg).
#
# Every figure printed is measured in this run. After the build it takes about a minute on two
# cores. Results (JSON per run, .hgrm distributions) stay in target/demo/ (under
# $CARGO_TARGET_DIR when set).
#
# Env knobs:
#   BLOCKWIRE_DEMO_COUNT=20000        measured round trips per transport (plus a tenth as warm-up)
#   BLOCKWIRE_DEMO_STREAM=2000000     signals per stream
#   BLOCKWIRE_DEMO_PLOT=docs/latency.svg
#   BLOCKWIRE_DEMO_RDMA=auto          auto | off
#   BLOCKWIRE_DEMO_RDMA_COUNT=2000    rdma round trips; BLOCKWIRE_DEMO_RDMA_STREAM=200000 signals
#   BLOCKWIRE_DEMO_SCAN_ROWS=1000000  rows of the scan benchmark's table
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
say() { echo "demo.sh: $*" >&2; }

# --- 1. packages -----------------------------------------------------------------------------
packages=(gcc libc6-dev pkg-config)
# The RDMA transporter's verbs shim links libibverbs when that crate is part of the workspace.
[[ -d verbs ]] && packages+=(libibverbs-dev)
# shellcheck source=lib/packages.sh
source scripts/lib/packages.sh
ensure_packages demo.sh "${packages[@]}"
if ! command -v cargo >/dev/null; then
    say "cargo is not on the PATH: install a current stable Rust toolchain with rustup"
    say "(https://rustup.rs), then run scripts/demo.sh again. Debian's own rustc is too old."
    exit 1
fi

# --- 2. build --------------------------------------------------------------------------------
say "cargo build --release (the first build takes several minutes on two cores)"
cargo build --release --workspace --quiet
target="${CARGO_TARGET_DIR:-$here/target}/release"
bench="$target/blockwire-bench"
datanode="$target/blockwire-datanode"
count=${BLOCKWIRE_DEMO_COUNT:-20000}
warmup=$((count / 10))
stream=${BLOCKWIRE_DEMO_STREAM:-2000000}
plot=${BLOCKWIRE_DEMO_PLOT:-docs/latency.svg}
out="${CARGO_TARGET_DIR:-$here/target}/demo"
rm -rf "$out"
mkdir -p "$out/runs" "$out/hgrm"
started=$SECONDS
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 3. a real two-node cluster --------------------------------------------------------------
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
config=examples/config/two-node-shm.toml
say "starting a two-node cluster from $config (two blockwire-datanode processes)"
for id in 1 2; do
    RUST_LOG=info "$datanode" --config "$config" --node-id "$id" 2>"$out/cluster-node-$id.log" &
    pids+=($!)
done
"$datanode" stats --config "$config" --node-id 1 --timeout-s 20 2>>"$out/cluster-stats.log" |
    sed 's/^/  /'
for pid in "${pids[@]}"; do
    kill -TERM "$pid"
    wait "$pid" || { say "data node $pid did not stop cleanly"; exit 1; }
done
pids=()

# --- 3b. the database engine: two data nodes, a table, rows loaded with the CLI -----------------
blockwire="$target/blockwire"
engine_config=examples/config/engine-two-node.toml
rows=${BLOCKWIRE_DEMO_ROWS:-100000}
say "starting a two-data-node engine cluster from $engine_config"
for id in 1 2; do
    RUST_LOG=info "$datanode" --config "$engine_config" --node-id "$id" 2>"$out/engine-node-$id.log" &
    pids+=($!)
done
bw() { "$blockwire" --config "$engine_config" --as 100 "$@"; }
say "blockwire create-table examples/tables/accounts.toml"
bw create-table examples/tables/accounts.toml | sed 's/^/  /'
{
    echo "id,balance,owner"
    seq 1 "$rows" | awk '{ printf "%d,%d,owner-%d\n", $1, 1000 + $1 % 997, $1 % 113 }'
} >"$out/accounts.csv"
say "blockwire load accounts ($rows rows of CSV, batches of 256)"
bw load accounts "$out/accounts.csv" | sed 's/^/  /'
say "blockwire get accounts 4242"
bw get accounts 4242 | sed 's/^/  /'
bw describe accounts | sed 's/^/  /'
say "blockwire scan accounts --index by_balance --range '[1990..]' --order --limit 5"
bw scan accounts --index by_balance --range '[1990..]' --order --limit 5 | sed 's/^/  /'
say "blockwire scan accounts --where 'balance > 1900' --group-by 'id % 4' --agg 'count(*)' --agg 'avg(balance)' --order --stats"
bw scan accounts --where 'balance > 1900' --group-by 'id % 4' --agg 'count(*)' --agg 'avg(balance)' --order --stats 2>&1 | sed 's/^/  /'
for pid in "${pids[@]}"; do
    kill -TERM "$pid"
    wait "$pid" || { say "data node $pid did not stop cleanly"; exit 1; }
done
pids=()

# --- 4. measurements ---------------------------------------------------------------------------
run() { # run NAME ARGS... : one bench run, its JSON kept for the table
    local name=$1
    shift
    say "blockwire-bench $*"
    "$bench" "$@" --json --hgrm-dir "$out/hgrm" >"$out/runs/$name.json"
}
for t in tcp shm; do
    cfg=examples/config/two-node-$t.toml
    run "$t-pingpong" pingpong --transport "$t" --config "$cfg" --datanode "$datanode" \
        --count "$count" --warmup "$warmup"
    run "$t-stream" stream --transport "$t" --config "$cfg" --datanode "$datanode" \
        --count "$stream"
done
run local-pingpong pingpong --transport local --mode sleep --spin-us 50 \
    --count "$count" --warmup "$warmup"
run local-stream stream --transport local --mode sleep --spin-us 50 --count "$stream"
# Spin time 0 (generated cluster files): every hand-off sleeps and is woken, the set-up for a
# machine with fewer cores than spinning threads.
for t in tcp shm local; do
    run "$t-sleep-pingpong" pingpong --transport "$t" --mode sleep --spin-us 0 \
        --datanode "$datanode" --count "$count" --warmup "$warmup"
    run "$t-sleep-stream" stream --transport "$t" --mode sleep --spin-us 0 \
        --datanode "$datanode" --count "$stream"
done
# The bare shared-memory ping-pong measures its cache-line reference between the same two
# processes, in blocks of round trips between its own (--interleave), so a change in where the
# host places the two vCPUs moves both alike.
interleave=$((count < 1000 ? count : 1000))
for t in tcp shm; do
    extra=()
    [[ $t == shm ]] && extra=(--interleave "$interleave")
    run "$t-raw-pingpong" pingpong --raw --transport "$t" --count "$count" --warmup "$warmup" \
        "${extra[@]}"
    run "$t-raw-stream" stream --raw --transport "$t" --count "$stream"
done

# RDMA hook. The bench lists what it measures in `blockwire-bench transports`; once that list
# has `rdma`, the rdma runs go through scripts/rxe-vm.sh (a throw-away VM with a soft-RoCE device;
# the results directory is shared writable, so the JSON and .hgrm files land beside the
# others). Anything short of all good runs prints "rdma: skipped (reason)" and no rdma row.
rdma_note=""
if [[ "${BLOCKWIRE_DEMO_RDMA:-auto}" == off ]]; then
    rdma_note="rdma: skipped (BLOCKWIRE_DEMO_RDMA=off)"
elif ! "$bench" transports | grep -qx rdma; then
    rdma_note="rdma: skipped (this build of blockwire-bench does not measure rdma yet)"
elif [[ ! -x scripts/rxe-vm.sh ]]; then
    rdma_note="rdma: skipped (scripts/rxe-vm.sh is missing)"
else
    say "rdma: pingpong and stream inside scripts/rxe-vm.sh"
    # Small counts: the VM may be emulated (TCG) and has two vCPUs. The full stack runs with
    # spin time 0 (its four threads would otherwise share two vCPUs): "rdma (sleep)". The bare
    # transporter ping-pongs spinning, beside perftest's ib_write_lat on the same rxe0; its
    # stream spins 500 us before sleeping (about 50 us of a real CPU under TCG).
    rdma_count=${BLOCKWIRE_DEMO_RDMA_COUNT:-2000}
    rdma_stream=${BLOCKWIRE_DEMO_RDMA_STREAM:-200000}
    # The VM sees the host's root with fresh /tmp, /var/tmp, /run and /dev/shm: a build that
    # lives under one of those is shared read-only.
    ro_dirs=${RXE_VM_RO_DIRS:-}
    case $(realpath -m "$target") in
        /tmp/* | /var/tmp/* | /run/* | /dev/shm/*) ro_dirs="$(realpath -m "$target")${ro_dirs:+:$ro_dirs}" ;;
    esac
    set +e
    RXE_VM_RO_DIRS="$ro_dirs" RXE_VM_RW_DIRS="$out" RXE_VM_TIMEOUT=${RXE_VM_TIMEOUT:-150} \
        scripts/rxe-vm.sh -- bash -c '
        "$1" pingpong --transport rdma --mode sleep --spin-us 0 --count "$2" --warmup "$3" \
            --json --hgrm-dir "$4/hgrm" >"$4/runs/rdma-pingpong.json" &&
        "$1" stream --transport rdma --mode sleep --spin-us 0 --count "$5" --json \
            >"$4/runs/rdma-stream.json" &&
        "$1" pingpong --raw --transport rdma --mode spin --count "$2" --warmup "$3" \
            --json --hgrm-dir "$4/hgrm" >"$4/runs/rdma-raw-pingpong.json" &&
        "$1" stream --raw --transport rdma --spin-us 500 --count "$5" --json \
            >"$4/runs/rdma-raw-stream.json"' \
        rdma "$bench" "$rdma_count" $((rdma_count / 10)) "$out" "$rdma_stream"
    rc=$?
    set -e
    if ((rc != 0)); then
        rm -f "$out"/runs/rdma-*.json "$out"/hgrm/rdma_* "$out"/hgrm/raw_rdma_*
        case $rc in
            124) rdma_note="rdma: skipped (the rxe VM timed out)" ;;
            125) rdma_note="rdma: skipped (the rxe VM rig failed to start; see its message above)" ;;
            *) rdma_note="rdma: skipped (the bench failed inside the rxe VM, exit $rc)" ;;
        esac
    fi
fi
[[ -n "$rdma_note" ]] && say "$rdma_note"

# --- 5. the table and the plot ---------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "blockwire on $(nproc) CPUs ($(uname -srm)), $(date -u '+%Y-%m-%d %H:%M UTC'); load average" \
    "before $load_before, after $load_after. Round trips: $count after $warmup of warm-up;" \
    "streams: $stream signals of 4 words. tcp/shm: examples/config/two-node-{tcp,shm}.toml" \
    "(node 1 a blockwire-datanode process, node 2 the bench; spin 50 us, then sleep);" \
    "local: one node, two block threads; (sleep): generated files with spin time 0." \
    "bare transporter: registry and transport without the block runtime (ping-pong spinning," \
    "stream spinning 50 us, then sleeping). wakeups/1k: receiver wakeups per 1,000 signals."
echo
"$bench" report --runs "$out/runs" --hgrm-dir "$out/hgrm" --svg "$plot" \
    --title "blockwire round trips on $(nproc) CPUs: full stack, bare transporter and limits"
[[ -n "$rdma_note" ]] && echo "$rdma_note"
echo
say "blockwire-bench kv: the engine on two data-node processes and one API-node driver"
"$bench" kv --transport tcp --transport shm --ops "$count" --warmup "$warmup"
echo
say "blockwire-bench scan: pushed-down aggregate against client-side, range scans (unpruned and pruned to one partition) against a key read"
"$bench" scan --transport tcp --transport shm --rows "${BLOCKWIRE_DEMO_SCAN_ROWS:-1000000}" --repeat 3
echo
say "plot: $plot; runs: $out/runs; distributions: $out/hgrm; $((SECONDS - started)) s after the build"

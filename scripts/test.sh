#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian 12 machine, then
# runs clippy (warnings are errors), every test of the workspace, the loom models, and the RDMA
# suites on a real verbs device: soft-RoCE inside a throw-away VM (scripts/rxe-vm.sh).
#
# Run it from anywhere; as root it installs missing Debian packages with apt-get, otherwise it
# says which are missing and stops. The Rust toolchain (cargo, rustc, clippy) must already be
# on the PATH: Debian's own rustc is too old for this workspace.
#
# Env knobs:
#   BLOCKWIRE_TEST_SKIP_CLIPPY=1   skip the clippy step (local quick runs only; CI never sets it)
#   BLOCKWIRE_TEST_SKIP_RDMA=1     skip the RDMA suites in the VM (local quick runs only)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

# A one-shot run gains nothing from incremental compilation, whose caches would double the
# target directory's size on disk (set CARGO_INCREMENTAL=1 to keep them).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The build needs about 4 GB; say what is free so a full disk is recognised as such.
df -h "$here" | awk 'NR == 2 { print "test.sh: " $4 " free on " $6 " (a clean build needs about 4 GB)" }'

# Debian packages the build and the tests need (gcc and pkg-config for crates that build C;
# libibverbs-dev for the verbs shim; the rxe provider for the RDMA suites; iproute2 for the
# network-partition test, which makes network namespaces; procps for kill, with which the
# failover tests stop and continue a data node; fuse3 for the metadata server's mount tests
# (/dev/fuse, as root), and git, which they run on a mount).
packages=(gcc libc6-dev pkg-config libibverbs-dev ibverbs-providers iproute2 procps fuse3 git)

# shellcheck source=lib/packages.sh
source "$here/scripts/lib/packages.sh"
ensure_packages test.sh "${packages[@]}"

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo is not on the PATH; install a current stable Rust toolchain (rustup)" >&2
    exit 1
fi

if [[ "${BLOCKWIRE_TEST_SKIP_CLIPPY:-0}" != 1 ]]; then
    echo "test.sh: cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

echo "test.sh: cargo test --workspace"
cargo test --workspace

# Without the rdma feature (no libibverbs) everything else still builds, tests included.
echo "test.sh: cargo check --workspace --no-default-features (no RDMA)"
cargo check --workspace --exclude blockwire-verbs --no-default-features --all-targets --quiet

# Model checks of the lock-free wake protocols (job buffers' sleep/wake in node, the shared-memory
# rings' sleep flag and the RDMA sleep announcement in transporter): loom explores every
# interleaving the memory model allows.
# A separate target directory keeps the --cfg loom build from invalidating the normal one.
echo "test.sh: loom model checks"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
    cargo test -p blockwire-node -p blockwire-transporter --release --lib loom

# The RDMA transporter on real verbs: its conformance cases and the RDMA-only cases run inside
# a VM with a soft-RoCE device (scripts/rxe-vm.sh installs qemu and the rest, and fetches a
# Debian kernel package once). Each test binary runs in its own VM through the cargo runner;
# inside it (RXE_VM=1) a missing device fails the cases instead of skipping them.
if [[ "${BLOCKWIRE_TEST_SKIP_RDMA:-0}" != 1 ]]; then
    echo "test.sh: RDMA suites inside scripts/rxe-vm.sh (soft-RoCE)"
    scripts/rxe-vm.sh --prepare
    # The tests start binaries of the target directory (blockwire-linkpeer, blockwire-datanode);
    # the guest sees the host's root, but with fresh /tmp, /var/tmp, /run and /dev/shm: share a
    # target directory that lives under one of those.
    target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$here/target}")
    case $target_dir in
        /tmp/* | /var/tmp/* | /run/* | /dev/shm/*)
            export RXE_VM_RO_DIRS="$target_dir${RXE_VM_RO_DIRS:+:$RXE_VM_RO_DIRS}"
            ;;
    esac
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$here/scripts/rxe-vm.sh"
    cargo test -p blockwire-transporter --test rdma
    cargo test -p blockwire-transporter --test conformance -- rdma
    cargo test -p blockwire-transporter --test send_thread -- rdma
    cargo test -p blockwire-node --test cluster -- rdma
    cargo test -p blockwire-client --test transactions -- rdma
    unset CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER
fi

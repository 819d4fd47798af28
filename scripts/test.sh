#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian 12 machine, then
# runs clippy (warnings are errors) and every test of the workspace.
#
# Run it from anywhere; as root it installs missing Debian packages with apt-get, otherwise it
# says which are missing and stops. The Rust toolchain (cargo, rustc, clippy) must already be
# on the PATH: Debian's own rustc is too old for this workspace.
#
# Env knobs:
#   BLOCKWIRE_TEST_SKIP_CLIPPY=1   skip the clippy step (local quick runs only; CI never sets it)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

# Debian packages the build and the tests need (gcc and pkg-config for crates that build C).
packages=(gcc libc6-dev pkg-config)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "test.sh: installing missing packages as root: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "test.sh: not root, so cannot install missing packages: ${missing[*]}" >&2
        echo "test.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

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

# Model checks of the lock-free wake protocols (job buffers' sleep/wake in node, the shared-memory
# rings' sleep flag in transporter): loom explores every interleaving the memory model allows.
# A separate target directory keeps the --cfg loom build from invalidating the normal one.
echo "test.sh: loom model checks"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
    cargo test -p blockwire-node -p blockwire-transporter --release --lib loom

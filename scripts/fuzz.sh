#!/usr/bin/env bash
# Fuzzes the signal batch walker (fuzz/fuzz_targets/walk.rs) with libFuzzer for a set time.
#
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
# cargo fuzz needs nightly flags (-Z sanitizer); on a stable toolchain RUSTC_BOOTSTRAP=1 lets
# them through. Installs cargo-fuzz from crates.io when missing. Findings land in
# fuzz/artifacts/walk/; the corpus grows in fuzz/corpus/walk/ (both ignored by git).
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz run walk -- -max_total_time="$seconds" -rss_limit_mb=2048

#!/usr/bin/env bash
# Builds the serving, registry and training crates for aarch64 (Graviton) with
# Debian's cross gcc as linker and runs their tests under qemu-user. Only the
# portable kernels exist there, so this is where they are proven. Part of `make test`
# (docs/BENCHMARKS.md, "Tests on arm64").
# Usage: scripts/test_arm64.sh [cargo test args...] (default: recs-core, recs-control, recs-serve,
# recs-train, recs-drift, recs-telemetry and the end-to-end tests in tests/: implicit's
# fixtures, fold-in, the registry's refusals, the API's inputs, rollouts, serve_http).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
# recs-core's HNSW index (usearch) is C++.
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || need+=(qemu-user-static)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "test-arm64: install ${need[*]} (Debian) first" >&2
        exit 1
    fi
    echo "test-arm64: installing ${need[*]} from Debian"
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
qemu=$(command -v qemu-aarch64-static || command -v qemu-aarch64)
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$qemu -L $QEMU_LD_PREFIX"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
# For this run only (the x86 `cargo test --workspace` keeps the dev profile and the
# full proptest counts): code under qemu runs ~10x slower than native, so the test
# build is optimised (opt-level 1; debug assertions and overflow checks stay on), the
# property tests run 32 cases each (the x86 run already does the full count; here
# they prove the portable kernels and parsers on aarch64), and a one-off cold build
# gains nothing from incremental compilation.
export CARGO_PROFILE_DEV_OPT_LEVEL=${CARGO_PROFILE_DEV_OPT_LEVEL:-1}
export PROPTEST_CASES=${PROPTEST_CASES:-32}
export CARGO_INCREMENTAL=0
if (($# == 0)); then
    set -- -p recs-core -p recs-control -p recs-serve -p recs-train -p recs-drift -p recs-telemetry -p e2e-tests
fi
start=$(date +%s)
cargo test --target "$target" --no-run "$@"
built=$(date +%s)
# Every crate's tests run even when one fails, as in the x86 `make test-cargo`.
cargo test --target "$target" --no-fail-fast "$@"
end=$(date +%s)
echo "test-arm64: build $((built - start)) s, tests under qemu $((end - built)) s"

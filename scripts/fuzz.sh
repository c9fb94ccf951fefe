#!/usr/bin/env bash
# Runs every cargo-fuzz target in tests/fuzz for SECONDS each (default 5), seeded
# with the real fixtures (model_registry/, ../shared/fixtures, ../shared/data) and the
# small seeds in tests/fuzz/seeds. Prints, per target, the cases run and cases/s.
# A crash fails the run; its input is kept under target/fuzz-artifacts/<target>/.
#
# The toolchain is stable only: cargo fuzz's nightly flags are accepted with
# RUSTC_BOOTSTRAP=1. No sanitizer: the parsers are safe Rust, so what a fuzzer can
# find is a panic (overflow checks are on: -a), which needs none.
set -euo pipefail
secs=${1:-5}
cd "$(dirname "$0")/.."
root=$PWD
shared=${RECS_SHARED_DIR:-$root/../shared}
export RUSTC_BOOTSTRAP=1

fail_or_skip() {
    if [[ "${CI:-}" == "true" ]]; then
        echo "fuzz: $1 (CI=true: failing)" >&2
        exit 1
    fi
    echo "SKIP fuzz: $1" >&2
    exit 0
}

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz >/dev/null 2>&1 \
        || fail_or_skip "cargo-fuzz could not be installed"
fi
fuzz=(cargo fuzz)
opts=(--fuzz-dir tests/fuzz --sanitizer none -a --target-dir "$root/target/fuzz")
# The short run (make test) builds unoptimised: a clean release build of the targets'
# dependencies (aws-sdk-s3 among them) costs many minutes of CI for 5 s of fuzzing.
if ((secs <= 10)); then
    opts+=(--dev)
fi
"${fuzz[@]}" build "${opts[@]}" >target/fuzz-build.log 2>&1 \
    || { tail -30 target/fuzz-build.log >&2; fail_or_skip "the fuzz targets did not build (log above)"; }

targets=$("${fuzz[@]}" list --fuzz-dir tests/fuzz)
corpus_root=target/fuzz-corpus
mkdir -p "$corpus_root" target/fuzz-artifacts

# Seeds from real files: every .npy/.npz of the registries, titles, ratings.
seed() { # target, file, [prefix byte in hex]
    local dir=$corpus_root/$1 name
    mkdir -p "$dir"
    [[ -f "$2" ]] || return 0
    name=$(echo "$2" | sha1sum | cut -c1-12)
    if [[ -n "${3:-}" ]]; then
        { printf "\\x$3"; head -c 65536 "$2"; } >"$dir/real-$name"
    else
        head -c 262144 "$2" >"$dir/real-$name"
    fi
}
for t in $targets; do
    mkdir -p "$corpus_root/$t"
    [[ -d tests/fuzz/seeds/$t ]] && cp tests/fuzz/seeds/$t/* "$corpus_root/$t/"
done
while IFS= read -r f; do seed npy "$f"; done < <(find model_registry "$shared/fixtures" -name '*.npy' 2>/dev/null)
while IFS= read -r f; do seed npz "$f"; done < <(find model_registry "$shared/fixtures" -name '*.npz' 2>/dev/null)
seed titles model_registry/movie_titles.csv 00
seed titles "$shared/data/ml-100k/u.item" 01
seed titles "$shared/data/ml-1m/movies.dat" 02
seed ratings "$shared/data/ml-100k/u.data" 01
seed ratings "$shared/data/ml-1m/ratings.dat" 02
seed events "$shared/data/ml-100k/u.data" 03

printf '%-10s %12s %10s %12s\n' target cases seconds cases/s
status=0
for t in $targets; do
    log=target/fuzz-$t.log
    if "${fuzz[@]}" run "${opts[@]}" "$t" "$corpus_root/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -max_len=65536 \
        -artifact_prefix="target/fuzz-artifacts/$t-" >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
        took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | awk '{print $5}' | tail -1)
        took=${took:-$secs}
        printf '%-10s %12s %10s %12s\n' "$t" "${runs:-?}" "$took" \
            "$(awk -v r="${runs:-0}" -v s="$took" 'BEGIN { printf "%.0f", (s > 0 ? r / s : r) }')"
    else
        echo "fuzz target $t FAILED; log: $log" >&2
        grep -A20 -m1 'panicked\|ERROR: libFuzzer\|deadly signal' "$log" >&2 || tail -30 "$log" >&2
        status=1
    fi
done
exit $status

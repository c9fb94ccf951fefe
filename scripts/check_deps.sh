#!/usr/bin/env bash
# Each Lambda function links only what it runs (make lint): cargo tree of one
# function at a time (as make build builds them) must not reach these crates.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() { # package, crates it must not link...
  local pkg=$1; shift
  local tree; tree=$(cargo tree -p "$pkg" -e normal --prefix none 2>/dev/null | awk '{print $1}' | sort -u)
  for crate in "$@"; do
    if grep -qx "$crate" <<<"$tree"; then
      echo "check_deps: $pkg links $crate (cargo tree -p $pkg -e normal -i $crate shows why)" >&2
      fail=1
    fi
  done
}
# aws-sdk-emrserverless (the retrain's Spark path) is linked by the retrain function only.
check health usearch rand_distr recs-train aws-sdk-emrserverless
check switch usearch rand_distr recs-train aws-sdk-emrserverless
check recommend rand_distr rand recs-train aws-sdk-emrserverless
check retrain axum lambda_http matchit recs-serve
check drift axum lambda_http recs-serve usearch aws-sdk-emrserverless parquet
check batch axum lambda_http matchit recs-serve recs-train rand_distr aws-sdk-emrserverless parquet
check recs aws-sdk-emrserverless
check recs-telemetry recs-core
# No old hyper 0.14 client from the AWS SDK's default features (RustSec advisories).
for crate in 'h2 0.3' 'rustls-webpki 0.101' 'hyper 0.14'; do
  name=${crate% *}; ver=${crate#* }
  if grep -A1 "^name = \"$name\"$" Cargo.lock | grep -q "^version = \"$ver"; then
    echo "check_deps: Cargo.lock holds $name $ver" >&2; fail=1
  fi
done
# ... and the retrain function does link it (the check above would pass vacuously otherwise).
# (The tree is read whole first: `grep -q` exiting early would fail the pipe under pipefail.)
retrain_tree=$(cargo tree -p retrain -e normal --prefix none 2>/dev/null | awk '{print $1}' | sort -u)
if ! grep -qx aws-sdk-emrserverless <<<"$retrain_tree"; then
  echo "check_deps: retrain does not link aws-sdk-emrserverless (its Spark path)" >&2; fail=1
fi
[ $fail = 0 ] && echo "check_deps: each function links only what it runs (the EMR SDK: retrain only); no h2 0.3 / rustls-webpki 0.101 / hyper 0.14"
exit $fail

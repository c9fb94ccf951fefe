#!/usr/bin/env bash
# Soak (`make soak`): one million requests (SOAK_REQUESTS) mixing known and unknown
# users, errors and switches against the local server (recs::server::serve, the
# server of `recs serve`, in process), over keep-alive connections. Prints the RSS at
# start, after warm-up (10 % of the requests) and every 10 %; fails on any 5xx or
# when RSS grows 5 % or more after warm-up. The registry (model_registry/ unless
# SOAK_REGISTRY) is copied to a temporary folder: switches write active.json there.
# SOAK_PROFILE=release (default) or dev.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${SOAK_PROFILE:-release}
cargo build --profile "$profile" -p recs --example soak
dir=$([[ $profile == dev ]] && echo debug || echo "$profile")
exec "target/$dir/examples/soak" "${SOAK_REGISTRY:-model_registry}" "${SOAK_REQUESTS:-1000000}"

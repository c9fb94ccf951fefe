#!/usr/bin/env bash
# Checks shared/serve/openapi.json against a real `recs serve` with schemathesis
# (PyPI): every generated request (valid and invalid) must get a documented status,
# content type and body, and none a 5xx. The server serves a scratch copy of
# model_registry/, since the generated /switch and /rollout/update calls write to it.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${OPENAPI_EXAMPLES:-40}
if ! command -v st >/dev/null || ! python3 -c "import schemathesis" 2>/dev/null; then
    echo "openapi: installing schemathesis from PyPI"
    python3 -m pip install --quiet schemathesis \
        || { echo "openapi: pip install schemathesis failed; the OpenAPI check needs it" >&2; exit 1; }
fi
st=$(command -v st || echo "python3 -m schemathesis.cli")
cargo build --quiet -p recs --bin recs
reg=$(mktemp -d)
cp -r model_registry/. "$reg"/
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn ./target/debug/recs serve --registry "$reg" --port "$port" >"$reg/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$reg"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$reg/server.log" >&2; exit 1; }
$st run "http://127.0.0.1:$port/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$examples" --workers 2 --request-timeout 10 --suppress-health-check all \
    --warnings off

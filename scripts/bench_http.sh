#!/usr/bin/env bash
# The local server under load (make bench-http): resident memory before and after
# sustained /recommend traffic, and /recommend's requests per second against
# /healthz's on the same server in the same minute (wrk, 1 thread, 8 connections).
#   bash scripts/bench_http.sh [REGISTRY] [SECONDS]
# REGISTRY defaults to implicit's ml-100k registry in ../shared/fixtures, else
# model_registry/. Needs wrk (apt-get install wrk: installed when absent and root).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${RECS_SHARED_DIR:-../shared}
reg=${1:-}
if [[ -z $reg ]]; then
  if [[ -d $shared/fixtures/implicit-ml100k ]]; then reg=$shared/fixtures/implicit-ml100k; else reg=model_registry; fi
fi
secs=${2:-20}
command -v wrk >/dev/null || { [[ $(id -u) == 0 ]] && apt-get install -y -qq wrk >/dev/null; } \
  || { echo "bench_http: wrk is needed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p recs --bin recs
work=$(mktemp -d)
cp -r "$reg"/. "$work/registry"
users=$(python3 - "$work/registry" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
v = (root / "latest.txt").read_text().strip()
d = root / v / "als"
print(len(json.loads((d / "users.json").read_text())) if (d / "users.json").exists() else 900)
PY
)
RUST_LOG=warn ./target/release/recs serve --registry "$work/registry" --port 0 >"$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
port=
for _ in $(seq 100); do
  port=$(grep -oE '127\.0\.0\.1:[0-9]+' "$work/serve.log" | head -1 | cut -d: -f2 || true)
  [[ -n $port ]] && curl -sf "localhost:$port/healthz" >/dev/null && break
  sleep 0.2
done
[[ -n $port ]] || { cat "$work/serve.log" >&2; exit 1; }
rss() { awk '/VmRSS/{print $2}' "/proc/$pid/status"; }
cat >"$work/users.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/recommend/" .. (counter % $users + 1) .. "?k=10")
end
LUA
start=$(rss)
wrk -t1 -c8 -d"${secs}s" -s "$work/users.lua" "http://127.0.0.1:$port" >/dev/null
loaded=$(rss)
rps() { awk '/Requests\/sec/{print $2}'; }
r=$(wrk -t1 -c8 -d10s -s "$work/users.lua" "http://127.0.0.1:$port" | rps)
h=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$port/healthz" | rps)
echo "registry: $reg ($users users)"
echo "RSS after start: $((start / 1024)) MiB ($start kB)"
echo "RSS after ${secs}s of /recommend load: $((loaded / 1024)) MiB ($loaded kB)"
echo "requests/s: /recommend $r, /healthz $h, ratio $(python3 -c "print(round($r / $h, 2))")"

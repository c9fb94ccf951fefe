#!/usr/bin/env bash
# Local monitoring for `recs serve`: Prometheus with the generated alert rules
# (infra/prometheus/alert_rules.yml), plus Alertmanager when it can be installed.
#
#   make run                 # terminal 1: recs serve on 127.0.0.1:${PORT:-8080}
#   bash infra/observe.sh    # terminal 2: Ctrl-C stops everything it started
#
# It does not start recs: until `recs serve` answers, ServiceDown fires (after 1 minute).
# Everything lives in a temporary directory that is removed on exit.
# Environment: PORT (recs, 8080), PROM_PORT (9090), AM_PORT (9093),
#              OBSERVE_NO_INSTALL=1 (never apt-get; skip what is missing).
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${PORT:-8080}"
PROM_PORT="${PROM_PORT:-9090}"
AM_PORT="${AM_PORT:-9093}"

say() { echo "observe.sh: $*"; }
die() { echo "observe.sh: $*" >&2; exit 1; }

# apt_install PACKAGE: 0 when it got installed (root, or passwordless sudo)
apt_install() {
  [ "${OBSERVE_NO_INSTALL:-0}" = 1 ] && return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || return 1
    sudo="sudo -n"
  fi
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$1"; } \
    >/dev/null 2>&1
}

# http_ok URL: 0 when it answers 2xx
http_ok() {
  if command -v curl >/dev/null 2>&1; then
    curl -sf -o /dev/null --max-time 2 "$1"
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" >/dev/null 2>&1
  fi
}

# ---------------------------------------------------------------- binaries
if ! command -v prometheus >/dev/null 2>&1; then
  say "installing prometheus (apt-get install prometheus)"
  apt_install prometheus || die "prometheus is missing and could not be installed; run: apt-get install -y prometheus"
fi
AM_BIN=""
find_am() { for b in prometheus-alertmanager alertmanager; do command -v "$b" >/dev/null 2>&1 && { AM_BIN="$b"; return 0; }; done; return 1; }
if ! find_am; then
  say "installing prometheus-alertmanager (apt-get install prometheus-alertmanager)"
  if apt_install prometheus-alertmanager && find_am; then :; else
    say "Alertmanager not available (apt-get failed or not allowed): skipping it; alerts still show on Prometheus' /alerts page"
  fi
fi

# ---------------------------------------------------------------- config in a temp dir
WORK="$(mktemp -d "${TMPDIR:-/tmp}/movie-recs-observe.XXXXXX")"
PROM_PID="" AM_PID=""
cleanup() {
  trap - EXIT INT TERM
  for pid in $AM_PID $PROM_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $AM_PID $PROM_PID; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Same job name and evaluation interval as infra/prometheus/prometheus.yml (ServiceDown
# watches job "movie-recs"; the rule groups rely on the global 30s evaluation_interval).
{
  echo "global:"
  echo "  scrape_interval: 15s"
  echo "  scrape_timeout: 10s"
  echo "  evaluation_interval: 30s"
  echo "  external_labels: {service: movie-recs}"
  echo "rule_files: ['$INFRA/prometheus/alert_rules.yml']"
  if [ -n "$AM_BIN" ]; then
    echo "alerting:"
    echo "  alertmanagers: [{static_configs: [{targets: ['127.0.0.1:$AM_PORT']}]}]"
  fi
  echo "scrape_configs:"
  echo "  - job_name: movie-recs"
  echo "    metrics_path: /metrics"
  echo "    static_configs: [{targets: ['127.0.0.1:$PORT']}]"
} > "$WORK/prometheus.yml"
if command -v promtool >/dev/null 2>&1; then
  promtool check config "$WORK/prometheus.yml" >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; die "invalid Prometheus config"; }
fi

# ---------------------------------------------------------------- start
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!

if [ -n "$AM_BIN" ]; then
  # One receiver that sends nothing: the UI shows what would be routed where.
  printf 'route:\n  receiver: local\n  group_by: [alertname]\nreceivers:\n  - name: local\n' > "$WORK/alertmanager.yml"
  # --cluster.listen-address= : a single instance, no gossip port
  "$AM_BIN" --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/alertmanager-data" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= >"$WORK/alertmanager.log" 2>&1 &
  AM_PID=$!
fi

# wait_ready NAME PID URL LOG
wait_ready() {
  for _ in $(seq 1 60); do
    http_ok "$3" && return 0
    kill -0 "$2" 2>/dev/null || { tail -n 20 "$4" >&2; die "$1 exited (port in use?); its log is above"; }
    sleep 0.5
  done
  tail -n 20 "$4" >&2
  die "$1 did not become ready at $3 in 30 s"
}
wait_ready Prometheus "$PROM_PID" "http://127.0.0.1:$PROM_PORT/-/ready" "$WORK/prometheus.log"
[ -z "$AM_PID" ] || wait_ready Alertmanager "$AM_PID" "http://127.0.0.1:$AM_PORT/-/ready" "$WORK/alertmanager.log"

echo
echo "  Prometheus    http://localhost:$PROM_PORT/alerts    the alerts of infra/slo.yaml (pending / firing)"
echo "                http://localhost:$PROM_PORT/targets   job movie-recs -> 127.0.0.1:$PORT/metrics"
echo "                http://localhost:$PROM_PORT/graph     e.g. movie_recs:slo_errors_per_request:ratio_rate5m"
if [ -n "$AM_PID" ]; then
  echo "  Alertmanager  http://localhost:$AM_PORT           (routes to a receiver that sends nothing)"
else
  echo "  Alertmanager  not running"
fi
if http_ok "http://127.0.0.1:$PORT/healthz"; then
  echo "  recs serve    answering on 127.0.0.1:$PORT"
else
  echo "  recs serve    not answering on 127.0.0.1:$PORT: run \`make run\` in another terminal (ServiceDown fires meanwhile)"
fi
echo "  Ctrl-C stops Prometheus${AM_PID:+ and Alertmanager} and removes $WORK"
echo

wait "$PROM_PID"

#!/usr/bin/env bash
# What `make drill` and `make docs-check` need: Debian's prometheus (and promtool),
# python3 with PyYAML, jq and curl (the runbook's commands). Installs what is missing
# when it can (root: apt-get; pip for PyYAML), else fails saying what to install.
set -euo pipefail
say() { echo "drill_prereqs: $*" >&2; }
missing=()
for cmd in prometheus promtool jq curl; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=()
  for cmd in "${missing[@]}"; do
    case "$cmd" in promtool) pkgs+=(prometheus);; *) pkgs+=("$cmd");; esac
  done
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${pkgs[*]} (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >/dev/null 2>&1 || true
  fi
  for cmd in "${missing[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || { say "$cmd is missing: apt-get install -y ${pkgs[*]} (as root)"; exit 1; }
  done
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml \
  || { say "PyYAML is missing: python3 -m pip install pyyaml"; exit 1; }

#!/usr/bin/env bash
# Lints and tests everything under infra/. Run from anywhere:  bash infra/lint.sh
#   0. the functions `make build` builds (FUNCTIONS) = the template's CodeUri folders = functions/*
#   1. python3 infra/gen_alerts.py --check                   (alarms and rules match infra/slo.yaml)
#   2. cfn-lint infra/template.yaml                         (SAM transform + resource schemas)
#   3. promtool check rules / test rules / check config      (Prometheus alerts and their tests)
#   4. python3 infra/tests/check_template.py                 (runbook thresholds, IAM, routes,
#                                                             alarm<->rule parity, dashboards)
# Installs cfn-lint (pip) and promtool (apt, Debian package "prometheus") when missing.
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$INFRA")"
cd "$ROOT"
CFN_LINT_SPEC="${CFN_LINT_SPEC:-cfn-lint==1.51.0}"   # the version this template was verified with

die() { echo "lint.sh: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

# ---------------------------------------------------------------- tools
if ! command -v cfn-lint >/dev/null 2>&1; then
  step "installing $CFN_LINT_SPEC (pip)"
  python3 -m pip install --quiet "$CFN_LINT_SPEC" \
    || die "cfn-lint is missing and 'python3 -m pip install $CFN_LINT_SPEC' failed; install it and re-run"
  hash -r
  command -v cfn-lint >/dev/null 2>&1 || die "cfn-lint installed but not on PATH (add ~/.local/bin to PATH)"
fi
if ! command -v promtool >/dev/null 2>&1; then
  step "installing promtool (apt-get install prometheus)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "promtool is missing and there is no sudo; run: apt-get install -y prometheus"
    SUDO="sudo"
  fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null \
    || die "promtool is missing and 'apt-get install -y prometheus' failed; install Prometheus' promtool and re-run"
  command -v promtool >/dev/null 2>&1 || die "package prometheus installed but promtool is not on PATH"
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml \
  || die "PyYAML is missing and 'python3 -m pip install pyyaml' failed"

echo "cfn-lint $(cfn-lint --version 2>&1 | awk '{print $NF}'), $(promtool --version 2>&1 | head -n1)"

# ---------------------------------------------------------------- checks
step "Lambda functions: Makefile's FUNCTIONS = template's CodeUri folders = functions/*"
python3 - <<'PY' || die "the Lambda function sets differ (above): make build must build every function the template deploys"
import pathlib, re, sys
line = re.search(r"^FUNCTIONS\s*:=(.*)$", pathlib.Path("Makefile").read_text(), re.M)
sets = {"Makefile FUNCTIONS (make build)": set(line[1].split() if line else ()),
        "infra/template.yaml CodeUri ../target/lambda/<name>/": set(re.findall(
            r"^\s*CodeUri:\s*['\"]?\.\./target/lambda/([\w-]+)", pathlib.Path("infra/template.yaml").read_text(), re.M)),
        "functions/*/Cargo.toml": {p.parent.name for p in pathlib.Path("functions").glob("*/Cargo.toml")}}
for name, fns in sets.items():
    print(f"  {name}: {' '.join(sorted(fns)) or '(none)'}")
sys.exit(len({frozenset(f) for f in sets.values()}) != 1)
PY

step "python3 infra/gen_alerts.py --check"
python3 infra/gen_alerts.py --check \
  || die "infra/template.yaml or infra/prometheus/alert_rules.yml differ from infra/slo.yaml: run python3 infra/gen_alerts.py"
bash -n infra/observe.sh || die "infra/observe.sh: syntax error"

step "cfn-lint infra/template.yaml"
cfn-lint infra/template.yaml || die "cfn-lint reported problems in infra/template.yaml"
echo "  no findings"

step "promtool check rules infra/prometheus/alert_rules.yml"
promtool check rules infra/prometheus/alert_rules.yml || die "invalid alert rules"

step "promtool test rules infra/prometheus/alert_rules_test.yml infra/prometheus/alert_rules_burn_rate_test.yml"
promtool test rules infra/prometheus/alert_rules_test.yml infra/prometheus/alert_rules_burn_rate_test.yml \
  || die "alert rule unit tests failed"

step "promtool check config infra/prometheus/prometheus.yml"
promtool check config infra/prometheus/prometheus.yml || die "invalid Prometheus config"

step "python3 infra/tests/check_template.py"
python3 infra/tests/check_template.py || die "infra checks failed (see above)"

echo
echo "lint.sh: all infra checks passed"

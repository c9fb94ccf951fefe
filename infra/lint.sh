#!/usr/bin/env bash
# Lints and tests everything under infra/. Run from anywhere:  bash infra/lint.sh
#   0. the functions `make build` builds (FUNCTIONS) = the template's CodeUri folders = functions/*
#   1. python3 infra/gen_alerts.py --check                   (alarms and rules match infra/slo.yaml)
#   2. cfn-lint infra/template.yaml                         (SAM transform + resource schemas)
#   3. sam validate --lint                                   (the SAM CLI's own validation)
#   4. checkov on the template translated to CloudFormation  (security checks; 0 failed, every
#      (infra/tests/sam_to_cfn.py, offline)                   skip is in the template's Metadata
#                                                             with its reason)
#   5. promtool check rules / test rules / check config      (Prometheus alerts and their tests)
#   6. python3 infra/tests/check_template.py                 (runbook thresholds, IAM, routes,
#                                                             alarm<->rule parity, dashboards,
#                                                             the security review's settings)
#   7. bash -n / shellcheck on the infra scripts             (check_buckets.sh is not run: AWS)
# Installs cfn-lint (pip) and promtool (apt, Debian package "prometheus") when missing, and
# checkov and the SAM CLI (pinned, pip) into their own virtualenvs under $INFRA_LINT_TOOLS
# (default ~/.cache/movie-recs-infra-lint): their pinned dependencies (checkov pins boto3
# 1.35 and networkx 2) would otherwise downgrade the ones cfn-lint uses. First run: about
# two minutes of pip installs; later runs reuse them.
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$INFRA")"
cd "$ROOT"
CFN_LINT_SPEC="${CFN_LINT_SPEC:-cfn-lint==1.51.0}"   # the version this template was verified with
CHECKOV_SPEC="${CHECKOV_SPEC:-checkov==3.3.30}"       # verified: 0 failed on this template
SAM_CLI_SPEC="${SAM_CLI_SPEC:-aws-sam-cli==1.170.0}"  # verified: sam validate --lint clean
INFRA_LINT_TOOLS="${INFRA_LINT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/movie-recs-infra-lint}"
# The SAM transform and sam validate need a region, never credentials.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0

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
python3 -c 'import samtranslator' 2>/dev/null \
  || die "aws-sam-translator is missing (cfn-lint depends on it): python3 -m pip install '$CFN_LINT_SPEC'"

# tool_venv NAME SPEC EXE: a virtualenv of its own per tool, (re)made when SPEC changes;
# prints the path of EXE in it.
tool_venv() {
  local name="$1" spec="$2" exe="$3"
  local venv="$INFRA_LINT_TOOLS/$name"
  if [ ! -x "$venv/bin/$exe" ] || [ "$(cat "$venv/.spec" 2>/dev/null)" != "$spec" ]; then
    step "installing $spec (pip, into $venv)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv $venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" >&2 \
      || die "'pip install $spec' into $venv failed; install it there by hand and re-run"
    [ -x "$venv/bin/$exe" ] || die "$spec installed into $venv but $venv/bin/$exe is missing"
    echo "$spec" > "$venv/.spec"
  fi
  echo "$venv/bin/$exe"
}
CHECKOV="$(tool_venv checkov "$CHECKOV_SPEC" checkov)"
SAM="$(tool_venv sam "$SAM_CLI_SPEC" sam)"

echo "cfn-lint $(cfn-lint --version 2>&1 | awk '{print $NF}'), checkov $("$CHECKOV" --version 2>/dev/null), $("$SAM" --version 2>&1), $(promtool --version 2>&1 | head -n1)"

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

step "cfn-lint infra/template.yaml"
cfn-lint infra/template.yaml || die "cfn-lint reported problems in infra/template.yaml"
echo "  no findings"

step "sam validate --lint (SAM CLI, offline)"
"$SAM" validate --lint --template infra/template.yaml \
  || die "sam validate --lint reported problems in infra/template.yaml"

step "checkov on the template translated to CloudFormation (infra/tests/sam_to_cfn.py)"
# Every skipped check is in the template: Metadata: checkov: skip: [{id, comment}] on the
# resource it concerns (SAM functions pass theirs on to what they generate). No
# --skip-check list here: a skip without a reason beside the resource does not exist.
CHECKOV_TMP="$(mktemp -d)"
trap 'rm -rf "$CHECKOV_TMP"' EXIT
python3 infra/tests/sam_to_cfn.py --out "$CHECKOV_TMP/template.json" \
  || die "the SAM transform of infra/template.yaml failed (above)"
"$CHECKOV" --file "$CHECKOV_TMP/template.json" --framework cloudformation --skip-download \
  --output json > "$CHECKOV_TMP/checkov.json" 2> "$CHECKOV_TMP/checkov.err" || true
python3 - "$CHECKOV_TMP/checkov.json" <<'PY' || { sed -n '1,40p' "$CHECKOV_TMP/checkov.err" >&2; die "checkov: failed checks (above); fix them, or skip one in the resource's Metadata with a real reason"; }
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"  checkov wrote no JSON report ({e})")
doc = doc[0] if isinstance(doc, list) else doc
s = doc.get("summary") or {}
print(f"  checkov {s.get('checkov_version')}: {s.get('resource_count')} resources, passed {s.get('passed')}, "
      f"failed {s.get('failed')}, skipped {s.get('skipped')}, parsing errors {s.get('parsing_errors')}")
res = doc.get("results") or {}
for c in res.get("skipped_checks", []):
    print(f"  skipped {c['check_id']} on {c['resource']}")
for c in res.get("failed_checks", []):
    print(f"  FAILED {c['check_id']} on {c['resource']}: {c['check_name']}", file=sys.stderr)
sys.exit(1 if s.get("failed") or s.get("parsing_errors") or not s.get("resource_count") else 0)
PY

step "promtool check rules infra/prometheus/alert_rules.yml"
promtool check rules infra/prometheus/alert_rules.yml || die "invalid alert rules"

step "promtool test rules infra/prometheus/alert_rules_test.yml infra/prometheus/alert_rules_burn_rate_test.yml"
promtool test rules infra/prometheus/alert_rules_test.yml infra/prometheus/alert_rules_burn_rate_test.yml \
  || die "alert rule unit tests failed"

step "promtool check config infra/prometheus/prometheus.yml"
promtool check config infra/prometheus/prometheus.yml || die "invalid Prometheus config"

step "python3 infra/tests/check_template.py"
python3 infra/tests/check_template.py || die "infra checks failed (see above)"

step "infra scripts: bash -n, shellcheck (check_buckets.sh needs AWS, so it is not run here)"
for script in infra/check_buckets.sh infra/observe.sh infra/lint.sh; do
  bash -n "$script" || die "$script: syntax error"
done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck infra/check_buckets.sh infra/observe.sh infra/lint.sh || die "shellcheck found problems (above)"
  echo "  shellcheck: check_buckets.sh, observe.sh, lint.sh clean"
else
  echo "  shellcheck not installed: syntax checked only (apt-get install shellcheck)"
fi

echo
echo "lint.sh: all infra checks passed"

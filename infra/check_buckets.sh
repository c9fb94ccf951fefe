#!/usr/bin/env bash
# Pre-deploy check for CreateBuckets=false: refuses existing buckets that lack the settings
# infra/template.yaml gives the buckets it creates (docs/SECURITY.md, "Data stores").
#
#   bash infra/check_buckets.sh --registry-bucket NAME [--events-bucket NAME]
#                               [--events-prefix events] [--max-exposure-days 90]
#                               [--kms-key-arn ARN]
#
# Same values as the stack's parameters (RegistryBucket, EventsBucket, EventsPrefix,
# ExposureLogExpirationDays, BucketKmsKeyArn); an empty --events-bucket means the registry
# bucket holds the events too. Uses the aws CLI with the caller's credentials (AWS_PROFILE,
# AWS_REGION, ...) and only reads bucket configuration:
#   get-bucket-encryption               SSE-S3 or SSE-KMS (with --kms-key-arn: that key)
#   get-bucket-versioning               Enabled
#   get-public-access-block             all four settings true
#   get-bucket-policy                   denies s3:* to everyone when aws:SecureTransport is false
#   get-bucket-lifecycle-configuration  (events bucket) <prefix>/reco_response/ and
#                                       <prefix>/reco_response_errors/ expire within
#                                       --max-exposure-days, noncurrent versions too
# Exit 0: every bucket passes. 1: a bucket lacks a setting (each one is listed). 2: usage
# error, or a bucket could not be read (credentials, permissions, no such bucket).
# Not run in CI (it needs AWS); lint.sh only checks its syntax.
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

REGISTRY="" EVENTS="" EVENTS_PREFIX="events" MAX_DAYS=90 KMS_KEY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --registry-bucket) REGISTRY="${2:-}"; shift 2 ;;
    --events-bucket) EVENTS="${2:-}"; shift 2 ;;
    --events-prefix) EVENTS_PREFIX="${2:-}"; shift 2 ;;
    --max-exposure-days) MAX_DAYS="${2:-}"; shift 2 ;;
    --kms-key-arn) KMS_KEY="${2:-}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "check_buckets.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$REGISTRY" ] || { echo "check_buckets.sh: --registry-bucket is required" >&2; usage; }
[ -n "$EVENTS" ] || EVENTS="$REGISTRY"
case "$MAX_DAYS" in ''|*[!0-9]*) echo "check_buckets.sh: --max-exposure-days must be a number" >&2; exit 2 ;; esac
EVENTS_PREFIX="${EVENTS_PREFIX%/}"
command -v aws >/dev/null 2>&1 || { echo "check_buckets.sh: the aws CLI is not installed" >&2; exit 2; }
command -v python3 >/dev/null 2>&1 || { echo "check_buckets.sh: python3 is needed to read the policies" >&2; exit 2; }

FAILED=0
ERRFILE="$(mktemp)"
trap 'rm -f "$ERRFILE"' EXIT
fail() { echo "  FAIL $*"; FAILED=1; }
ok() { echo "  ok   $*"; }

# get BUCKET SUBCOMMAND: the JSON answer of `aws s3api SUBCOMMAND --bucket BUCKET` in DOC.
# A configuration the bucket does not have (NoSuch..., ...NotFoundError) returns 1 with an
# empty DOC; any other error (access denied, no credentials, no such bucket) stops the
# script with exit 2: a bucket that cannot be read is not passed.
DOC=""
get() {
  local bucket="$1" sub="$2" rc=0
  DOC="$(aws s3api "$sub" --bucket "$bucket" --output json 2>"$ERRFILE")" || rc=$?
  [ "$rc" -eq 0 ] && return 0
  DOC=""
  if grep -Eq 'NoSuchBucketPolicy|NoSuchLifecycleConfiguration|NoSuchPublicAccessBlockConfiguration|ServerSideEncryptionConfigurationNotFoundError' "$ERRFILE"; then
    return 1
  fi
  echo "check_buckets.sh: aws s3api $sub --bucket $bucket failed:" >&2
  cat "$ERRFILE" >&2
  exit 2
}

# py CODE JSON [ARGS...]: runs a small python3 check on a JSON document (stdin); its
# output is the reason when it fails.
py() {
  local code="$1" doc="$2"
  shift 2
  printf '%s' "$doc" | python3 -c "$code" "$@"
}

check_encryption() {
  local b="$1" doc
  if ! get "$b" get-bucket-encryption; then
    fail "$b: no default encryption"
    return
  fi
  doc="$DOC"
  local why
  if why="$(py '
import json, sys
rules = json.load(sys.stdin)["ServerSideEncryptionConfiguration"]["Rules"]
d = (rules[0].get("ApplyServerSideEncryptionByDefault") or {}) if rules else {}
alg, key, want = d.get("SSEAlgorithm"), d.get("KMSMasterKeyID", ""), sys.argv[1]
if alg not in ("AES256", "aws:kms", "aws:kms:dsse"):
    sys.exit(f"default encryption is {alg!r}")
if want and (alg == "AES256" or not (key == want or want.endswith("/" + key.split("/")[-1]))):
    sys.exit(f"default encryption is {(alg + chr(32) + key).strip()}, not SSE-KMS with {want}")
print(alg + (" " + key if key else ""))
' "$doc" "$KMS_KEY" 2>&1)"; then ok "$b: default encryption $why"; else fail "$b: $why"; fi
}

check_versioning() {
  local b="$1" status
  get "$b" get-bucket-versioning || true
  [ -n "$DOC" ] || DOC='{}'     # a bucket that was never versioned answers nothing
  status="$(py 'import json, sys; print(json.load(sys.stdin).get("Status", "never enabled"))' "$DOC")"
  if [ "$status" = "Enabled" ]; then ok "$b: versioning Enabled"; else fail "$b: versioning is $status (want Enabled)"; fi
}

check_public_access_block() {
  local b="$1" doc
  if ! get "$b" get-public-access-block; then
    fail "$b: no public access block configuration"
    return
  fi
  doc="$DOC"
  local why
  if why="$(py '
import json, sys
c = json.load(sys.stdin)["PublicAccessBlockConfiguration"]
off = [k for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets") if c.get(k) is not True]
if off:
    sys.exit("public access block settings not on: " + ", ".join(off))
' "$doc" 2>&1)"; then ok "$b: all four public access block settings on"; else fail "$b: $why"; fi
}

check_tls_policy() {
  local b="$1" doc
  if ! get "$b" get-bucket-policy; then
    fail "$b: no bucket policy (want a Deny of s3:* when aws:SecureTransport is false)"
    return
  fi
  doc="$DOC"
  local why
  if why="$(py '
import json, sys
bucket = sys.argv[1]
policy = json.loads(json.load(sys.stdin)["Policy"])
def lst(x):
    return x if isinstance(x, list) else [x]
for st in lst(policy.get("Statement", [])):
    cond = st.get("Condition") or {}
    flag = [str(v).lower() for op in ("Bool", "BoolIfExists") for v in lst((cond.get(op) or {}).get("aws:SecureTransport", []))]
    principal = st.get("Principal")
    everyone = principal == "*" or (isinstance(principal, dict) and "*" in lst(principal.get("AWS", [])))
    actions = lst(st.get("Action", []))
    res = lst(st.get("Resource", []))
    objects = any(r == "*" or r.endswith(f":s3:::{bucket}/*") for r in res)
    if st.get("Effect") == "Deny" and "false" in flag and everyone and ("s3:*" in actions or "*" in actions) and objects:
        sys.exit(0)
sys.exit("the bucket policy has no Deny of s3:* for everyone with aws:SecureTransport false on the objects")
' "$doc" "$b" 2>&1)"; then ok "$b: policy refuses plain HTTP"; else fail "$b: $why"; fi
}

check_exposure_expiry() {
  local b="$1" doc
  if ! get "$b" get-bucket-lifecycle-configuration; then
    fail "$b: no lifecycle configuration (want $EVENTS_PREFIX/reco_response/ to expire within $MAX_DAYS days)"
    return
  fi
  doc="$DOC"
  local why
  if why="$(py '
import json, sys
prefix, max_days = sys.argv[1], int(sys.argv[2])
rules = json.load(sys.stdin).get("Rules", [])
def rule_prefix(r):
    f = r.get("Filter") or {}
    if "Prefix" in f:
        return f["Prefix"]
    if "And" in f:
        return f["And"].get("Prefix", "")
    return r.get("Prefix", "")
problems = []
for sub in ("reco_response/", "reco_response_errors/"):
    key = f"{prefix}/{sub}"
    hits = [r for r in rules if r.get("Status") == "Enabled" and key.startswith(rule_prefix(r))
            and isinstance((r.get("Expiration") or {}).get("Days"), int) and r["Expiration"]["Days"] <= max_days]
    if not hits:
        problems.append(f"no enabled rule expires {key} within {max_days} days")
    elif not any((r.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays") for r in rules
                 if r.get("Status") == "Enabled" and key.startswith(rule_prefix(r))):
        problems.append(f"{key}: noncurrent versions never expire (versioning keeps the data)")
if problems:
    sys.exit("; ".join(problems))
' "$doc" "$EVENTS_PREFIX" "$MAX_DAYS" 2>&1)"; then
    ok "$b: $EVENTS_PREFIX/reco_response/ (and _errors/) expire within $MAX_DAYS days"
  else
    fail "$b: $why"
  fi
}

check_bucket() {
  local b="$1" events="$2"
  echo "$b:"
  check_encryption "$b"
  check_versioning "$b"
  check_public_access_block "$b"
  check_tls_policy "$b"
  if [ "$events" = yes ]; then check_exposure_expiry "$b"; fi
}

if [ "$EVENTS" = "$REGISTRY" ]; then
  check_bucket "$REGISTRY" yes
else
  check_bucket "$REGISTRY" no
  check_bucket "$EVENTS" yes
fi

if [ "$FAILED" -ne 0 ]; then
  echo "check_buckets.sh: refused - fix the settings above (or deploy with CreateBuckets=true)" >&2
  exit 1
fi
echo "check_buckets.sh: the buckets have the settings the template expects"

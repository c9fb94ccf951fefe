#!/usr/bin/env python3
"""Static checks of infra/ that cfn-lint and promtool do not make.

    python3 infra/tests/check_template.py [--template T] [--rules R] [--rules-test RT ...]
                                          [--prometheus-config P] [--slo S] [--grafana G]
                                          [--metrics-doc M]

The runbook's numbers are restated below (ALERTS, BURN, PLATFORM) independently of
infra/slo.yaml, and every threshold is compared as a number, never as text. Checks that:
  * infra/slo.yaml has the runbook's thresholds, windows, severities and anchors;
  * the SAM template implements every alert as CloudWatch alarm(s) on the metric contract
    of infra/METRICS.md (exact dimension sets, or CloudWatch silently finds no data), with
    the traffic guard (AlarmMinRequests) on ratio and percentile alarms, only GET /recommend
    in the SLO numbers, API Gateway's latency beside the handler's, burn-rate window alarms
    joined by composite alarms, and alarms on Lambda Errors/Throttles, API Gateway 5xx and
    missing drift results; every alarm that notifies uses the SNS topic;
  * a first deploy can succeed: current canary runtime, canary name derived from the stack,
    function timeouts under the HTTP API's 30 s, required AlarmEmail, throttling parameters
    with tighter admin routes, an optional JWT authorizer on /recommend, X-Ray tracing;
  * routes, IAM (least privilege), runtime, log groups, the dashboard;
  * the security review (docs/SECURITY.md): RecommendAuth iam|jwt|public, one explicit role
    per function writing only its own log group, the retrain role's publish-only writes
    and denies, the created buckets' SSE/versioning/public access block/TLS policy/exposure
    expiry, reserved concurrency, retries and the failure queue, log retention for the
    canary and Firehose, the subscription role's pinned trust, no RECS_ADMIN_TOKEN, and a
    reason for every checkov skip;
  * the Prometheus rules are the same alerts with the same numbers, and every alert has a
    promtool test just above its threshold (fires) and just below it (quiet);
  * the Grafana dashboards and the EMF examples of METRICS.md.
Prints every failure and exits 1 if there is any.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_template.py: PyYAML is missing - run `python3 -m pip install pyyaml`")

INFRA = pathlib.Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- contract
NAMESPACE = "MovieRecs"
SERVICE = "movie-recs"
# metric -> the EMF DimensionSets it is published with (infra/METRICS.md)
CONTRACT = {
    "recommend_requests_total": [["service"], ["service", "endpoint"], ["service", "status_class"],
                                 ["service", "endpoint", "status_class"]],
    "recommend_latency_seconds": [["service"], ["service", "endpoint"]],
    "recommend_errors_total": [["service", "error_type"]],
    "model_load_seconds": [["service"]],
    "catalog_block_updates_total": [["service"]],
    "catalog_blocked_items": [["service"]],
    "model_switches_total": [["service"]],
    "data_drift_psi": [["service", "feature"]],
}
ERROR_TYPES = ["model_load", "switch_refused", "model_unavailable", "invalid_input", "invalid_model",
               "not_found", "method_not_allowed", "registry_unavailable", "internal_error"]
DRIFT_FEATURES = ["rating", "events_per_user", "item_popularity", "unknown_user_share",
                  "unknown_item_share", "hour_of_day", "user", "item"]
PROM_METRICS = ["recommend_requests_total", "recommend_latency_seconds_bucket", "recommend_errors_total",
                "model_switches_total", "model_load_seconds", "model_version_info", "data_drift_psi",
                "service_health_status", "service_uptime_seconds", "process_resident_memory_bytes",
                "slo_latency_target_seconds", "slo_availability_target_ratio"]

FUNCTIONS = {"recommend": "RecommendFunction", "health": "HealthFunction",
             "switch": "SwitchFunction", "drift": "DriftFunction", "retrain": "RetrainFunction",
             "batch": "BatchFunction"}
HTTP_FUNCTIONS = ["recommend", "health", "switch"]
RECOMMEND_ROUTE = "GET /recommend/{user_id}"    # the route the latency alarms and dashboard read
# The recommend function's routes: all authorised by the RecommendAuth parameter.
RECOMMEND_ROUTES = [RECOMMEND_ROUTE, "GET /similar/{movie_id}"]
ADMIN_ROUTES = ["GET /switch", "POST /switch", "GET /rollout/status", "POST /rollout/update",
                "GET /experiment/analyze", "POST /experiment/promote", "GET /trace/{request_id}",
                "POST /catalog/block", "POST /catalog/unblock", "GET /catalog/blocked"]
# route key -> (function, authorization); "RecommendAuth" = by the RecommendAuth parameter
# (iam -> AWS_IAM, jwt -> JWT, public -> NONE)
ROUTES = {
    **{k: ("recommend", "RecommendAuth") for k in RECOMMEND_ROUTES},
    "GET /healthz": ("health", "NONE"),
    **{k: ("switch", "AWS_IAM") for k in ADMIN_ROUTES},
}
HTTP_API_LIMIT_S = 30           # API Gateway HTTP API integration timeout
MIN_NODE22_PUPPETEER = 12       # syn-nodejs-puppeteer-12.0 and later run on Node.js 22

AVAILABILITY = 0.999
_REC = {"service": SERVICE, "endpoint": "recommend"}
_REC_5XX = {"service": SERVICE, "endpoint": "recommend", "status_class": "5xx"}
_GW_ROUTE = {"ApiId": {"Ref": "HttpApi"}, "Stage": "$default", "Route": RECOMMEND_ROUTE}
_GW_API = {"ApiId": {"Ref": "HttpApi"}, "Stage": "$default"}

# The runbook's alerts (RUNBOOK.md "Alert Handling", DESIGN.md "Alerts"); windows and `for`
# from the old alert_rules.yml where the runbook is silent.
#   cw:   CloudWatch - kind, statistic, Period x EvaluationPeriods (DatapointsToAlarm),
#         missing-data policy
#   prom: Prometheus - `for`, window, the comparisons the expression must make, in order
ALERTS = {
    "HighLatencyP95": {
        "severity": "warning", "anchor": "high-latency-p95", "op": ">", "threshold": 0.1,
        "cw": {"kind": "latency", "stat": "p95", "period": 60, "evals": 2, "dta": 2, "missing": "notBreaching"},
        "prom": {"for": "2m", "window": "5m", "quantile": 0.95},
    },
    "HighLatencyP99": {
        "severity": "critical", "anchor": "high-latency-p95", "op": ">", "threshold": 0.5,
        "cw": {"kind": "latency", "stat": "p99", "period": 60, "evals": 2, "dta": 2, "missing": "notBreaching"},
        "prom": {"for": "2m", "window": "5m", "quantile": 0.99},
    },
    "HighErrorRate": {
        "severity": "warning", "anchor": "high-error-rate", "op": ">", "threshold": 0.01,
        "cw": {"kind": "ratio", "period": 300, "evals": 1, "dta": 1, "missing": "notBreaching"},
        "prom": {"for": "2m", "window": "5m"},
    },
    "CriticalErrorRate": {
        "severity": "critical", "anchor": "high-error-rate", "op": ">", "threshold": 0.05,
        "cw": {"kind": "ratio", "period": 300, "evals": 1, "dta": 1, "missing": "notBreaching"},
        "prom": {"for": "1m", "window": "5m"},
    },
    "ServiceDown": {
        "severity": "critical", "anchor": "service-down", "op": "<", "threshold": 100,
        "cw": {"kind": "canary", "stat": "Maximum", "period": 60, "evals": 2, "dta": 2, "missing": "breaching"},
        "prom": {"for": "1m"},
    },
    "LowAvailability": {
        "severity": "warning", "anchor": "low-availability", "op": "<", "threshold": AVAILABILITY,
        "cw": {"kind": "availability", "period": 1800, "evals": 1, "dta": 1, "missing": "notBreaching"},
        "prom": {"for": "5m", "window": "30m"},
    },
    "ModelLoadFailure": {
        "severity": "warning", "anchor": "model-load-failure", "op": ">", "threshold": 10,
        "cw": {"kind": "count", "stat": "Sum", "period": 300, "evals": 1, "dta": 1, "missing": "notBreaching",
               "metric": ("recommend_errors_total", {"service": SERVICE, "error_type": "model_load"})},
        "prom": {"for": "2m", "window": "5m"},
    },
    "HighDataDrift": {
        "severity": "warning", "anchor": "high-data-drift", "op": ">", "threshold": 0.2,
        "cw": {"kind": "drift", "stat": "Maximum", "period": 3600, "evals": 1, "dta": 1, "missing": "ignore"},
        "prom": {"for": "5m"},
    },
}
# Multiwindow, multi-burn-rate (Google SRE workbook): (long, short, factor) pairs.
BURN = {
    "AvailabilityBurnRatePage": {"severity": "critical", "anchor": "low-availability",
                                 "pairs": [("1h", 3600, "5m", 300, 14.4), ("6h", 21600, "30m", 1800, 6)]},
    "AvailabilityBurnRateTicket": {"severity": "warning", "anchor": "low-availability",
                                   "pairs": [("1d", 86400, "2h", 7200, 3), ("3d", 259200, "6h", 21600, 1)]},
}
# The platform's own failures, AWS only: name -> (namespace, metric, threshold, op)
PLATFORM = {
    **{f"{short}Lambda{m}": ("AWS/Lambda", m, 0, ">", logical)
       for m in ("Errors", "Throttles")
       for short, logical in (("Recommend", "RecommendFunction"), ("Health", "HealthFunction"),
                              ("Switch", "SwitchFunction"), ("Drift", "DriftFunction"))},
}
PLATFORM_MATH = {"ApiGateway5xx": 0.01, "DriftResultsMissing": 1}

PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d{1,10})?|100)$")


def close(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- helpers
class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation short forms (!Ref, !Sub, !GetAtt, ...)."""


def _cfn_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def text_of(value) -> str:
    """A readable string for a (possibly intrinsic) value: Sub templates keep ${...}."""
    if isinstance(value, dict):
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            return sub[0] if isinstance(sub, list) else sub
        if "Ref" in value:
            return "${%s}" % value["Ref"]
        if "Fn::GetAtt" in value:
            return "${%s}" % ".".join(value["Fn::GetAtt"])
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def as_list(value):
    return value if isinstance(value, list) else [value]


def dims_of(got_dims) -> dict:
    return {d["Name"]: d["Value"] for d in got_dims or []}


# PromQL comparisons with a number on the right: (op, value) in order of appearance.
# Label matchers (=, !=, =~ followed by a string) never match: a number must follow.
_PROM_CMP = re.compile(r"(?<![=!<>~])(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w.])")


def prom_comparisons(expr: str) -> list[tuple[str, float]]:
    return [(op, float(v)) for op, v in _PROM_CMP.findall(expr)]


class Report:
    def __init__(self):
        self.failures: list[str] = []
        self.checked = 0

    def check(self, ok: bool, message: str):
        self.checked += 1
        if not ok:
            self.failures.append(message)
        return ok


# --------------------------------------------------------------------------- slo.yaml
def check_slo(slo: dict, r: Report):
    """infra/slo.yaml holds the runbook's numbers (the generator renders whatever it says)."""
    alerts = slo.get("alerts") or {}
    r.check(close((slo.get("slo") or {}).get("availability"), AVAILABILITY),
            f"slo.yaml: slo.availability {(slo.get('slo') or {}).get('availability')} != {AVAILABILITY}")
    r.check(slo.get("namespace") == NAMESPACE and slo.get("service") == SERVICE,
            f"slo.yaml: namespace/service must be {NAMESPACE}/{SERVICE}")
    for name, spec in ALERTS.items():
        a = alerts.get(name)
        if not r.check(a is not None, f"slo.yaml: runbook alert {name} is missing"):
            continue
        r.check(close(a.get("threshold"), spec["threshold"]),
                f"slo.yaml {name}: threshold {a.get('threshold')} != runbook {spec['threshold']}")
        r.check(a.get("op") == spec["op"], f"slo.yaml {name}: op {a.get('op')!r} != {spec['op']!r}")
        r.check(a.get("severity") == spec["severity"], f"slo.yaml {name}: severity {a.get('severity')!r}")
        r.check(a.get("runbook") == spec["anchor"], f"slo.yaml {name}: runbook anchor {a.get('runbook')!r}")
        r.check(str(a.get("for")) == spec["prom"]["for"], f"slo.yaml {name}: for {a.get('for')!r} != {spec['prom']['for']!r}")
    for name, spec in BURN.items():
        a = alerts.get(name)
        if not r.check(a is not None, f"slo.yaml: burn-rate alert {name} is missing"):
            continue
        got = [(w.get("long"), w.get("short"), float(w.get("factor"))) for w in a.get("windows") or []]
        want = [(lg, sh, float(f)) for lg, _, sh, _, f in spec["pairs"]]
        r.check(got == want, f"slo.yaml {name}: windows {got} != {want}")
        r.check(a.get("severity") == spec["severity"], f"slo.yaml {name}: severity {a.get('severity')!r}")
    r.check(isinstance(slo.get("min_requests"), int) and slo["min_requests"] >= 1,
            "slo.yaml: min_requests must be a positive integer")


# --------------------------------------------------------------------------- template
def check_template(tpl: dict, slo: dict, r: Report):
    r.check(tpl.get("Transform") == "AWS::Serverless-2016-10-31",
            "template: Transform must be AWS::Serverless-2016-10-31")
    res = tpl.get("Resources", {})
    glob = (tpl.get("Globals") or {}).get("Function", {})
    params = tpl.get("Parameters", {})
    conds = tpl.get("Conditions", {})

    def of_type(t):
        return {k: v for k, v in res.items() if v.get("Type") == t}

    # ---- functions: runtime, architecture, code location, tracing, timeouts
    fns = of_type("AWS::Serverless::Function")
    by_name = {}
    for logical, fn in fns.items():
        p = fn.get("Properties", {})
        runtime = p.get("Runtime", glob.get("Runtime"))
        arch = p.get("Architectures", glob.get("Architectures"))
        handler = p.get("Handler", glob.get("Handler"))
        r.check(runtime == "provided.al2023", f"{logical}: Runtime is {runtime!r}, want provided.al2023")
        r.check(arch == ["arm64"], f"{logical}: Architectures is {arch!r}, want [arm64]")
        r.check(handler == "bootstrap", f"{logical}: Handler is {handler!r}, want bootstrap")
        r.check(p.get("Tracing", glob.get("Tracing")) == "Active", f"{logical}: X-Ray Tracing must be Active")
        m = re.fullmatch(r"\.\./target/lambda/([a-z0-9_-]+)/", str(p.get("CodeUri", "")))
        if r.check(bool(m), f"{logical}: CodeUri {p.get('CodeUri')!r} is not ../target/lambda/<name>/ "
                            "(the cargo lambda output, relative to infra/)"):
            by_name[m.group(1)] = logical
        r.check(not [e for e in (p.get("Events") or {}).values() if e.get("Type") in ("HttpApi", "Api")],
                f"{logical}: no SAM HttpApi events - routes are AWS::ApiGatewayV2::Route resources "
                "(API Gateway drops routes created beside an OpenAPI body)")
    r.check(glob.get("Tracing") == "Active", "Globals.Function: Tracing must be Active (X-Ray)")
    r.check(set(by_name) == set(FUNCTIONS),
            f"template: functions {sorted(by_name)} != expected {sorted(FUNCTIONS)}")
    for name in HTTP_FUNCTIONS:
        if name in by_name:
            t = res[by_name[name]]["Properties"].get("Timeout", glob.get("Timeout"))
            r.check(isinstance(t, int) and t < HTTP_API_LIMIT_S,
                    f"{by_name[name]}: Timeout {t!r} must be under the HTTP API's {HTTP_API_LIMIT_S} s "
                    "integration limit (29 s or less)")
    env = ((glob.get("Environment") or {}).get("Variables") or {})
    reg = text_of(env.get("MODEL_REGISTRY", ""))
    r.check(reg.startswith("s3://${") and "${RegistryBucket}" in reg,
            f"Globals: MODEL_REGISTRY must be s3://<bucket>/<prefix> built from parameters, got {reg!r}")

    # ---- HTTP API: one API, the $default stage, throttling, routes, authorizers, permissions
    apis = of_type("AWS::ApiGatewayV2::Api")
    r.check(list(apis) == ["HttpApi"] and apis["HttpApi"]["Properties"].get("ProtocolType") == "HTTP",
            f"template: want exactly one AWS::ApiGatewayV2::Api HttpApi (HTTP), found {sorted(apis)}")
    r.check(not of_type("AWS::Serverless::HttpApi"), "template: no AWS::Serverless::HttpApi (see the routes check)")
    r.check("Body" not in apis.get("HttpApi", {}).get("Properties", {}) and
            "BodyS3Location" not in apis.get("HttpApi", {}).get("Properties", {}),
            "HttpApi: no OpenAPI body (it would delete the Route resources on update)")
    stages = of_type("AWS::ApiGatewayV2::Stage")
    r.check(len(stages) == 1, f"template: want one HTTP API stage, found {sorted(stages)}")
    routes = {v["Properties"].get("RouteKey"): (k, v["Properties"]) for k, v in of_type("AWS::ApiGatewayV2::Route").items()}
    integrations = of_type("AWS::ApiGatewayV2::Integration")
    for logical, st in stages.items():
        sp = st.get("Properties", {})
        r.check(sp.get("StageName") == "$default" and sp.get("AutoDeploy") is True,
                f"{logical}: want the auto-deployed $default stage")
        r.check(sp.get("ApiId") == {"Ref": "HttpApi"}, f"{logical}: ApiId must reference HttpApi")
        d = sp.get("DefaultRouteSettings") or {}
        r.check(d.get("ThrottlingBurstLimit") == {"Ref": "ApiThrottlingBurstLimit"} and
                d.get("ThrottlingRateLimit") == {"Ref": "ApiThrottlingRateLimit"},
                f"{logical}: DefaultRouteSettings throttling must use the ApiThrottling* parameters")
        r.check(d.get("DetailedMetricsEnabled") is True,
                f"{logical}: DefaultRouteSettings.DetailedMetricsEnabled (per-route metrics the latency alarms read)")
        rs = sp.get("RouteSettings") or {}
        for key in ADMIN_ROUTES:
            s = rs.get(key) or {}
            r.check(s.get("ThrottlingBurstLimit") == {"Ref": "AdminThrottlingBurstLimit"} and
                    s.get("ThrottlingRateLimit") == {"Ref": "AdminThrottlingRateLimit"} and
                    s.get("DetailedMetricsEnabled") is True,
                    f"{logical}: RouteSettings[{key!r}] must use the AdminThrottling* parameters "
                    "(and repeat DetailedMetricsEnabled)")
        r.check(set(rs) <= set(routes), f"{logical}: RouteSettings name routes that do not exist: {sorted(set(rs) - set(routes))}")
        deps = set(as_list(st.get("DependsOn", [])))
        need = {routes[k][0] for k in rs if k in routes}
        r.check(need <= deps, f"{logical}: must DependsOn the routes its RouteSettings name {sorted(need - deps)} "
                              "(else the first deploy fails: 'Unable to find Route by key')")
    for kind in ("Burst", "Rate"):
        dflt = (params.get(f"ApiThrottling{kind}Limit") or {}).get("Default")
        admin = (params.get(f"AdminThrottling{kind}Limit") or {}).get("Default")
        r.check(isinstance(dflt, (int, float)) and isinstance(admin, (int, float)) and 0 < admin < dflt,
                f"parameters: AdminThrottling{kind}Limit ({admin}) must be a number below ApiThrottling{kind}Limit ({dflt})")
    r.check(set(routes) == set(ROUTES), f"routes {sorted(map(str, routes))} != {sorted(ROUTES)}")
    fn_of_integration = {}
    for logical, it in integrations.items():
        ip = it["Properties"]
        uri = ip.get("IntegrationUri", {})
        target = (uri.get("Fn::GetAtt") or [None])[0] if isinstance(uri, dict) else None
        fn_of_integration[logical] = target
        r.check(ip.get("IntegrationType") == "AWS_PROXY" and str(ip.get("PayloadFormatVersion")) == "2.0",
                f"{logical}: want a Lambda proxy integration, payload format 2.0 (lambda_http)")
        r.check(int(ip.get("TimeoutInMillis", 30000)) <= HTTP_API_LIMIT_S * 1000, f"{logical}: TimeoutInMillis over 30000")
        r.check(ip.get("ApiId") == {"Ref": "HttpApi"}, f"{logical}: ApiId must reference HttpApi")
    for key, (want_fn, want_auth) in ROUTES.items():
        if key not in routes:
            continue
        logical, rp = routes[key]
        m = re.fullmatch(r"integrations/\$\{(\w+)\}", text_of(rp.get("Target", "")))
        fn = fn_of_integration.get(m.group(1)) if m else None
        r.check(fn == FUNCTIONS[want_fn], f"route {key} goes to {fn}, want {FUNCTIONS[want_fn]}")
        r.check(rp.get("ApiId") == {"Ref": "HttpApi"}, f"{logical}: ApiId must reference HttpApi")
        auth = rp.get("AuthorizationType")
        if want_auth == "RecommendAuth":
            r.check(auth == {"Fn::If": ["RecommendAuthJwt", "JWT", {"Fn::If": ["RecommendAuthIam", "AWS_IAM", "NONE"]}]} and
                    rp.get("AuthorizerId") == {"Fn::If": ["RecommendAuthJwt", {"Ref": "RecommendJwtAuthorizer"},
                                                          {"Ref": "AWS::NoValue"}]},
                    f"route {key}: authorization must follow RecommendAuth: JWT (RecommendJwtAuthorizer) for jwt, "
                    "AWS_IAM for iam, NONE only for public")
        else:
            r.check(auth == want_auth, f"route {key}: AuthorizationType {auth!r}, want {want_auth!r}")
    check_recommend_auth(tpl, r)
    # API Gateway may invoke each HTTP function
    perms = [v["Properties"] for v in of_type("AWS::Lambda::Permission").values()]
    for name in HTTP_FUNCTIONS:
        mine = [p for p in perms if p.get("FunctionName") == {"Ref": FUNCTIONS[name]}]
        r.check(mine and all(p.get("Principal") == "apigateway.amazonaws.com" and
                             ":${HttpApi}/" in text_of(p.get("SourceArn", "")) for p in mine),
                f"{FUNCTIONS[name]}: needs an AWS::Lambda::Permission for apigateway.amazonaws.com on ${{HttpApi}}")

    # ---- drift schedule (and the period DriftResultsMissing counts in)
    schedules = []
    for name, logical in by_name.items():
        for ev in (res[logical].get("Properties", {}).get("Events") or {}).values():
            if ev.get("Type") in ("Schedule", "ScheduleV2"):
                ep = ev.get("Properties", {})
                schedules.append((name, ep.get("Schedule", ep.get("ScheduleExpression"))))
    r.check([x for x in schedules if x[0] == "drift"] ==
            [("drift", {"Fn::FindInMap": ["DriftSchedules", {"Ref": "DriftScheduleHours"}, "Expression"]})],
            f"drift must have one schedule event from the DriftSchedules mapping, got {schedules}")
    # The retrain runs twice a week, as the Python team's job did.
    r.check([x for x in schedules if x[0] == "retrain"] == [("retrain", "cron(0 3 ? * MON,THU *)")],
            f"retrain must have one twice-weekly schedule event, got {schedules}")
    hours_param = params.get("DriftScheduleHours") or {}
    r.check(str(hours_param.get("Default")) == "1", "parameter DriftScheduleHours must default to 1 (hourly)")
    mapping = (tpl.get("Mappings") or {}).get("DriftSchedules") or {}
    r.check(set(map(str, hours_param.get("AllowedValues", []))) == set(mapping),
            "DriftSchedules must have one entry per DriftScheduleHours value")
    for h, row in mapping.items():
        want = "rate(1 hour)" if h == "1" else ("rate(1 day)" if h == "24" else f"rate({h} hours)")
        r.check(row.get("Expression") == want and row.get("Seconds") == int(h) * 3600,
                f"DriftSchedules[{h}]: want {want} and {int(h) * 3600} s, got {row}")

    # ---- IAM: least privilege, one explicit role per function
    check_function_roles(tpl, by_name, r)

    # ---- log groups
    lgs = of_type("AWS::Logs::LogGroup")
    for name, logical in by_name.items():
        want = "/aws/lambda/${%s}" % logical
        match = [lg for lg in lgs.values() if text_of(lg["Properties"].get("LogGroupName")) == want]
        r.check(len(match) == 1 and "RetentionInDays" in match[0]["Properties"],
                f"{logical}: needs a log group {want} with RetentionInDays")

    # ---- alarm subscribers: a required decision, with an explicit opt-out
    email = params.get("AlarmEmail") or {}
    r.check("Default" not in email, "parameter AlarmEmail must have no Default (who gets paged is a decision)")
    r.check(re.fullmatch(str(email.get("AllowedPattern", "x")), "none") is not None and
            re.fullmatch(str(email.get("AllowedPattern", "x")), "") is None,
            "parameter AlarmEmail: AllowedPattern must accept 'none' (opt-out) and refuse ''")
    r.check(conds.get("HasAlarmEmail") == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, "none"]}]},
            "Conditions: HasAlarmEmail must be AlarmEmail != 'none'")
    subs = of_type("AWS::SNS::Subscription")
    r.check(subs and all(s.get("Condition") == "HasAlarmEmail" and s["Properties"].get("Endpoint") == {"Ref": "AlarmEmail"}
                         for s in subs.values()), "the e-mail subscription must use AlarmEmail under HasAlarmEmail")

    # ---- alarms
    topics = list(of_type("AWS::SNS::Topic"))
    r.check(len(topics) == 1, f"template: want one SNS topic for alarm actions, found {topics}")
    topic_ref = {"Ref": topics[0]} if topics else None
    min_req = params.get("AlarmMinRequests") or {}
    r.check(min_req.get("Type") == "Number" and min_req.get("Default") == slo.get("min_requests"),
            f"parameter AlarmMinRequests must be a Number defaulting to slo.yaml min_requests "
            f"({slo.get('min_requests')}), got {min_req.get('Default')!r}")
    metric_alarms, composites = {}, {}
    for typ, into in (("AWS::CloudWatch::Alarm", metric_alarms), ("AWS::CloudWatch::CompositeAlarm", composites)):
        for logical, al in of_type(typ).items():
            p = al.get("Properties", {})
            name = text_of(p.get("AlarmName", ""))
            m = re.fullmatch(r"\$\{AWS::StackName\}-([A-Za-z0-9]+)", name)
            if r.check(bool(m), f"{logical}: AlarmName {name!r} is not ${{AWS::StackName}}-<Alert>"):
                r.check(logical == m.group(1) + "Alarm", f"{logical}: logical id must be {m.group(1)}Alarm")
                into[m.group(1)] = (logical, p)
            r.check("Unit" not in p, f"{logical}: no Unit filter (a unit mismatch makes the alarm see no data)")
    notifying = {n for n, (_, p) in {**metric_alarms, **composites}.items() if p.get("AlarmActions")}
    for n, (logical, p) in {**metric_alarms, **composites}.items():
        if n in notifying:
            r.check(topic_ref in as_list(p.get("AlarmActions", [])) and topic_ref in as_list(p.get("OKActions", [])),
                    f"{logical}: AlarmActions and OKActions must reference the SNS topic {topics}")
    # RetrainFailure and ScheduledJobFailures are hand-written outside the generated block
    # (no slo.yaml entry kind).
    want_notifying = (set(ALERTS) | set(BURN) | set(PLATFORM) | set(PLATFORM_MATH)
                      | {"RetrainFailure", "ScheduledJobFailures"})
    r.check(notifying == want_notifying, f"notifying alarms {sorted(notifying)} != {sorted(want_notifying)} "
                                         "(runbook alerts, burn-rate composites, platform alarms)")
    for alert, spec in ALERTS.items():
        if r.check(alert in metric_alarms, f"no CloudWatch alarm {alert}"):
            check_alarm(alert, spec, *metric_alarms[alert], of_type("AWS::Synthetics::Canary"), r)
    silent = set(metric_alarms) - notifying
    check_burn(metric_alarms, composites, silent, r)
    check_platform(metric_alarms, r)

    # ---- canary behind ServiceDown: current runtime, a name no other stack can take
    canaries = of_type("AWS::Synthetics::Canary")
    r.check(len(canaries) == 1, f"template: want one health canary, found {sorted(canaries)}")
    for logical, c in canaries.items():
        cp = c.get("Properties", {})
        r.check((cp.get("Schedule") or {}).get("Expression") == "rate(1 minute)", f"{logical}: must probe every minute")
        r.check("/healthz" in text_of((cp.get("Code") or {}).get("Script", "")), f"{logical}: must probe GET /healthz")
        r.check(cp.get("RuntimeVersion") == {"Ref": "CanaryRuntimeVersion"},
                f"{logical}: RuntimeVersion must be the CanaryRuntimeVersion parameter")
        rt = str((params.get("CanaryRuntimeVersion") or {}).get("Default", ""))
        m = re.fullmatch(r"syn-nodejs-puppeteer-(\d+)\.(\d+)", rt)
        r.check(bool(m) and int(m.group(1)) >= MIN_NODE22_PUPPETEER,
                f"parameter CanaryRuntimeVersion: default {rt!r} must be syn-nodejs-puppeteer-{MIN_NODE22_PUPPETEER}.0 "
                "or newer (earlier ones run on Node.js 20 or older, deprecated)")
        r.check(canary_name_ok(cp.get("Name"), params),
                f"{logical}: Name must come from the stack (e.g. a prefix + the stack id's last 12 hex digits) or a "
                "parameter without a default, and fit 21 lower-case characters; got {cp.get('Name')!r}")

    # ---- dashboard
    dashes = of_type("AWS::CloudWatch::Dashboard")
    r.check(len(dashes) == 1, "template: want one AWS::CloudWatch::Dashboard")
    for logical, d in dashes.items():
        body = text_of(d["Properties"].get("DashboardBody"))
        try:
            parsed = json.loads(re.sub(r"\$\{[^}]+\}", "X", body))
        except ValueError as e:
            r.check(False, f"{logical}: DashboardBody is not valid JSON ({e})")
            continue
        widgets = parsed.get("widgets", [])
        blob = json.dumps(widgets)
        for needle in ["recommend_requests_total", "recommend_latency_seconds", '"p95"', '"p99"',
                       "IF(total > 0", "data_drift_psi", "SuccessPercent", "switch_refused", "Throttles", "@initDuration"]:
            r.check(needle in blob, f"{logical}: dashboard has no panel using {needle}")
        both = [w for w in widgets if "recommend_latency_seconds" in json.dumps(w)
                and '"AWS/ApiGateway", "Latency"' in json.dumps(w)]
        r.check(bool(both), f"{logical}: one latency widget must show the handler's (EMF) and API Gateway's latency")
        values = {a.get("value") for w in widgets
                  for a in ((w.get("properties") or {}).get("annotations") or {}).get("horizontal", [])}
        for v in (0.1, 0.5, 0.999, 0.01, 0.2, 0.3, 0.5, 14.4, 6, 3, 1):
            r.check(v in values, f"{logical}: dashboard lacks the {v} target/band line")
        listed_raw = set(re.findall(r"\$\{(\w+)Alarm\.Arn\}", body))
        r.check(listed_raw == notifying, f"{logical}: alarm widgets list {sorted(listed_raw)}, want every notifying "
                                         f"alarm {sorted(notifying)}")


# --------------------------------------------------------------------------- IAM
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
# function -> the actions its role may be allowed (kms:* only under HasBucketKmsKey)
ALLOWED_ACTIONS = {
    "recommend": {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"} | XRAY | LOGS,
    "health": {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"} | XRAY | LOGS,
    "switch": {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "kms:Decrypt", "kms:GenerateDataKey"} | XRAY | LOGS,
    "drift": {"s3:GetObject", "s3:ListBucket", "cloudwatch:PutMetricData", "sqs:SendMessage", "kms:Decrypt"} | XRAY | LOGS,
    "retrain": {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "sqs:SendMessage", "kms:Decrypt",
                "kms:GenerateDataKey"} | XRAY | LOGS | {
                # the Spark path (RetrainSparkPolicy, TrainingEngine=emr-serverless): check_spark_path
                "emr-serverless:StartJobRun", "emr-serverless:ListJobRuns", "emr-serverless:GetJobRun",
                "emr-serverless:CancelJobRun",
                "iam:PassRole"},
    "batch": {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "sqs:SendMessage", "kms:Decrypt",
              "kms:GenerateDataKey"} | XRAY | LOGS,
}
_REG = "arn:${AWS::Partition}:s3:::${RegistryBucket}"
RETRAIN_PUTS = [f"{_REG}/${{RegistryPrefix}}/v*/*", f"{_REG}/${{RegistryPrefix}}/.claims/*",
                f"{_REG}/${{RegistryPrefix}}/latest.txt",
                f"{_REG}/${{RegistryPrefix}}/active.json", f"{_REG}/${{RegistryPrefix}}-snapshots/*"]
# The switch function writes the two registry pointers only: active.json and blocked.json.
SWITCH_PUTS = [f"{_REG}/${{RegistryPrefix}}/active.json", f"{_REG}/${{RegistryPrefix}}/blocked.json"]
# The batch function writes its outputs only.
BATCH_PUTS = ["arn:${AWS::Partition}:s3:::${Bucket}/${EventsPrefix}/batch/output/*"]
# The Spark path's writes (RetrainSparkPolicy): the job's script and inputs, and the job record.
_SPARK = f"{_REG}/${{RegistryPrefix}}-spark"
RETRAIN_SPARK_PUTS = [f"{_SPARK}/scripts/*", f"{_SPARK}/runs/*", f"{_REG}/${{RegistryPrefix}}/spark-jobs/*"]
SPARK_BLOCK = ["SparkApplication", "SparkJobRole", "RetrainSparkPolicy", "SparkJobStateRule",
               "SparkJobStatePermission"]
RETRAIN_MUST_DENY = {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutBucketVersioning",
                     "s3:PutLifecycleConfiguration", "s3:PutBucketPolicy"}


def role_statements(res: dict, role: str, r: Report):
    """(statement, condition-or-None) of a role's inline policies and of the AWS::IAM::Policy
    resources attached to it; an Fn::If [cond, statement, AWS::NoValue] yields (statement, cond)."""
    docs = [(p.get("PolicyDocument") or {}) for p in (res[role].get("Properties", {}).get("Policies") or [])]
    docs += [v["Properties"].get("PolicyDocument") or {} for v in res.values()
             if v.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy")
             and ({"Ref": role} in as_list(v["Properties"].get("Roles", [])) or v["Properties"].get("RoleName") == {"Ref": role})]
    out = []
    for d in docs:
        for st in as_list(d.get("Statement", [])):
            if isinstance(st, dict) and "Fn::If" in st:
                cond, yes, no = st["Fn::If"]
                r.check(no == {"Ref": "AWS::NoValue"}, f"{role}: a conditional statement must be Fn::If [cond, statement, AWS::NoValue]")
                out.append((yes, cond))
            else:
                out.append((st, None))
    return out


def check_function_roles(tpl: dict, by_name: dict, r: Report):
    res = tpl.get("Resources", {})
    roles_seen = {}
    for name, logical in by_name.items():
        p = res[logical].get("Properties", {})
        r.check(not p.get("Policies"), f"{logical}: no SAM Policies - SAM's generated role adds "
                                       "AWSLambdaBasicExecutionRole (logs into any log group); use the explicit Role")
        role_ref = p.get("Role") or {}
        role = (role_ref.get("Fn::GetAtt") or [None])[0] if isinstance(role_ref, dict) else None
        if not r.check(role in res and res[role].get("Type") == "AWS::IAM::Role" and role_ref["Fn::GetAtt"][1] == "Arn",
                       f"{logical}: Role must be !GetAtt <an AWS::IAM::Role of this template>.Arn, got {role_ref!r}"):
            continue
        r.check(role not in roles_seen, f"{logical}: shares role {role} with {roles_seen.get(role)} (one role per function)")
        roles_seen[role] = logical
        rp = res[role]["Properties"]
        trust = as_list((rp.get("AssumeRolePolicyDocument") or {}).get("Statement", []))
        r.check(len(trust) == 1 and (trust[0].get("Principal") or {}).get("Service") == "lambda.amazonaws.com"
                and trust[0].get("Action") == "sts:AssumeRole",
                f"{role}: trust only lambda.amazonaws.com (sts:AssumeRole)")
        r.check(not rp.get("ManagedPolicyArns"), f"{role}: no managed policies (inline least-privilege statements only)")
        own_log_group = {"Fn::GetAtt": [logical.replace("Function", "LogGroup"), "Arn"]}
        acts, denies = set(), set()
        for st, cond in role_statements(res, role, r):
            actions = as_list(st.get("Action", []))
            resources = [text_of(x) for x in as_list(st.get("Resource", []))]
            if st.get("Effect") == "Deny":
                r.check(name == "retrain" and cond is None, f"{role}: unexpected Deny statement {st.get('Sid')}")
                denies |= set(actions)
                r.check(sorted(resources) == sorted([_REG, f"{_REG}/*"]),
                        f"{role}: the Deny must cover the registry bucket and its objects, got {resources}")
                continue
            r.check(st.get("Effect") == "Allow", f"{role}: unexpected statement effect {st.get('Effect')}")
            for a in actions:
                acts.add(a)
                r.check("*" not in a, f"{role}: wildcard action {a!r}")
                if a.startswith("kms:"):
                    r.check(cond == "HasBucketKmsKey" and st.get("Resource") == {"Ref": "BucketKmsKeyArn"} and
                            "kms:ViaService" in json.dumps(st.get("Condition")),
                            f"{role}: {a} only under HasBucketKmsKey, on BucketKmsKeyArn, through S3 (kms:ViaService)")
                else:
                    r.check(cond is None, f"{role}: only KMS statements may be conditional, not {a}")
                if "*" in resources and a not in XRAY | {"cloudwatch:PutMetricData"}:
                    r.check(False, f"{role}: {a} on Resource '*' (only X-Ray and namespaced PutMetricData have no resource)")
                if a == "s3:GetObject":
                    r.check(all(x.endswith("/*") and "${RegistryBucket}" in x or "${EventsPrefix}/*" in x
                                or name == "batch" and x.endswith("${EventsPrefix}/batch/input/*")
                                for x in resources),
                            f"{role}: s3:GetObject must be limited to the registry/events prefix, got {resources}")
                if a == "s3:ListBucket":
                    c = (st.get("Condition") or {}).get("StringLike", {}).get("s3:prefix")
                    r.check(bool(c), f"{role}: s3:ListBucket needs an s3:prefix condition")
                if a == "s3:PutObject" and name == "retrain":
                    # New version folders, the two pointers, the snapshots - nothing else.
                    r.check(resources in (RETRAIN_PUTS, RETRAIN_SPARK_PUTS),
                            f"{role}: s3:PutObject must be on {RETRAIN_PUTS} (or, for the Spark path, "
                            f"{RETRAIN_SPARK_PUTS}) only, got {resources}")
                elif a == "s3:PutObject" and name == "batch":
                    r.check(resources == BATCH_PUTS,
                            f"{role}: s3:PutObject must be on {BATCH_PUTS} only, got {resources}")
                elif a == "s3:PutObject":
                    r.check(resources == SWITCH_PUTS,
                            f"{role}: s3:PutObject must be on <prefix>/active.json and <prefix>/blocked.json only, "
                            f"got {resources}")
                if a == "cloudwatch:PutMetricData":
                    ns = (st.get("Condition") or {}).get("StringEquals", {}).get("cloudwatch:namespace")
                    r.check(ns == NAMESPACE, f"{role}: PutMetricData needs condition cloudwatch:namespace={NAMESPACE}")
                if a in LOGS:
                    r.check(st.get("Resource") == own_log_group,
                            f"{role}: {a} only on its own function's log group ({own_log_group}), got {st.get('Resource')}")
                if a == "sqs:SendMessage":
                    r.check(st.get("Resource") == {"Fn::GetAtt": ["ScheduledJobFailureQueue", "Arn"]},
                            f"{role}: sqs:SendMessage only to ScheduledJobFailureQueue")
        r.check(acts <= ALLOWED_ACTIONS[name], f"{role}: actions {sorted(acts - ALLOWED_ACTIONS[name])} not allowed")
        r.check(LOGS <= acts and XRAY <= acts, f"{role}: needs {sorted(LOGS | XRAY)} (own log group, X-Ray)")
        if name == "switch":
            r.check("s3:PutObject" in acts, f"{role}: needs s3:PutObject on active.json and blocked.json")
        if name == "drift":
            r.check("cloudwatch:PutMetricData" in acts, f"{role}: needs cloudwatch:PutMetricData")
        if name == "retrain":
            r.check(RETRAIN_MUST_DENY <= denies,
                    f"{role}: must explicitly deny {sorted(RETRAIN_MUST_DENY - denies)} on the registry bucket")
    # Nobody in the template may create log groups (each one is a resource with retention).
    for k, v in res.items():
        if v.get("Type") in ("AWS::IAM::Role", "AWS::IAM::Policy"):
            r.check("logs:CreateLogGroup" not in json.dumps(v), f"{k}: logs:CreateLogGroup - the template creates every "
                                                               "log group itself, with a retention")


def check_spark_path(tpl: dict, r: Report):
    """TrainingEngine=emr-serverless: every resource of the block only under UseEmrServerless;
    the retrain role may drive only this application's job runs and pass only the job role;
    the job role is trusted only by EMR Serverless of this account and writes only its output
    and logs; a finished job run invokes the retrain function."""
    res, params = tpl.get("Resources", {}), tpl.get("Parameters", {})
    r.check((params.get("TrainingEngine") or {}).get("AllowedValues") == ["lambda", "emr-serverless"]
            and params["TrainingEngine"].get("Default") == "lambda",
            "parameter TrainingEngine: lambda (default) or emr-serverless")
    r.check((tpl.get("Conditions") or {}).get("UseEmrServerless") == {"Fn::Equals": [{"Ref": "TrainingEngine"}, "emr-serverless"]},
            "condition UseEmrServerless: TrainingEngine = emr-serverless")
    for k in SPARK_BLOCK:
        r.check(k in res and res[k].get("Condition") == "UseEmrServerless", f"{k}: must exist, Condition UseEmrServerless")
    if not all(k in res for k in SPARK_BLOCK):
        return
    app = res["SparkApplication"]["Properties"]
    r.check(app.get("Type") == "SPARK" and app.get("Architecture") == "ARM64", "SparkApplication: Type SPARK, ARM64")
    r.check((app.get("AutoStopConfiguration") or {}).get("Enabled") is True and bool(app.get("MaximumCapacity")),
            "SparkApplication: auto-stop on, and a MaximumCapacity (a bound on one retrain's cost)")
    env = ((res["RetrainFunction"]["Properties"].get("Environment") or {}).get("Variables") or {})
    r.check(env.get("RETRAIN_ENGINE") == {"Ref": "TrainingEngine"}, "RetrainFunction: RETRAIN_ENGINE = !Ref TrainingEngine")
    for k in ("EMR_APPLICATION_ID", "EMR_JOB_ROLE_ARN", "EMR_WORK_URI", "RETRAIN_SPARK_ABOVE_ROWS", "EMR_MAX_RUN_MINUTES"):
        v = env.get(k)
        r.check(isinstance(v, dict) and (v.get("Fn::If") or [None])[0] == "UseEmrServerless",
                f"RetrainFunction: {k} only under UseEmrServerless")
    sts = as_list(res["RetrainSparkPolicy"]["Properties"]["PolicyDocument"]["Statement"])
    r.check(res["RetrainSparkPolicy"]["Properties"].get("Roles") == [{"Ref": "RetrainRole"}],
            "RetrainSparkPolicy: attached to RetrainRole only")
    for st in sts:
        acts = as_list(st.get("Action"))
        if any(a.startswith("emr-serverless:") for a in acts):
            rs = [text_of(x) for x in as_list(st.get("Resource"))]
            r.check(all("SparkApplication" in x for x in rs), f"RetrainSparkPolicy: {acts} only on SparkApplication, got {rs}")
        if "iam:PassRole" in acts:
            r.check(st.get("Resource") == {"Fn::GetAtt": ["SparkJobRole", "Arn"]}
                    and ((st.get("Condition") or {}).get("StringEquals") or {}).get("iam:PassedToService")
                    == "emr-serverless.amazonaws.com",
                    "RetrainSparkPolicy: iam:PassRole only of SparkJobRole, only to emr-serverless.amazonaws.com")
    job = res["SparkJobRole"]["Properties"]
    trust = as_list(job["AssumeRolePolicyDocument"]["Statement"])
    r.check(len(trust) == 1 and trust[0].get("Principal") == {"Service": "emr-serverless.amazonaws.com"}
            and ((trust[0].get("Condition") or {}).get("StringEquals") or {}).get("aws:SourceAccount") == {"Ref": "AWS::AccountId"},
            "SparkJobRole: trusted only by emr-serverless.amazonaws.com of this account (aws:SourceAccount)")
    for pol in job.get("Policies") or []:
        for st in as_list(pol["PolicyDocument"]["Statement"]):
            if isinstance(st, dict) and "Fn::If" in st:
                continue
            rs = [text_of(x) for x in as_list(st.get("Resource"))]
            for a in as_list(st.get("Action")):
                r.check(a in {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:DeleteObject"},
                        f"SparkJobRole: unexpected action {a}")
                if a in ("s3:PutObject", "s3:DeleteObject"):
                    r.check(sorted(rs) == sorted([f"{_SPARK}/runs/*/out/*", f"{_SPARK}/runs/*/logs/*"]),
                            f"SparkJobRole: {a} only on runs/*/out/* and runs/*/logs/*, got {rs}")
                if a == "s3:GetObject":
                    r.check(rs == [f"{_SPARK}/*"], f"SparkJobRole: s3:GetObject only under <prefix>-spark/, got {rs}")
    rule = res["SparkJobStateRule"]["Properties"]
    pat = rule.get("EventPattern") or {}
    r.check(pat.get("source") == ["aws.emr-serverless"] and pat.get("detail-type") == ["EMR Serverless Job Run State Change"]
            and sorted((pat.get("detail") or {}).get("state") or []) == ["CANCELLED", "FAILED", "SUCCESS"]
            and (pat.get("detail") or {}).get("applicationId") == [{"Fn::GetAtt": ["SparkApplication", "ApplicationId"]}],
            "SparkJobStateRule: this application's job runs reaching SUCCESS, FAILED or CANCELLED")
    r.check([t.get("Arn") for t in rule.get("Targets") or []] == [{"Fn::GetAtt": ["RetrainFunction", "Arn"]}],
            "SparkJobStateRule: targets the retrain function only")
    # The sample event (events/) is one the rule matches.
    sample = json.loads((INFRA.parent / "events" / "emr-serverless-job-run-state-change.json").read_text())
    r.check([sample.get("source")] == pat.get("source") and [sample.get("detail-type")] == pat.get("detail-type")
            and (sample.get("detail") or {}).get("state") in ((pat.get("detail") or {}).get("state") or []),
            "events/emr-serverless-job-run-state-change.json: not matched by SparkJobStateRule's pattern")
    perm = res["SparkJobStatePermission"]["Properties"]
    r.check(perm.get("Principal") == "events.amazonaws.com"
            and perm.get("SourceArn") == {"Fn::GetAtt": ["SparkJobStateRule", "Arn"]},
            "SparkJobStatePermission: only SparkJobStateRule may invoke the retrain function this way")


def check_recommend_auth(tpl: dict, r: Report):
    """RecommendAuth: iam (default) | jwt | public, the JWT authorizer only in jwt mode, the
    function told the mode (RECOMMEND_AUTH) and the claim (AUTH_USER_CLAIM), public said
    out loud in an Output."""
    res, params, conds = tpl.get("Resources", {}), tpl.get("Parameters", {}), tpl.get("Conditions", {})
    ra = params.get("RecommendAuth") or {}
    r.check(ra.get("Default") == "iam" and sorted(ra.get("AllowedValues", [])) == ["iam", "jwt", "public"],
            "parameter RecommendAuth: AllowedValues iam|jwt|public, Default iam (public must be an explicit opt-in)")
    for mode in ("Jwt", "Iam", "Public"):
        r.check(conds.get(f"RecommendAuth{mode}") == {"Fn::Equals": [{"Ref": "RecommendAuth"}, mode.lower()]},
                f"Conditions: RecommendAuth{mode} must be RecommendAuth == {mode.lower()}")
    for p in ("JwtIssuer", "JwtAudience"):
        r.check((params.get(p) or {}).get("Default") == "", f"parameter {p} must default to '' (only used with jwt)")
    r.check((params.get("AuthUserClaim") or {}).get("Default") == "sub", "parameter AuthUserClaim must default to sub")
    rules = json.dumps(tpl.get("Rules") or {})
    r.check('"RuleCondition": {"Fn::Equals": [{"Ref": "RecommendAuth"}, "jwt"]}' in rules and "JwtAudience" in rules,
            "Rules: RecommendAuth=jwt must assert JwtIssuer and JwtAudience")
    r.check('"RuleCondition": {"Fn::Not": [{"Fn::Equals": [{"Ref": "RecommendAuth"}, "jwt"]}]}' in rules
            and '"Assert": {"Fn::Equals": [{"Ref": "JwtIssuer"}, ""]}' in rules,
            "Rules: JwtIssuer set without RecommendAuth=jwt must fail the deploy (no JWT would be checked)")
    jwt = res.get("RecommendJwtAuthorizer", {})
    jp = jwt.get("Properties", {})
    r.check(jwt.get("Type") == "AWS::ApiGatewayV2::Authorizer" and jwt.get("Condition") == "RecommendAuthJwt" and
            jp.get("AuthorizerType") == "JWT" and (jp.get("JwtConfiguration") or {}).get("Issuer") == {"Ref": "JwtIssuer"}
            and "JwtAudience" in json.dumps((jp.get("JwtConfiguration") or {}).get("Audience")),
            "RecommendJwtAuthorizer: a JWT authorizer on JwtIssuer/JwtAudience with Condition RecommendAuthJwt")
    env = (((res.get("RecommendFunction") or {}).get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
    r.check(env.get("RECOMMEND_AUTH") == {"Ref": "RecommendAuth"},
            "RecommendFunction: RECOMMEND_AUTH must be the RecommendAuth parameter (iam|jwt|public)")
    r.check(env.get("AUTH_USER_CLAIM") == {"Fn::If": ["RecommendAuthJwt", {"Ref": "AuthUserClaim"}, {"Ref": "AWS::NoValue"}]},
            "RecommendFunction: AUTH_USER_CLAIM must be the AuthUserClaim parameter in jwt mode")
    outs = tpl.get("Outputs") or {}
    public_out = [o for o in outs.values() if o.get("Condition") == "RecommendAuthPublic"]
    r.check(bool(public_out) and "no authorizer" in json.dumps(public_out).lower(),
            "Outputs: RecommendAuth=public must be said in an Output (Condition RecommendAuthPublic)")
    r.check("RecommendAuthPublic" in json.dumps((outs.get("RecommendAuthorization") or {}).get("Value"))
            or "RecommendAuthIam" in json.dumps((outs.get("RecommendAuthorization") or {}).get("Value")),
            "Outputs: RecommendAuthorization must say which mode is deployed")


def canary_name_ok(name, params) -> bool:
    """A Join of a lower-case prefix and the stack id's last UUID group, or a parameter with no default."""
    if isinstance(name, dict) and "Ref" in name:
        p = params.get(name["Ref"]) or {}
        return "Default" not in p and "{1,21}" in str(p.get("AllowedPattern", ""))
    if not (isinstance(name, dict) and "Fn::Join" in name):
        return False
    sep, parts = name["Fn::Join"]
    uuid_tail = {"Fn::Select": [4, {"Fn::Split": ["-", {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}]}]}
    if sep != "" or len(parts) != 2 or parts[1] != uuid_tail or not isinstance(parts[0], str):
        return False
    return re.fullmatch(r"[0-9a-z_-]+", parts[0]) is not None and len(parts[0]) + 12 <= 21


def _queries(p):
    metrics = p.get("Metrics") or []
    return ({m["Id"]: m for m in metrics if "MetricStat" in m},
            [m for m in metrics if "Expression" in m], [m for m in metrics if m.get("ReturnData", True)])


def check_math(where, p, want: dict, period, r: Report, guard=True):
    """A metric-math alarm: want = {id: (namespace, metric, dims, stat)}; one returned expression using all ids."""
    queries, exprs, returned = _queries(p)
    r.check(bool(p.get("Metrics")) and "MetricName" not in p, f"{where}: want a metric-math alarm (Metrics)")
    r.check(len(exprs) == 1 and returned == exprs, f"{where}: want exactly one expression with ReturnData true")
    r.check(set(queries) == set(want), f"{where}: metric ids {sorted(queries)} != {sorted(want)}")
    for qid, (ns, metric, dims, stat) in want.items():
        q = queries.get(qid)
        if not q:
            continue
        ms = q["MetricStat"]
        r.check(ms["Metric"].get("Namespace") == ns and ms["Metric"].get("MetricName") == metric,
                f"{where}.{qid}: want {ns}/{metric}, got {ms['Metric'].get('Namespace')}/{ms['Metric'].get('MetricName')}")
        got = dims_of(ms["Metric"].get("Dimensions"))
        r.check(got == dims, f"{where}.{qid}: dimensions {got} != {dims}")
        if ns == NAMESPACE and metric in CONTRACT:
            r.check(sorted(got) in [sorted(s) for s in CONTRACT[metric]],
                    f"{where}.{qid}: dimension set {sorted(got)} is not one {metric} is published with "
                    f"({CONTRACT[metric]}) - CloudWatch would find no data")
        r.check(ms.get("Period") == period, f"{where}.{qid}: Period {ms.get('Period')} != {period}")
        r.check(ms.get("Stat") == stat, f"{where}.{qid}: Stat {ms.get('Stat')} != {stat}")
    if not exprs:
        return ""
    expr = text_of(exprs[0]["Expression"])
    # ids start with a lower-case letter; functions (IF, FILL, MAX) are upper case
    used = set(re.findall(r"\b([a-z][A-Za-z0-9_]*)\b", expr))
    r.check(used <= set(queries), f"{where}: expression uses unknown ids {sorted(used - set(queries))}")
    r.check(used >= set(queries), f"{where}: expression ignores {sorted(set(queries) - used)}")
    if guard:
        r.check(expr.startswith("IF(") and ">= ${AlarmMinRequests}" in expr and
                isinstance(exprs[0]["Expression"], dict) and "Fn::Sub" in exprs[0]["Expression"],
                f"{where}: expression must start IF(<requests> >= ${{AlarmMinRequests}}, ...) (the traffic guard), got {expr!r}")
    return expr


def check_evaluation(where, p, cw, threshold, op, r: Report):
    ops = {">": "GreaterThanThreshold", "<": "LessThanThreshold"}
    r.check(close(p.get("Threshold"), threshold), f"{where}: Threshold {p.get('Threshold')} != {threshold}")
    r.check(p.get("ComparisonOperator") == ops[op], f"{where}: ComparisonOperator {p.get('ComparisonOperator')} != {ops[op]}")
    r.check(p.get("EvaluationPeriods") == cw["evals"], f"{where}: EvaluationPeriods {p.get('EvaluationPeriods')} != {cw['evals']}")
    r.check(p.get("DatapointsToAlarm", p.get("EvaluationPeriods")) == cw["dta"],
            f"{where}: DatapointsToAlarm {p.get('DatapointsToAlarm')} != {cw['dta']}")
    r.check(p.get("TreatMissingData") == cw["missing"], f"{where}: TreatMissingData {p.get('TreatMissingData')} != {cw['missing']}")


def ratio_queries():
    return {"requests": (NAMESPACE, "recommend_requests_total", _REC, "Sum"),
            "errors": (NAMESPACE, "recommend_requests_total", _REC_5XX, "Sum")}


def check_alarm(alert, spec, logical, p, canaries, r: Report):
    cw = spec["cw"]
    where = f"{logical} ({alert})"
    check_evaluation(where, p, cw, spec["threshold"], spec["op"], r)
    r.check(f"#{spec['anchor']}" in text_of(p.get("AlarmDescription", "")) and
            f"[{spec['severity']}]" in text_of(p.get("AlarmDescription", "")),
            f"{where}: AlarmDescription needs [{spec['severity']}] and the runbook link #{spec['anchor']}")
    k = cw["kind"]
    if k == "latency":
        stat = cw["stat"]
        r.check(bool(PERCENTILE.match(stat)), f"{where}: {stat!r} is not a valid percentile")
        expr = check_math(where, p, {
            "requests": (NAMESPACE, "recommend_requests_total", _REC, "Sum"),
            "gwrequests": ("AWS/ApiGateway", "Count", _GW_ROUTE, "Sum"),
            "handler": (NAMESPACE, "recommend_latency_seconds", _REC, stat),
            "gateway": ("AWS/ApiGateway", "Latency", _GW_ROUTE, stat),   # milliseconds
        }, cw["period"], r)
        r.check("gateway, 0) / 1000" in expr, f"{where}: API Gateway Latency is in ms: divide it by 1000 ({expr!r})")
    elif k in ("ratio", "availability"):
        expr = check_math(where, p, ratio_queries(), cw["period"], r)
        body = "1 - FILL(errors, 0) / requests, 1)" if k == "availability" else "FILL(errors, 0) / requests, 0)"
        r.check(expr.endswith(body), f"{where}: expression must end with {body!r}: {expr!r}")
    elif k == "drift":
        expr = check_math(where, p, {f"psi_{f}": (NAMESPACE, "data_drift_psi", {"service": SERVICE, "feature": f}, cw["stat"])
                                     for f in DRIFT_FEATURES}, cw["period"], r, guard=False)
        r.check(expr.startswith("MAX(["), f"{where}: want the MAX over the features, got {expr!r}")
    elif k == "canary":
        r.check(p.get("Period") == cw["period"], f"{where}: Period {p.get('Period')} != {cw['period']}")
        r.check(p.get("Namespace") == "CloudWatchSynthetics" and p.get("MetricName") == "SuccessPercent",
                f"{where}: want CloudWatchSynthetics/SuccessPercent")
        dims = p.get("Dimensions") or []
        r.check(len(dims) == 1 and dims[0]["Name"] == "CanaryName" and
                dims[0]["Value"] in [{"Ref": c} for c in canaries],
                f"{where}: must watch the health canary (CanaryName = Ref of the canary)")
        r.check(p.get("Statistic") == cw["stat"], f"{where}: Statistic {p.get('Statistic')} != {cw['stat']}")
    elif k == "count":
        metric, dims = cw["metric"]
        r.check(p.get("Period") == cw["period"], f"{where}: Period {p.get('Period')} != {cw['period']}")
        r.check(p.get("Namespace") == NAMESPACE and p.get("MetricName") == metric, f"{where}: want {NAMESPACE}/{metric}")
        got = dims_of(p.get("Dimensions"))
        # model_load only: a refused /switch (error_type switch_refused) is not a load failure
        r.check(got == dims, f"{where}: dimensions {got} != {dims}")
        r.check(p.get("Statistic") == cw["stat"], f"{where}: Statistic {p.get('Statistic')} != {cw['stat']}")


def check_burn(metric_alarms, composites, silent, r: Report):
    """Each pair = two window alarms (no actions of their own) ANDed in the composite's rule."""
    used = set()
    for name, spec in BURN.items():
        if not r.check(name in composites, f"no composite alarm {name}"):
            continue
        logical, p = composites[name]
        rule = text_of(p.get("AlarmRule", ""))
        r.check(f"[{spec['severity']}]" in text_of(p.get("AlarmDescription", "")) and
                f"#{spec['anchor']}" in text_of(p.get("AlarmDescription", "")),
                f"{logical}: AlarmDescription needs [{spec['severity']}] and #{spec['anchor']}")
        pairs = re.findall(r'\(ALARM\("\$\{(\w+)Alarm\}"\) AND ALARM\("\$\{(\w+)Alarm\}"\)\)', rule)
        r.check(" OR ".join(f'(ALARM("${{{a}Alarm}}") AND ALARM("${{{b}Alarm}}"))' for a, b in pairs) == rule,
                f"{logical}: AlarmRule must be (ALARM(long) AND ALARM(short)) OR ...: {rule!r}")
        r.check(len(pairs) == len(spec["pairs"]), f"{logical}: {len(pairs)} window pairs, want {len(spec['pairs'])}")
        for (a, b), (lname, lsec, sname, ssec, factor) in zip(pairs, spec["pairs"]):
            thr = round(factor * (1 - AVAILABILITY), 12)
            for wname, secs in ((a, lsec), (b, ssec)):
                used.add(wname)
                if not r.check(wname in metric_alarms, f"{logical}: AlarmRule names unknown alarm {wname}"):
                    continue
                wl, wp = metric_alarms[wname]
                where = f"{wl} ({name} {factor}x)"
                check_evaluation(where, wp, {"evals": 1, "dta": 1, "missing": "notBreaching"}, thr, ">", r)
                expr = check_math(where, wp, ratio_queries(), secs, r)
                r.check(expr.endswith("FILL(errors, 0) / requests, 0)"), f"{where}: want the 5xx ratio, got {expr!r}")
                r.check(not wp.get("AlarmActions") and not wp.get("OKActions"),
                        f"{where}: window alarms notify through {name} only")
            r.check(a.endswith(lname) and b.endswith(sname), f"{logical}: pair ({a}, {b}) is not the {lname}/{sname} windows")
    # RetrainNowDrift acts through an EventBridge rule (it starts the retrain), not SNS.
    used = used | {"RetrainNowDrift"}
    r.check(silent == used, f"alarms without actions {sorted(silent)} must be exactly the burn-rate windows {sorted(used)}")


def check_platform(metric_alarms, r: Report):
    for name, (ns, metric, thr, op, fn) in PLATFORM.items():
        if not r.check(name in metric_alarms, f"no platform alarm {name} ({ns} {metric} of {fn})"):
            continue
        logical, p = metric_alarms[name]
        check_evaluation(logical, p, {"evals": 1, "dta": 1, "missing": "notBreaching"}, thr, op, r)
        r.check(p.get("Namespace") == ns and p.get("MetricName") == metric and p.get("Statistic") == "Sum" and
                dims_of(p.get("Dimensions")) == {"FunctionName": {"Ref": fn}},
                f"{logical}: want {ns}/{metric} Sum of FunctionName={fn}")
    if "ApiGateway5xx" in metric_alarms:
        logical, p = metric_alarms["ApiGateway5xx"]
        check_evaluation(logical, p, {"evals": 1, "dta": 1, "missing": "notBreaching"}, PLATFORM_MATH["ApiGateway5xx"], ">", r)
        check_math(logical, p, {"requests": ("AWS/ApiGateway", "Count", _GW_API, "Sum"),
                                "errors": ("AWS/ApiGateway", "5xx", _GW_API, "Sum")}, 300, r)
    else:
        r.check(False, "no ApiGateway5xx alarm (AWS/ApiGateway 5xx of the HTTP API)")
    if "DriftResultsMissing" in metric_alarms:
        logical, p = metric_alarms["DriftResultsMissing"]
        # missing data breaches: no PSI for two schedule periods = the job stopped
        check_evaluation(logical, p, {"evals": 2, "dta": 2, "missing": "breaching"}, PLATFORM_MATH["DriftResultsMissing"], "<", r)
        period = {"Fn::FindInMap": ["DriftSchedules", {"Ref": "DriftScheduleHours"}, "Seconds"]}
        expr = check_math(logical, p, {f"n_{f}": (NAMESPACE, "data_drift_psi", {"service": SERVICE, "feature": f}, "SampleCount")
                                       for f in DRIFT_FEATURES}, period, r, guard=False)
        r.check(expr.startswith("MAX(["), f"{logical}: want the MAX over the features, got {expr!r}")
    else:
        r.check(False, "no DriftResultsMissing alarm (drift job produced no PSI)")


def check_exposure_log(tpl: dict, r: Report):
    """The exposure log on AWS: recommend prints reco_response lines, a subscription on
    its log group sends them to Firehose, Firehose writes the local layout to S3."""
    res = tpl.get("Resources", {})
    env = lambda fn: (((res.get(fn, {}).get("Properties") or {}).get("Environment") or {}).get("Variables") or {})
    r.check(env("RecommendFunction").get("EXPOSURE_LOG") == "stdout",
            "RecommendFunction: EXPOSURE_LOG must be stdout (one reco_response log line per response)")
    r.check("EVENTS" in env("SwitchFunction"),
            "SwitchFunction: EVENTS must name the events location (/experiment/* read it)")
    subs = [v.get("Properties", {}) for v in res.values() if v.get("Type") == "AWS::Logs::SubscriptionFilter"]
    streams = {k: v.get("Properties", {}) for k, v in res.items()
               if v.get("Type") == "AWS::KinesisFirehose::DeliveryStream"}
    sub = next((p for p in subs if p.get("LogGroupName") == {"Ref": "RecommendLogGroup"}), None)
    if not r.check(sub is not None, "no subscription filter on RecommendLogGroup (the exposure log)"):
        return
    r.check('$.event = "reco_response"' in str(sub.get("FilterPattern")),
            f"exposure subscription: FilterPattern {sub.get('FilterPattern')!r} must select reco_response lines")
    dest = sub.get("DestinationArn") or {}
    target = (dest.get("Fn::GetAtt") or [None])[0] if isinstance(dest, dict) else None
    if not r.check(target in streams, f"exposure subscription: DestinationArn {dest!r} is not a Firehose stream of this template"):
        return
    s3 = streams[target].get("ExtendedS3DestinationConfiguration") or {}
    prefix = text_of(s3.get("Prefix", ""))
    r.check("/reco_response/!{timestamp:yyyy-MM-dd}/" in prefix,
            f"{target}: Prefix {prefix!r} must be <events>/reco_response/!{{timestamp:yyyy-MM-dd}}/... (the drift/experiment layout)")
    r.check(s3.get("FileExtension") == ".jsonl" and s3.get("CompressionFormat") == "UNCOMPRESSED",
            f"{target}: want uncompressed .jsonl objects (what the events readers parse)")
    kinds = [p.get("Type") for p in ((s3.get("ProcessingConfiguration") or {}).get("Processors") or [])]
    r.check(kinds[:2] == ["Decompression", "CloudWatchLogProcessing"],
            f"{target}: processors {kinds} must decompress the CloudWatch Logs envelope and extract the messages")


# --------------------------------------------------------------------------- security review
BUCKET_PAB = {"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"}


def denies_plain_http(policy_doc: dict, bucket: str) -> bool:
    """A Deny of s3:* for everyone when aws:SecureTransport is false, on the bucket and its objects."""
    for st in as_list((policy_doc or {}).get("Statement", [])):
        cond = ((st.get("Condition") or {}).get("Bool") or {}).get("aws:SecureTransport")
        res = json.dumps(st.get("Resource"))
        if (st.get("Effect") == "Deny" and st.get("Principal") == "*" and st.get("Action") in ("s3:*", ["s3:*"])
                and str(cond).lower() == "false" and bucket in res and "/*" in res):
            return True
    return False


def check_data_stores(tpl: dict, r: Report):
    """The registry and events buckets: created here (CreateBuckets=true) with SSE (S3 or the
    KMS key parameter), versioning, the whole public access block, a TLS-only policy and
    the exposure log's expiry; or existing ones (false), which infra/check_buckets.sh checks."""
    res, params, conds = tpl.get("Resources", {}), tpl.get("Parameters", {}), tpl.get("Conditions", {})
    cb = params.get("CreateBuckets") or {}
    r.check(cb.get("Default") == "true" and sorted(cb.get("AllowedValues", [])) == ["false", "true"],
            "parameter CreateBuckets: 'true' (default) | 'false'")
    r.check(conds.get("CreateBuckets") == {"Fn::Equals": [{"Ref": "CreateBuckets"}, "true"]},
            "Conditions: CreateBuckets must be CreateBuckets == 'true'")
    r.check(conds.get("HasBucketKmsKey") == {"Fn::Not": [{"Fn::Equals": [{"Ref": "BucketKmsKeyArn"}, ""]}]} and
            (params.get("BucketKmsKeyArn") or {}).get("Default") == "",
            "BucketKmsKeyArn: default '' (SSE-S3), HasBucketKmsKey = BucketKmsKeyArn != ''")
    exp = params.get("ExposureLogExpirationDays") or {}
    r.check(exp.get("Type") == "Number" and exp.get("Default") == 90,
            "parameter ExposureLogExpirationDays: a Number, default 90")
    r.check((INFRA / "check_buckets.sh").exists(), "infra/check_buckets.sh (the CreateBuckets=false pre-deploy check) is missing")
    want = {"RegistryDataBucket": ("CreateBuckets", {"Ref": "RegistryBucket"}, "EventsInRegistryBucket"),
            "EventsDataBucket": ("CreateEventsBucket", {"Ref": "EventsBucket"}, None)}
    for logical, (cond, name, exposure_cond) in want.items():
        b = res.get(logical) or {}
        bp = b.get("Properties") or {}
        if not r.check(b.get("Type") == "AWS::S3::Bucket" and b.get("Condition") == cond,
                       f"{logical}: an AWS::S3::Bucket under Condition {cond}"):
            continue
        r.check(bp.get("BucketName") == name, f"{logical}: BucketName must be {name} (the name every reference uses)")
        r.check(b.get("DeletionPolicy") == "Retain" and b.get("UpdateReplacePolicy") == "Retain",
                f"{logical}: DeletionPolicy and UpdateReplacePolicy Retain (models and events outlive a stack)")
        sse = ((bp.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration") or [{}])[0]
        d = sse.get("ServerSideEncryptionByDefault") or {}
        r.check(d.get("SSEAlgorithm") == {"Fn::If": ["HasBucketKmsKey", "aws:kms", "AES256"]} and
                d.get("KMSMasterKeyID") == {"Fn::If": ["HasBucketKmsKey", {"Ref": "BucketKmsKeyArn"}, {"Ref": "AWS::NoValue"}]},
                f"{logical}: default encryption SSE-S3, or SSE-KMS with BucketKmsKeyArn")
        r.check((bp.get("VersioningConfiguration") or {}).get("Status") == "Enabled", f"{logical}: versioning Enabled")
        pab = bp.get("PublicAccessBlockConfiguration") or {}
        r.check(all(pab.get(k) is True for k in BUCKET_PAB), f"{logical}: all four public access block settings true")
        r.check(((bp.get("OwnershipControls") or {}).get("Rules") or [{}])[0].get("ObjectOwnership") == "BucketOwnerEnforced",
                f"{logical}: ObjectOwnership BucketOwnerEnforced (no ACLs)")
        pols = [v["Properties"] for v in res.values() if v.get("Type") == "AWS::S3::BucketPolicy"
                and v["Properties"].get("Bucket") == {"Ref": logical}]
        r.check(len(pols) == 1 and denies_plain_http(pols[0].get("PolicyDocument"), logical),
                f"{logical}: a bucket policy denying s3:* when aws:SecureTransport is false")
        rules = []
        for rule in (bp.get("LifecycleConfiguration") or {}).get("Rules") or []:
            if isinstance(rule, dict) and "Fn::If" in rule:
                c, yes, _ = rule["Fn::If"]
                rules.append((yes, c))
            else:
                rules.append((rule, None))
        for sub in ("reco_response/", "reco_response_errors/"):
            hit = [(rule, c) for rule, c in rules if text_of(rule.get("Prefix", "")) == "${EventsPrefix}/" + sub]
            r.check(len(hit) == 1 and hit[0][1] == exposure_cond and hit[0][0].get("Status") == "Enabled" and
                    hit[0][0].get("ExpirationInDays") == {"Ref": "ExposureLogExpirationDays"} and
                    "NoncurrentDays" in json.dumps(hit[0][0].get("NoncurrentVersionExpiration")),
                    f"{logical}: a lifecycle rule expiring <EventsPrefix>/{sub} after ExposureLogExpirationDays "
                    f"(and its noncurrent versions){' when the events live here' if exposure_cond else ''}")
    # Every bucket of the template refuses plain HTTP and public access.
    for logical, b in res.items():
        if b.get("Type") == "AWS::S3::Bucket":
            pab = (b.get("Properties") or {}).get("PublicAccessBlockConfiguration") or {}
            r.check(all(pab.get(k) is True for k in BUCKET_PAB), f"{logical}: all four public access block settings")
            r.check(any(denies_plain_http(v["Properties"].get("PolicyDocument"), logical) for v in res.values()
                        if v.get("Type") == "AWS::S3::BucketPolicy" and v["Properties"].get("Bucket") == {"Ref": logical}),
                    f"{logical}: needs a bucket policy denying non-TLS access")
    # Firehose writes into the created bucket after it exists (Fn::GetAtt in its BucketARN).
    fh = json.dumps(((res.get("ExposureDeliveryStream") or {}).get("Properties") or {}).get("ExtendedS3DestinationConfiguration", {}).get("BucketARN"))
    r.check("RegistryDataBucket" in fh and "EventsDataBucket" in fh,
            "ExposureDeliveryStream: BucketARN must reference the created buckets (so the stream waits for them)")


def check_concurrency_and_retries(tpl: dict, r: Report):
    """Reserved concurrency for switch (>= 2, a parameter) and retrain (1); scheduled
    functions retry at most once and send failures to an encrypted queue with a retention."""
    res, params = tpl.get("Resources", {}), tpl.get("Parameters", {})
    sp = params.get("SwitchReservedConcurrency") or {}
    r.check(sp.get("Type") == "Number" and isinstance(sp.get("Default"), int) and sp["Default"] >= 2
            and isinstance(sp.get("MinValue"), int) and sp["MinValue"] >= 2,
            "parameter SwitchReservedConcurrency: a Number, Default and MinValue >= 2")
    fp = lambda fn: (res.get(fn) or {}).get("Properties") or {}
    r.check(fp("SwitchFunction").get("ReservedConcurrentExecutions") == {"Ref": "SwitchReservedConcurrency"},
            "SwitchFunction: ReservedConcurrentExecutions must be the SwitchReservedConcurrency parameter")
    r.check(fp("RetrainFunction").get("ReservedConcurrentExecutions") == 1,
            "RetrainFunction: ReservedConcurrentExecutions must be 1 (two runs would race for the next version)")
    queues = {k: v for k, v in res.items() if v.get("Type") == "AWS::SQS::Queue"}
    for logical, fn in res.items():
        if fn.get("Type") != "AWS::Serverless::Function":
            continue
        events = [e for e in (fn.get("Properties", {}).get("Events") or {}).values()
                  if e.get("Type") in ("Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent")]
        if not events:
            continue
        eic = fn["Properties"].get("EventInvokeConfig") or {}
        retries = eic.get("MaximumRetryAttempts")
        r.check(isinstance(retries, int) and 0 <= retries <= 1,
                f"{logical}: scheduled - EventInvokeConfig.MaximumRetryAttempts must be 0 or 1, got {retries!r}")
        dest = ((eic.get("DestinationConfig") or {}).get("OnFailure") or {})
        target = (dest.get("Destination") or {}).get("Fn::GetAtt", [None])[0] if isinstance(dest.get("Destination"), dict) else None
        r.check(dest.get("Type") == "SQS" and target in queues,
                f"{logical}: scheduled - EventInvokeConfig needs an OnFailure SQS destination created by this template")
    for logical, q in queues.items():
        qp = q.get("Properties") or {}
        r.check(bool(qp.get("KmsMasterKeyId")) or qp.get("SqsManagedSseEnabled") is True, f"{logical}: must be encrypted")
        r.check(isinstance(qp.get("MessageRetentionPeriod"), int) and qp["MessageRetentionPeriod"] >= 86400,
                f"{logical}: needs an explicit MessageRetentionPeriod (days, not the 4-day default by accident)")
        qpol = [v["Properties"].get("PolicyDocument") or {} for v in res.values() if v.get("Type") == "AWS::SQS::QueuePolicy"
                and {"Ref": logical} in as_list(v["Properties"].get("Queues", []))]
        r.check(any(st.get("Effect") == "Deny" and str(((st.get("Condition") or {}).get("Bool") or {})
                                                      .get("aws:SecureTransport")).lower() == "false"
                    for d in qpol for st in as_list(d.get("Statement", []))),
                f"{logical}: needs a queue policy denying non-TLS access")


def check_logging(tpl: dict, r: Report):
    """Retention everywhere logs land: the canary's log group, Firehose's error log, and the
    subscription role trusted only for the recommend function's log group."""
    res = tpl.get("Resources", {})
    lgs = {k: v.get("Properties", {}) for k, v in res.items() if v.get("Type") == "AWS::Logs::LogGroup"}
    for k, lg in lgs.items():
        r.check(lg.get("RetentionInDays") == {"Ref": "LogRetentionDays"}, f"{k}: RetentionInDays must be LogRetentionDays")
    canaries = [k for k, v in res.items() if v.get("Type") == "AWS::Synthetics::Canary"]
    for c in canaries:
        want = "/aws/lambda/cwsyn-${%s}-${%s.Id}" % (c, c)
        r.check(any(text_of(lg.get("LogGroupName")) == want for lg in lgs.values()),
                f"{c}: needs its log group {want} (with a retention) created by the template")
    for k, v in res.items():
        if v.get("Type") == "AWS::KinesisFirehose::DeliveryStream":
            cw = (v["Properties"].get("ExtendedS3DestinationConfiguration") or {}).get("CloudWatchLoggingOptions") or {}
            lg = (cw.get("LogGroupName") or {}).get("Ref") if isinstance(cw.get("LogGroupName"), dict) else None
            r.check(cw.get("Enabled") is True and lg in lgs, f"{k}: CloudWatchLoggingOptions into a log group of this template")
    sub = (res.get("ExposureSubscriptionRole") or {}).get("Properties") or {}
    trust = as_list((sub.get("AssumeRolePolicyDocument") or {}).get("Statement", [{}]))
    src = [text_of(x) for x in as_list(((trust[0].get("Condition") or {}).get("StringLike") or {}).get("aws:SourceArn", []))]
    r.check(bool(src) and all(x.split(":log-group:")[-1].startswith("/aws/lambda/${RecommendFunction}") for x in src),
            f"ExposureSubscriptionRole: trust must be pinned to the recommend log group (aws:SourceArn), got {src}")


def check_checkov_skips(tpl: dict, r: Report):
    """Every checkov skip in the template names a check and gives a real reason."""
    n = 0
    for k, v in (tpl.get("Resources") or {}).items():
        for sk in (((v.get("Metadata") or {}).get("checkov") or {}).get("skip") or []):
            n += 1
            r.check(re.fullmatch(r"CKV2?_AWS_\d+", str(sk.get("id", ""))) is not None and len(str(sk.get("comment", ""))) >= 60,
                    f"{k}: checkov skip {sk!r} needs an id (CKV_AWS_n) and a comment giving the reason")
    r.check(n > 0, "template: no checkov skips found (Metadata: checkov: skip:) - parser broken?")


# --------------------------------------------------------------------------- prometheus
def check_prometheus(rules_doc: dict, test_docs: dict, prom_cfg: dict, slo: dict, r: Report):
    rules, records = {}, {}
    for g in rules_doc.get("groups", []):
        for rule in g.get("rules", []):
            if "alert" in rule:
                r.check(rule["alert"] not in rules, f"alert_rules.yml: {rule['alert']} defined twice")
                rules[rule["alert"]] = rule
            elif "record" in rule:
                records[rule["record"]] = " ".join(rule["expr"].split())
    want = set(ALERTS) | set(BURN)
    r.check(set(rules) == want, f"alert_rules.yml: alerts {sorted(rules)} != {sorted(want)}")
    n = slo.get("min_requests")

    # recording rules: GET /recommend only, 5xx over all
    by_version = {
        "movie_recs:by_version:requests_rate5m":
            'sum by (version, variant, status) (rate(recommend_requests_total{endpoint="recommend",version!=""}[5m]))',
        "movie_recs:by_version:latency_p95_5m":
            'histogram_quantile(0.95, sum by (le, version) '
            '(rate(recommend_latency_seconds_bucket{endpoint="recommend",version!=""}[5m])))',
    }
    for rec, want_expr in by_version.items():
        r.check(records.get(rec) == want_expr, f"alert_rules.yml {rec}: want {want_expr}, have {records.get(rec)}")
    for rec, expr in records.items():
        if rec in by_version:
            continue
        m = re.fullmatch(r"movie_recs:slo_(errors_per_request:ratio_rate|requests:increase)(\w+)", rec)
        if not r.check(bool(m), f"alert_rules.yml: unexpected recording rule {rec}"):
            continue
        w = m.group(2)
        if m.group(1).startswith("errors"):
            r.check(expr == f'sum(rate(recommend_requests_total{{endpoint="recommend",status=~"5.."}}[{w}])) / '
                            f'sum(rate(recommend_requests_total{{endpoint="recommend"}}[{w}]))',
                    f"alert_rules.yml {rec}: must be the 5xx ratio of GET /recommend over [{w}]: {expr}")
        else:
            r.check(expr == f'sum(increase(recommend_requests_total{{endpoint="recommend"}}[{w}]))',
                    f"alert_rules.yml {rec}: must count GET /recommend over [{w}]: {expr}")

    def ratio(w):
        return f"movie_recs:slo_errors_per_request:ratio_rate{w}"

    def count(w):
        return f"movie_recs:slo_requests:increase{w}"

    jobs = {sc["job_name"]: sc for sc in prom_cfg.get("scrape_configs", [])}
    targets = {t for sc in jobs.values() for stc in sc.get("static_configs", []) for t in stc.get("targets", [])}
    r.check("127.0.0.1:8080" in targets, "prometheus.yml: must scrape recs serve on 127.0.0.1:8080")
    r.check("alert_rules.yml" in prom_cfg.get("rule_files", []), "prometheus.yml: must load alert_rules.yml")
    r.check(str((prom_cfg.get("global") or {}).get("evaluation_interval")) == "30s",
            "prometheus.yml: global evaluation_interval must be 30s (the rule groups set none)")

    def common(alert, rule, severity, anchor):
        labels, ann = rule.get("labels") or {}, rule.get("annotations") or {}
        r.check(labels.get("severity") == severity, f"alert_rules.yml {alert}: severity {labels.get('severity')!r} != {severity!r}")
        r.check(labels.get("service") == SERVICE, f"alert_rules.yml {alert}: label service must be {SERVICE}")
        r.check(str(ann.get("runbook_url", "")).endswith("#" + anchor), f"alert_rules.yml {alert}: runbook_url must link #{anchor}")
        r.check(bool(ann.get("summary")) and bool(ann.get("description")), f"alert_rules.yml {alert}: needs summary and description")

    for alert, spec in ALERTS.items():
        rule = rules.get(alert)
        if not rule:
            continue
        pr, thr, op = spec["prom"], spec["threshold"], spec["op"]
        expr = " ".join(rule["expr"].split())
        common(alert, rule, spec["severity"], spec["anchor"])
        r.check(rule.get("for") == pr["for"], f"alert_rules.yml {alert}: for {rule.get('for')!r} != {pr['for']!r}")
        w = pr.get("window")
        k = spec["cw"]["kind"]
        got = prom_comparisons(expr)
        if k == "latency":
            want_cmp = [(op, thr), (">=", n)]
            q = re.match(r"histogram_quantile\(\s*([0-9.]+)\s*, sum by \(le\) \(rate\(recommend_latency_seconds_bucket"
                         r"\{endpoint=\"recommend\"\}\[(\w+)\]\)\) \) " + re.escape(op), expr)
            r.check(bool(q) and close(q.group(1), pr["quantile"]) and q.group(2) == w,
                    f"alert_rules.yml {alert}: want histogram_quantile({pr['quantile']}) of GET /recommend over [{w}] {op} ...: {expr}")
            r.check(f"and on() {count(w)} >=" in expr, f"alert_rules.yml {alert}: needs the traffic guard {count(w)} >= {n}")
        elif k in ("ratio", "availability"):
            want_cmp = [(op, thr), (">=", n)]
            lhs = ratio(w) if k == "ratio" else f"(1 - {ratio(w)})"
            r.check(expr.startswith(f"{lhs} {op} ") and f"and on() {count(w)} >=" in expr,
                    f"alert_rules.yml {alert}: want `{lhs} {op} <threshold> and on() {count(w)} >= {n}`: {expr}")
            r.check(ratio(w) in records and count(w) in records, f"alert_rules.yml {alert}: recording rules for [{w}] missing")
        elif k == "canary":
            want_cmp = [("==", 0), ("==", 0)]
            for frag in ('up{job=', "service_health_status{job=", "absent(up{job="):
                r.check(frag in expr, f"alert_rules.yml {alert}: expression lacks {frag!r}: {expr}")
        elif k == "count":
            want_cmp = [(op, thr)]
            r.check(expr.startswith(f'sum(increase(recommend_errors_total{{error_type="model_load"}}[{w}])) {op}'),
                    f"alert_rules.yml {alert}: want sum(increase(recommend_errors_total{{error_type=\"model_load\"}}[{w}])): {expr}")
        else:  # drift
            want_cmp = [(op, thr)]
            r.check(expr.startswith(f"data_drift_psi {op}"), f"alert_rules.yml {alert}: want data_drift_psi {op} ...: {expr}")
        r.check(len(got) == len(want_cmp) and all(g[0] == w_[0] and close(g[1], w_[1]) for g, w_ in zip(got, want_cmp)),
                f"alert_rules.yml {alert}: comparisons {got} != {want_cmp} (thresholds compared as numbers)")
        for job in sorted(set(re.findall(r'job="([^"]+)"', expr))):
            r.check(job in jobs, f"alert_rules.yml {alert}: job {job!r} is not a scrape job in prometheus.yml {sorted(jobs)}")

    for alert, spec in BURN.items():
        rule = rules.get(alert)
        if not rule:
            continue
        expr = " ".join(rule["expr"].split())
        common(alert, rule, spec["severity"], spec["anchor"])
        branches = []
        for lname, _, sname, _, factor in spec["pairs"]:
            branches.append((lname, sname, round(factor * (1 - AVAILABILITY), 12)))
        got = re.findall(r"\( (\S+) > ([0-9.e-]+) and (\S+) > ([0-9.e-]+) and on\(\) (\S+) >= (\d+) \)", expr)
        r.check(" or ".join(f"( {a} > {b} and {c} > {d} and on() {e} >= {f} )" for a, b, c, d, e, f in got) == expr,
                f"alert_rules.yml {alert}: want `( long > t and short > t and on() requests >= n ) or ...`: {expr}")
        r.check(len(got) == len(branches), f"alert_rules.yml {alert}: {len(got)} window pairs, want {len(branches)}")
        for (lr, lt, sr, st, cr, cn), (lname, sname, t) in zip(got, branches):
            r.check(lr == ratio(lname) and sr == ratio(sname) and cr == count(lname),
                    f"alert_rules.yml {alert}: pair reads {lr}, {sr}, {cr}; want {ratio(lname)}, {ratio(sname)}, {count(lname)}")
            r.check(close(lt, t) and close(st, t) and close(cn, n),
                    f"alert_rules.yml {alert}: pair {lname}/{sname}: thresholds {lt}, {st} != {t} or guard {cn} != {n}")
            for rec in (lr, sr, cr):
                r.check(rec in records, f"alert_rules.yml {alert}: recording rule {rec} missing")

    # every alert: a firing and a quiet test, and one just above / one just below its threshold
    fires, quiet, above, below = set(), set(), set(), set()
    for fname, test_doc in test_docs.items():
        for t in test_doc.get("tests", []):
            tname = str(t.get("name", ""))
            for at in t.get("alert_rule_test", []):
                exp = at.get("exp_alerts") or []
                alert = at["alertname"]
                if exp and all("exp_labels" in e for e in exp):
                    fires.add(alert)
                    if tname.startswith(f"{alert} just above"):
                        above.add(alert)
                elif not exp:
                    quiet.add(alert)
                    if tname.startswith(f"{alert} just below"):
                        below.add(alert)
    for alert in sorted(want):
        r.check(alert in fires, f"promtool tests: no test where {alert} fires (with exp_labels)")
        r.check(alert in quiet, f"promtool tests: no test where {alert} stays quiet")
        r.check(alert in above, f"promtool tests: no test named '{alert} just above ...' where it fires")
        r.check(alert in below, f"promtool tests: no test named '{alert} just below ...' where it stays quiet")


# --------------------------------------------------------------------------- grafana
def check_grafana(gdir: pathlib.Path, r: Report):
    dashboards = {}
    for f in sorted((gdir / "dashboards").glob("*.json")):
        try:
            d = json.loads(f.read_text())
        except ValueError as e:
            r.check(False, f"{f}: invalid JSON ({e})")
            continue
        dashboards[d.get("uid")] = (f, d)
    r.check({"movie-recs-slo", "drift"} <= set(dashboards),
            f"grafana: dashboard uids {sorted(map(str, dashboards))} must include movie-recs-slo and drift")
    exprs = []
    for uid, (f, d) in dashboards.items():
        for panel in d.get("panels", []):
            if panel.get("type") == "text":
                continue
            ds = (panel.get("datasource") or {}).get("uid")
            r.check(ds == "prometheus", f"{f.name} panel {panel.get('title')!r}: datasource uid {ds!r} != 'prometheus'")
            for t in panel.get("targets", []):
                tds = (t.get("datasource") or {}).get("uid", "prometheus")
                r.check(tds == "prometheus", f"{f.name} panel {panel.get('title')!r}: target datasource {tds!r}")
                exprs.append((f.name, panel.get("title"), t.get("expr", "")))
    if "movie-recs-slo" in dashboards:
        blob = json.dumps(dashboards["movie-recs-slo"][1])
        for m in ["recommend_requests_total", "recommend_latency_seconds_bucket", "model_version_info",
                  "slo_availability_target_ratio", "slo_latency_target_seconds", "histogram_quantile(0.95",
                  "histogram_quantile(0.99"]:
            r.check(m in blob, f"grafana movie-recs-slo: no panel uses {m}")
    if "drift" in dashboards:
        d = dashboards["drift"][1]
        blob = json.dumps(d)
        r.check("data_drift_psi" in blob, "grafana drift: no panel uses data_drift_psi")
        steps = {s.get("value") for p in d.get("panels", [])
                 for s in (((p.get("fieldConfig") or {}).get("defaults") or {}).get("thresholds") or {}).get("steps", [])}
        r.check({0.2, 0.3, 0.5} <= steps, f"grafana drift: PSI bands 0.2/0.3/0.5 missing (got {sorted(s for s in steps if s)})")
    ds_file = gdir / "provisioning" / "datasources" / "prometheus.yml"
    if r.check(ds_file.exists(), f"grafana: missing {ds_file}"):
        uids = [d.get("uid") for d in (yaml.safe_load(ds_file.read_text()) or {}).get("datasources", [])]
        r.check("prometheus" in uids, f"{ds_file}: no datasource with uid prometheus")
    r.check(any((gdir / "provisioning" / "dashboards").glob("*.yml")), "grafana: missing dashboard provisioning yaml")
    return exprs


def promql_syntax(exprs, r: Report):
    """Feed every dashboard query to `promtool check rules` as a recording rule."""
    promtool = shutil.which("promtool")
    if not promtool:
        print("  (promtool not found: dashboard PromQL syntax not checked)")
        return
    rules = [{"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "5m")}
             for i, (_, _, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, tmp)
    out = subprocess.run([promtool, "check", "rules", tmp.name], capture_output=True, text=True)
    pathlib.Path(tmp.name).unlink()
    r.check(out.returncode == 0, "grafana: a dashboard query is not valid PromQL:\n" + out.stdout + out.stderr)


# --------------------------------------------------------------------------- METRICS.md
def check_emf_examples(doc: str, r: Report):
    """Every ```json line in METRICS.md is a valid EMF document that follows CONTRACT."""
    lines = [ln for block in re.findall(r"```json\n(.*?)```", doc, re.S) for ln in block.splitlines() if ln.strip()]
    r.check(len(lines) >= 4, "METRICS.md: want EMF examples (```json blocks)")
    for ln in lines:
        try:
            d = json.loads(ln)
        except ValueError as e:
            r.check(False, f"METRICS.md: EMF example is not one JSON object per line ({e}): {ln[:80]}")
            continue
        directives = (d.get("_aws") or {}).get("CloudWatchMetrics") or []
        r.check(isinstance((d.get("_aws") or {}).get("Timestamp"), int) and directives,
                f"METRICS.md: EMF example lacks _aws.Timestamp/CloudWatchMetrics: {ln[:80]}")
        for dv in directives:
            r.check(dv.get("Namespace") == NAMESPACE, f"METRICS.md: namespace {dv.get('Namespace')!r}")
            for m in dv.get("Metrics", []):
                name = m.get("Name")
                r.check(name in CONTRACT and dv.get("Dimensions") == CONTRACT[name],
                        f"METRICS.md: {name} example uses DimensionSets {dv.get('Dimensions')}, contract {CONTRACT.get(name)}")
                r.check(isinstance(d.get(name), (int, float)), f"METRICS.md: {name} has no numeric root value")
            for key in {k for s in dv.get("Dimensions", []) for k in s}:
                r.check(isinstance(d.get(key), str), f"METRICS.md: dimension {key} must be a string root member")
        r.check(d.get("service") == SERVICE, f"METRICS.md: service must be {SERVICE!r}")


# --------------------------------------------------------------------------- main
FAULT_VARS = ("RECS_FAULT_INJECTION", "RECS_FAULT_FILE")


def check_no_fault_injection(text: str, r: Report):
    """The drills' fault injection (shared/serve/src/fault.rs) is enabled by an environment
    variable; no deployed function may set it, in Globals, a function or anywhere else."""
    for var in FAULT_VARS:
        r.check(var not in text, f"template.yaml mentions {var}: fault injection is for drills only, never deployed")


def env_var_names(node) -> set:
    """Every key of every Environment.Variables map in the template (Globals and resources)."""
    out = set()
    if isinstance(node, dict):
        env = node.get("Environment")
        if isinstance(env, dict) and isinstance(env.get("Variables"), dict):
            out |= set(env["Variables"])
        for v in node.values():
            out |= env_var_names(v)
    elif isinstance(node, list):
        for v in node:
            out |= env_var_names(v)
    return out


def check_no_admin_token(tpl: dict, r: Report):
    """On Lambda the admin routes are AWS_IAM-authorised; RECS_ADMIN_TOKEN (the local
    server's bearer token) must never be set there: a SigV4 request's Authorization header
    holds the signature, so a bearer check would refuse every signed call."""
    names = env_var_names(tpl)
    r.check(bool(names) and "RECS_ADMIN_TOKEN" not in names,
            "template.yaml sets RECS_ADMIN_TOKEN: admin routes are AWS_IAM on Lambda, no bearer token")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", type=pathlib.Path, default=INFRA / "template.yaml")
    ap.add_argument("--slo", type=pathlib.Path, default=INFRA / "slo.yaml")
    ap.add_argument("--rules", type=pathlib.Path, default=INFRA / "prometheus" / "alert_rules.yml")
    ap.add_argument("--rules-test", type=pathlib.Path, nargs="+",
                    default=[INFRA / "prometheus" / "alert_rules_test.yml",
                             INFRA / "prometheus" / "alert_rules_burn_rate_test.yml"])
    ap.add_argument("--prometheus-config", type=pathlib.Path, default=INFRA / "prometheus" / "prometheus.yml")
    ap.add_argument("--grafana", type=pathlib.Path, default=INFRA / "grafana")
    ap.add_argument("--metrics-doc", type=pathlib.Path, default=INFRA / "METRICS.md")
    args = ap.parse_args(argv)

    r = Report()
    slo = yaml.safe_load(args.slo.read_text())
    check_slo(slo, r)
    n_slo = r.checked
    tpl = yaml.load(args.template.read_text(), Loader=CfnLoader)
    check_template(tpl, slo, r)
    check_exposure_log(tpl, r)
    check_data_stores(tpl, r)
    check_concurrency_and_retries(tpl, r)
    check_spark_path(tpl, r)
    check_logging(tpl, r)
    check_checkov_skips(tpl, r)
    check_no_fault_injection(args.template.read_text(), r)
    check_no_admin_token(tpl, r)
    n_tpl = r.checked - n_slo
    tests = {f.name: yaml.safe_load(f.read_text()) for f in args.rules_test}
    check_prometheus(yaml.safe_load(args.rules.read_text()), tests,
                     yaml.safe_load(args.prometheus_config.read_text()), slo, r)
    n_prom = r.checked - n_slo - n_tpl
    exprs = check_grafana(args.grafana, r)
    promql_syntax(exprs, r)
    n_graf = r.checked - n_slo - n_tpl - n_prom
    doc = args.metrics_doc.read_text() if args.metrics_doc.exists() else ""
    r.check(bool(doc), f"missing {args.metrics_doc}")
    for name in dict.fromkeys(list(CONTRACT) + PROM_METRICS + DRIFT_FEATURES + ERROR_TYPES + [NAMESPACE, "probe_success"]):
        r.check(name in doc, f"{args.metrics_doc.name}: does not document {name}")
    r.check('["service","endpoint","status_class"]' in doc.replace(" ", ""),
            f"{args.metrics_doc.name}: must document the [service, endpoint, status_class] set the SLO alarms read")

    check_emf_examples(doc, r)

    n_doc = r.checked - n_slo - n_tpl - n_prom - n_graf
    print(f"check_template: {n_slo} slo.yaml checks, {n_tpl} template checks, {n_prom} Prometheus checks, "
          f"{n_graf} Grafana checks, {n_doc} METRICS.md checks")
    if r.failures:
        print(f"FAILED: {len(r.failures)} problem(s):", file=sys.stderr)
        for f in r.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"check_template: OK - {len(ALERTS)} runbook alerts + {len(BURN)} burn-rate alerts (CloudWatch + Prometheus "
          f"+ promtool tests just above/below), {len(PLATFORM) + len(PLATFORM_MATH)} platform alarms, "
          "routes/IAM/runtime/first-deploy settings, dashboards")
    return 0


if __name__ == "__main__":
    sys.exit(main())

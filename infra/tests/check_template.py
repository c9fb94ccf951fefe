#!/usr/bin/env python3
"""Static checks of infra/ that cfn-lint and promtool do not make.

    python3 infra/tests/check_template.py [--template T] [--rules R] [--prometheus-config P]
                                          [--rules-test RT] [--grafana G] [--metrics-doc M]

Checks that the SAM template implements the runbook's eight alerts with the runbook's
thresholds and windows (the ALERTS table below), that every alarm notifies the SNS topic,
that the alarms use the metric contract of infra/METRICS.md (names and exact dimension
sets, otherwise CloudWatch silently finds no data), that the switch/rollout routes need
AWS_IAM, that every function is provided.al2023 on arm64 with least-privilege S3/CloudWatch
permissions and a log group with retention, that the Prometheus rules are the same eight
alerts with the same thresholds (and a ServiceDown that names the scraped job), that every
alert has a firing and a quiet promtool test, and that the Grafana dashboards have the right
uids and datasource. Prints every failure and exits 1 if there is any.
"""
from __future__ import annotations

import argparse
import json
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
    "recommend_requests_total": [["service"], ["service", "endpoint"], ["service", "status_class"]],
    "recommend_latency_seconds": [["service"], ["service", "endpoint"]],
    "recommend_errors_total": [["service", "error_type"]],
    "model_load_seconds": [["service"]],
    "model_switches_total": [["service"]],
    "data_drift_psi": [["service", "feature"]],
}
DRIFT_FEATURES = ["rating", "events_per_user", "item_popularity", "unknown_user_share",
                  "unknown_item_share", "hour_of_day", "user", "item"]
PROM_METRICS = ["recommend_requests_total", "recommend_latency_seconds_bucket", "recommend_errors_total",
                "model_switches_total", "model_load_seconds", "model_version_info", "data_drift_psi",
                "service_health_status", "service_uptime_seconds", "process_resident_memory_bytes",
                "slo_latency_target_seconds", "slo_availability_target_ratio"]

FUNCTIONS = {"recommend": "RecommendFunction", "health": "HealthFunction",
             "switch": "SwitchFunction", "drift": "DriftFunction"}
# (method, path) -> (function, authorizer)
ROUTES = {
    ("GET", "/recommend/{user_id}"): ("recommend", None),
    ("GET", "/healthz"): ("health", None),
    ("GET", "/switch"): ("switch", "AWS_IAM"),
    ("POST", "/switch"): ("switch", "AWS_IAM"),
    ("GET", "/rollout/status"): ("switch", "AWS_IAM"),
    ("POST", "/rollout/update"): ("switch", "AWS_IAM"),
}

_REQ_TOTAL = ("recommend_requests_total", {"service": SERVICE})
_REQ_5XX = ("recommend_requests_total", {"service": SERVICE, "status_class": "5xx"})

# The runbook's alerts (RUNBOOK.md "Alert Handling", DESIGN.md "Alerts"); windows and
# `for` durations from the old alert_rules.yml where the design line is silent.
#   cw:   CloudWatch alarm - statistic, threshold, comparison, Period x EvaluationPeriods
#         (DatapointsToAlarm), missing-data policy, and for metric math the inputs.
#   prom: Prometheus rule - `for`, the comparison with its threshold, and fragments the
#         expression must contain (window, filters).
ALERTS = {
    "HighLatencyP95": {
        "severity": "warning", "anchor": "high-latency-p95",
        "cw": {"metric": ("recommend_latency_seconds", {"service": SERVICE, "endpoint": "recommend"}),
               "ext": "p95", "threshold": 0.1, "op": "GreaterThanThreshold",
               "period": 60, "evals": 2, "dta": 2, "missing": "notBreaching"},
        "prom": {"for": "2m", "cmp": "> 0.1",
                 "contains": ["histogram_quantile(0.95", 'endpoint="recommend"', "[5m]"]},
    },
    "HighLatencyP99": {
        "severity": "critical", "anchor": "high-latency-p95",
        "cw": {"metric": ("recommend_latency_seconds", {"service": SERVICE, "endpoint": "recommend"}),
               "ext": "p99", "threshold": 0.5, "op": "GreaterThanThreshold",
               "period": 60, "evals": 2, "dta": 2, "missing": "notBreaching"},
        "prom": {"for": "2m", "cmp": "> 0.5",
                 "contains": ["histogram_quantile(0.99", 'endpoint="recommend"', "[5m]"]},
    },
    "HighErrorRate": {
        "severity": "warning", "anchor": "high-error-rate",
        "cw": {"math": {"total": _REQ_TOTAL, "err5xx": _REQ_5XX}, "stat": "Sum", "guard": "IF(total > 0",
               "threshold": 0.01, "op": "GreaterThanThreshold",
               "period": 300, "evals": 1, "dta": 1, "missing": "notBreaching"},
        "prom": {"for": "2m", "cmp": "> 0.01", "contains": ['status=~"5.."', "[5m]", 'endpoint!="metrics"']},
    },
    "CriticalErrorRate": {
        "severity": "critical", "anchor": "high-error-rate",
        "cw": {"math": {"total": _REQ_TOTAL, "err5xx": _REQ_5XX}, "stat": "Sum", "guard": "IF(total > 0",
               "threshold": 0.05, "op": "GreaterThanThreshold",
               "period": 300, "evals": 1, "dta": 1, "missing": "notBreaching"},
        "prom": {"for": "1m", "cmp": "> 0.05", "contains": ['status=~"5.."', "[5m]", 'endpoint!="metrics"']},
    },
    "ServiceDown": {
        "severity": "critical", "anchor": "service-down",
        "cw": {"canary": True, "stat": "Maximum", "threshold": 100, "op": "LessThanThreshold",
               "period": 60, "evals": 2, "dta": 2, "missing": "breaching"},
        "prom": {"for": "1m", "cmp": "== 0", "contains": ["up{job=", "absent(up{job="]},
    },
    "LowAvailability": {
        "severity": "warning", "anchor": "low-availability",
        "cw": {"math": {"total": _REQ_TOTAL, "err5xx": _REQ_5XX}, "stat": "Sum", "guard": "IF(total > 0",
               "threshold": 0.999, "op": "LessThanThreshold",
               "period": 1800, "evals": 1, "dta": 1, "missing": "notBreaching"},
        "prom": {"for": "5m", "cmp": "< 0.999", "contains": ['status=~"5.."', "[30m]", 'endpoint!="metrics"']},
    },
    "ModelLoadFailure": {
        "severity": "warning", "anchor": "model-load-failure",
        "cw": {"metric": ("recommend_errors_total", {"service": SERVICE, "error_type": "model_load"}),
               "stat": "Sum", "threshold": 10, "op": "GreaterThanThreshold",
               "period": 300, "evals": 1, "dta": 1, "missing": "notBreaching"},
        "prom": {"for": "2m", "cmp": "> 10", "contains": ['error_type="model_load"', "[5m]", "increase("]},
    },
    "HighDataDrift": {
        "severity": "warning", "anchor": "high-data-drift",
        "cw": {"math": {f"psi_{f}": ("data_drift_psi", {"service": SERVICE, "feature": f}) for f in DRIFT_FEATURES},
               "stat": "Maximum", "guard": "MAX([", "threshold": 0.2, "op": "GreaterThanThreshold",
               "period": 3600, "evals": 1, "dta": 1, "missing": "ignore"},
        "prom": {"for": "5m", "cmp": "> 0.2", "contains": ["data_drift_psi"]},
    },
}

PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d{1,10})?|100)$")


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


class Report:
    def __init__(self):
        self.failures: list[str] = []
        self.checked = 0

    def check(self, ok: bool, message: str):
        self.checked += 1
        if not ok:
            self.failures.append(message)
        return ok


# --------------------------------------------------------------------------- template
def check_template(tpl: dict, r: Report):
    r.check(tpl.get("Transform") == "AWS::Serverless-2016-10-31",
            "template: Transform must be AWS::Serverless-2016-10-31")
    res = tpl.get("Resources", {})
    glob = (tpl.get("Globals") or {}).get("Function", {})
    params = tpl.get("Parameters", {})

    def of_type(t):
        return {k: v for k, v in res.items() if v.get("Type") == t}

    # ---- functions: runtime, architecture, code location
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
        m = re.fullmatch(r"\.\./target/lambda/([a-z0-9_-]+)/", str(p.get("CodeUri", "")))
        if r.check(bool(m), f"{logical}: CodeUri {p.get('CodeUri')!r} is not ../target/lambda/<name>/ "
                            "(the cargo lambda output, relative to infra/)"):
            by_name[m.group(1)] = logical
    r.check(set(by_name) == set(FUNCTIONS),
            f"template: functions {sorted(by_name)} != expected {sorted(FUNCTIONS)}")
    env = ((glob.get("Environment") or {}).get("Variables") or {})
    reg = text_of(env.get("MODEL_REGISTRY", ""))
    r.check(reg.startswith("s3://${") and "${RegistryBucket}" in reg,
            f"Globals: MODEL_REGISTRY must be s3://<bucket>/<prefix> built from parameters, got {reg!r}")

    # ---- HTTP API and routes
    apis = of_type("AWS::Serverless::HttpApi")
    r.check(len(apis) == 1, f"template: want exactly one AWS::Serverless::HttpApi, found {len(apis)}")
    api_id = next(iter(apis), None)
    if api_id:
        ap = apis[api_id].get("Properties", {})
        r.check(ap.get("StageName", "$default") == "$default", f"{api_id}: stage must be $default")
        r.check((ap.get("Auth") or {}).get("EnableIamAuthorizer") is True,
                f"{api_id}: Auth.EnableIamAuthorizer must be true for the AWS_IAM routes")
    seen_routes = {}
    schedules = []
    for name, logical in by_name.items():
        for ev_name, ev in (res[logical].get("Properties", {}).get("Events") or {}).items():
            ep = ev.get("Properties", {})
            if ev.get("Type") == "HttpApi":
                key = (str(ep.get("Method", "")).upper(), ep.get("Path"))
                auth = (ep.get("Auth") or {}).get("Authorizer")
                r.check(ep.get("ApiId") == {"Ref": api_id}, f"{logical}.{ev_name}: ApiId must reference {api_id}")
                r.check(key not in seen_routes, f"route {key} defined twice")
                seen_routes[key] = (name, auth)
            elif ev.get("Type") in ("Schedule", "ScheduleV2"):
                schedules.append((name, ep.get("Schedule", ep.get("ScheduleExpression"))))
    for key, (want_fn, want_auth) in ROUTES.items():
        got = seen_routes.get(key)
        if not r.check(got is not None, f"route {key[0]} {key[1]} is missing"):
            continue
        r.check(got[0] == want_fn, f"route {key[0]} {key[1]} goes to {got[0]}, want {want_fn}")
        r.check(got[1] == want_auth,
                f"route {key[0]} {key[1]}: authorizer {got[1]!r}, want {want_auth!r}")
    extra = set(seen_routes) - set(ROUTES)
    r.check(not extra, f"unexpected routes {sorted(extra)}")
    r.check(schedules == [("drift", {"Ref": "DriftSchedule"})],
            f"drift must have one schedule event using the DriftSchedule parameter, got {schedules}")
    r.check((params.get("DriftSchedule") or {}).get("Default") == "rate(1 hour)",
            "parameter DriftSchedule must default to rate(1 hour)")

    # ---- IAM: least privilege
    def statements(logical):
        out = []
        for pol in res[logical].get("Properties", {}).get("Policies") or []:
            if isinstance(pol, dict) and "Statement" in pol:
                out += pol["Statement"]
            else:
                r.check(False, f"{logical}: policy {pol!r} is not an inline statement list "
                               "(managed policies and SAM templates are broader than needed)")
        return out

    allowed = {"recommend": {"s3:GetObject", "s3:ListBucket"},
               "health": {"s3:GetObject", "s3:ListBucket"},
               "switch": {"s3:GetObject", "s3:ListBucket", "s3:PutObject"},
               "drift": {"s3:GetObject", "s3:ListBucket", "cloudwatch:PutMetricData"}}
    for name, logical in by_name.items():
        acts = set()
        for st in statements(logical):
            r.check(st.get("Effect") == "Allow", f"{logical}: unexpected statement effect {st.get('Effect')}")
            for a in as_list(st.get("Action", [])):
                acts.add(a)
                r.check("*" not in a, f"{logical}: wildcard action {a!r}")
                resources = [text_of(x) for x in as_list(st.get("Resource", []))]
                if a == "s3:GetObject":
                    r.check(all(x.endswith("/*") and "${RegistryBucket}" in x or "${EventsPrefix}/*" in x
                                for x in resources),
                            f"{logical}: s3:GetObject must be limited to the registry/events prefix, got {resources}")
                if a == "s3:ListBucket":
                    cond = (st.get("Condition") or {}).get("StringLike", {}).get("s3:prefix")
                    r.check(bool(cond), f"{logical}: s3:ListBucket needs an s3:prefix condition")
                if a == "s3:PutObject":
                    r.check(resources == ["arn:${AWS::Partition}:s3:::${RegistryBucket}/${RegistryPrefix}/active.json"],
                            f"{logical}: s3:PutObject must be on <prefix>/active.json only, got {resources}")
                if a == "cloudwatch:PutMetricData":
                    ns = (st.get("Condition") or {}).get("StringEquals", {}).get("cloudwatch:namespace")
                    r.check(ns == NAMESPACE, f"{logical}: PutMetricData needs condition cloudwatch:namespace={NAMESPACE}")
        r.check(acts <= allowed.get(name, set()), f"{logical}: actions {sorted(acts - allowed[name])} not allowed")
        if name == "switch":
            r.check("s3:PutObject" in acts, "SwitchFunction: needs s3:PutObject on active.json")
        if name == "drift":
            r.check("cloudwatch:PutMetricData" in acts, "DriftFunction: needs cloudwatch:PutMetricData")

    # ---- log groups
    lgs = of_type("AWS::Logs::LogGroup")
    for name, logical in by_name.items():
        want = "/aws/lambda/${%s}" % logical
        match = [lg for lg in lgs.values() if text_of(lg["Properties"].get("LogGroupName")) == want]
        r.check(len(match) == 1 and "RetentionInDays" in match[0]["Properties"],
                f"{logical}: needs a log group {want} with RetentionInDays")

    # ---- alarms
    topics = list(of_type("AWS::SNS::Topic"))
    r.check(len(topics) == 1, f"template: want one SNS topic for alarm actions, found {topics}")
    topic_ref = {"Ref": topics[0]} if topics else None
    alarms = {}
    for logical, al in of_type("AWS::CloudWatch::Alarm").items():
        p = al.get("Properties", {})
        r.check(topic_ref in as_list(p.get("AlarmActions", [])),
                f"{logical}: AlarmActions must reference the SNS topic {topics}")
        r.check(topic_ref in as_list(p.get("OKActions", [])),
                f"{logical}: OKActions must reference the SNS topic {topics}")
        name = text_of(p.get("AlarmName", ""))
        m = re.fullmatch(r"\$\{AWS::StackName\}-([A-Za-z0-9]+)", name)
        if r.check(bool(m), f"{logical}: AlarmName {name!r} is not ${{AWS::StackName}}-<Alert>"):
            alarms[m.group(1)] = (logical, p)
    r.check(set(alarms) == set(ALERTS),
            f"alarms {sorted(alarms)} != runbook alerts {sorted(ALERTS)}")
    canaries = of_type("AWS::Synthetics::Canary")
    for alert, spec in ALERTS.items():
        if alert in alarms:
            check_alarm(alert, spec, *alarms[alert], canaries, r)

    # ---- canary behind ServiceDown
    for logical, c in canaries.items():
        cp = c.get("Properties", {})
        r.check((cp.get("Schedule") or {}).get("Expression") == "rate(1 minute)",
                f"{logical}: must probe every minute")
        r.check("/healthz" in text_of((cp.get("Code") or {}).get("Script", "")),
                f"{logical}: must probe GET /healthz")

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
                       "IF(total > 0", "data_drift_psi", "SuccessPercent"]:
            r.check(needle in blob, f"{logical}: dashboard has no panel using {needle}")
        values = {a.get("value") for w in widgets
                  for a in ((w.get("properties") or {}).get("annotations") or {}).get("horizontal", [])}
        for v in (0.1, 0.5, 0.999, 0.01, 0.2, 0.3, 0.5):
            r.check(v in values, f"{logical}: dashboard lacks the {v} target/band line")
        alarm_widget = [w for w in widgets if w.get("type") == "alarm"]
        r.check(alarm_widget and len(alarm_widget[0]["properties"]["alarms"]) == len(ALERTS),
                f"{logical}: want an alarm-status widget with all {len(ALERTS)} alarms")


def check_alarm(alert, spec, logical, p, canaries, r: Report):
    cw = spec["cw"]
    where = f"{logical} ({alert})"
    r.check(p.get("Threshold") == cw["threshold"], f"{where}: Threshold {p.get('Threshold')} != {cw['threshold']}")
    r.check(p.get("ComparisonOperator") == cw["op"], f"{where}: ComparisonOperator {p.get('ComparisonOperator')} != {cw['op']}")
    r.check(p.get("EvaluationPeriods") == cw["evals"], f"{where}: EvaluationPeriods {p.get('EvaluationPeriods')} != {cw['evals']}")
    r.check(p.get("DatapointsToAlarm", p.get("EvaluationPeriods")) == cw["dta"],
            f"{where}: DatapointsToAlarm {p.get('DatapointsToAlarm')} != {cw['dta']}")
    r.check(p.get("TreatMissingData") == cw["missing"], f"{where}: TreatMissingData {p.get('TreatMissingData')} != {cw['missing']}")
    r.check(f"#{spec['anchor']}" in text_of(p.get("AlarmDescription", "")) and
            f"[{spec['severity']}]" in text_of(p.get("AlarmDescription", "")),
            f"{where}: AlarmDescription needs [{spec['severity']}] and the runbook link #{spec['anchor']}")
    r.check("Unit" not in p, f"{where}: no Unit filter (a unit mismatch makes the alarm see no data)")

    def check_dims(metric, dims, got_dims, ctx):
        got = {d["Name"]: d["Value"] for d in got_dims or []}
        r.check(got == dims, f"{ctx}: dimensions {got} != {dims}")
        if metric in CONTRACT:
            r.check(sorted(got) in [sorted(s) for s in CONTRACT[metric]],
                    f"{ctx}: dimension set {sorted(got)} is not one {metric} is published with "
                    f"({CONTRACT[metric]}) - CloudWatch would find no data")

    if "math" in cw:
        metrics = p.get("Metrics") or []
        r.check(bool(metrics) and "MetricName" not in p, f"{where}: want a metric-math alarm (Metrics)")
        queries = {m["Id"]: m for m in metrics if "MetricStat" in m}
        exprs = [m for m in metrics if "Expression" in m]
        returned = [m for m in metrics if m.get("ReturnData", True)]
        r.check(len(exprs) == 1 and returned == exprs, f"{where}: want exactly one expression with ReturnData true")
        r.check(set(queries) == set(cw["math"]), f"{where}: metric ids {sorted(queries)} != {sorted(cw['math'])}")
        for qid, (metric, dims) in cw["math"].items():
            q = queries.get(qid)
            if not q:
                continue
            ms = q["MetricStat"]
            r.check(ms["Metric"].get("Namespace") == NAMESPACE and ms["Metric"].get("MetricName") == metric,
                    f"{where}.{qid}: want {NAMESPACE}/{metric}")
            check_dims(metric, dims, ms["Metric"].get("Dimensions"), f"{where}.{qid}")
            r.check(ms.get("Period") == cw["period"], f"{where}.{qid}: Period {ms.get('Period')} != {cw['period']}")
            r.check(ms.get("Stat") == cw["stat"], f"{where}.{qid}: Stat {ms.get('Stat')} != {cw['stat']}")
        if exprs:
            expr = exprs[0]["Expression"]
            r.check(expr.replace(" ", "").startswith(cw["guard"].replace(" ", "")),
                    f"{where}: expression {expr!r} must start with {cw['guard']!r}")
            # ids start with a lower-case letter; functions (IF, FILL, MAX) are upper case
            used = set(re.findall(r"\b([a-z][A-Za-z0-9_]*)\b", expr))
            r.check(used <= set(queries), f"{where}: expression uses unknown ids {sorted(used - set(queries))}")
            r.check(used >= set(queries), f"{where}: expression ignores {sorted(set(queries) - used)}")
        return

    r.check(p.get("Period") == cw["period"], f"{where}: Period {p.get('Period')} != {cw['period']}")
    if cw.get("canary"):
        r.check(p.get("Namespace") == "CloudWatchSynthetics" and p.get("MetricName") == "SuccessPercent",
                f"{where}: want CloudWatchSynthetics/SuccessPercent")
        dims = p.get("Dimensions") or []
        r.check(len(dims) == 1 and dims[0]["Name"] == "CanaryName" and
                dims[0]["Value"] in [{"Ref": c} for c in canaries],
                f"{where}: must watch the health canary (CanaryName = Ref of the canary)")
        r.check(p.get("Statistic") == cw["stat"], f"{where}: Statistic {p.get('Statistic')} != {cw['stat']}")
        return
    metric, dims = cw["metric"]
    r.check(p.get("Namespace") == NAMESPACE and p.get("MetricName") == metric, f"{where}: want {NAMESPACE}/{metric}")
    check_dims(metric, dims, p.get("Dimensions"), where)
    if "ext" in cw:
        ext = p.get("ExtendedStatistic", "")
        r.check(bool(PERCENTILE.match(ext)), f"{where}: ExtendedStatistic {ext!r} is not a valid percentile")
        r.check(ext == cw["ext"] and "Statistic" not in p, f"{where}: want ExtendedStatistic {cw['ext']} only")
        r.check(p.get("EvaluateLowSampleCountPercentile") in ("evaluate", "ignore"),
                f"{where}: set EvaluateLowSampleCountPercentile")
    else:
        r.check(p.get("Statistic") == cw["stat"], f"{where}: Statistic {p.get('Statistic')} != {cw['stat']}")


# --------------------------------------------------------------------------- prometheus
def check_prometheus(rules_doc: dict, test_doc: dict, prom_cfg: dict, r: Report):
    rules = {}
    for g in rules_doc.get("groups", []):
        for rule in g.get("rules", []):
            if "alert" in rule:
                r.check(rule["alert"] not in rules, f"alert_rules.yml: {rule['alert']} defined twice")
                rules[rule["alert"]] = rule
    r.check(set(rules) == set(ALERTS), f"alert_rules.yml: alerts {sorted(rules)} != runbook alerts {sorted(ALERTS)}")

    jobs = {sc["job_name"]: sc for sc in prom_cfg.get("scrape_configs", [])}
    targets = {t for sc in jobs.values() for stc in sc.get("static_configs", []) for t in stc.get("targets", [])}
    r.check("127.0.0.1:8080" in targets, "prometheus.yml: must scrape recs serve on 127.0.0.1:8080")
    r.check("alert_rules.yml" in prom_cfg.get("rule_files", []), "prometheus.yml: must load alert_rules.yml")

    for alert, spec in ALERTS.items():
        rule = rules.get(alert)
        if not rule:
            continue
        pr = spec["prom"]
        expr = " ".join(rule["expr"].split())
        r.check(rule.get("for") == pr["for"], f"alert_rules.yml {alert}: for {rule.get('for')!r} != {pr['for']!r}")
        r.check(pr["cmp"] in expr, f"alert_rules.yml {alert}: expression lacks {pr['cmp']!r}: {expr}")
        for frag in pr["contains"]:
            r.check(frag in expr, f"alert_rules.yml {alert}: expression lacks {frag!r}: {expr}")
        labels = rule.get("labels") or {}
        ann = rule.get("annotations") or {}
        r.check(labels.get("severity") == spec["severity"],
                f"alert_rules.yml {alert}: severity {labels.get('severity')!r} != {spec['severity']!r}")
        r.check(str(ann.get("runbook_url", "")).endswith("#" + spec["anchor"]),
                f"alert_rules.yml {alert}: runbook_url must link #{spec['anchor']}")
        r.check(bool(ann.get("summary")) and bool(ann.get("description")),
                f"alert_rules.yml {alert}: needs summary and description")
        # same number on both sides
        num = float(pr["cmp"].split()[-1])
        if alert != "ServiceDown":
            r.check(num == spec["cw"]["threshold"],
                    f"{alert}: Prometheus threshold {num} != CloudWatch threshold {spec['cw']['threshold']}")
        # every job the rule names must be scraped (the old ServiceDown named a job that did not exist)
        for job in sorted(set(re.findall(r'job="([^"]+)"', expr))):
            r.check(job in jobs, f"alert_rules.yml {alert}: job {job!r} is not a scrape job in prometheus.yml {sorted(jobs)}")

    # every alert: one test where it fires (with labels) and one where it stays quiet
    fires, quiet = set(), set()
    for t in test_doc.get("tests", []):
        for at in t.get("alert_rule_test", []):
            exp = at.get("exp_alerts") or []
            if exp and all("exp_labels" in e for e in exp):
                fires.add(at["alertname"])
            elif not exp:
                quiet.add(at["alertname"])
    for alert in ALERTS:
        r.check(alert in fires, f"alert_rules_test.yml: no test where {alert} fires (with exp_labels)")
        r.check(alert in quiet, f"alert_rules_test.yml: no test where {alert} stays quiet")


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
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", type=pathlib.Path, default=INFRA / "template.yaml")
    ap.add_argument("--rules", type=pathlib.Path, default=INFRA / "prometheus" / "alert_rules.yml")
    ap.add_argument("--rules-test", type=pathlib.Path, default=INFRA / "prometheus" / "alert_rules_test.yml")
    ap.add_argument("--prometheus-config", type=pathlib.Path, default=INFRA / "prometheus" / "prometheus.yml")
    ap.add_argument("--grafana", type=pathlib.Path, default=INFRA / "grafana")
    ap.add_argument("--metrics-doc", type=pathlib.Path, default=INFRA / "METRICS.md")
    args = ap.parse_args(argv)

    r = Report()
    tpl = yaml.load(args.template.read_text(), Loader=CfnLoader)
    check_template(tpl, r)
    n_tpl = r.checked
    check_prometheus(yaml.safe_load(args.rules.read_text()), yaml.safe_load(args.rules_test.read_text()),
                     yaml.safe_load(args.prometheus_config.read_text()), r)
    n_prom = r.checked - n_tpl
    exprs = check_grafana(args.grafana, r)
    promql_syntax(exprs, r)
    n_graf = r.checked - n_tpl - n_prom
    doc = args.metrics_doc.read_text() if args.metrics_doc.exists() else ""
    r.check(bool(doc), f"missing {args.metrics_doc}")
    for name in dict.fromkeys(list(CONTRACT) + PROM_METRICS + DRIFT_FEATURES + [NAMESPACE, "probe_success"]):
        r.check(name in doc, f"{args.metrics_doc.name}: does not document {name}")

    check_emf_examples(doc, r)

    print(f"check_template: {n_tpl} template checks, {n_prom} Prometheus checks, {n_graf} Grafana checks, "
          f"{r.checked - n_tpl - n_prom - n_graf} METRICS.md checks")
    if r.failures:
        print(f"FAILED: {len(r.failures)} problem(s):", file=sys.stderr)
        for f in r.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print("check_template: OK - 8 alerts x (CloudWatch alarm + Prometheus rule + promtool tests), "
          "routes/IAM/runtime, dashboards")
    return 0


if __name__ == "__main__":
    sys.exit(main())

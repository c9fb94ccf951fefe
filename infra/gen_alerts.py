#!/usr/bin/env python3
"""Render infra/slo.yaml into CloudWatch alarms and Prometheus rules.

    python3 infra/gen_alerts.py            # rewrite the generated files
    python3 infra/gen_alerts.py --check    # write nothing; print a diff and exit 1 if stale
    python3 infra/gen_alerts.py --scale 60 --out /tmp/rules.yml
                                           # a test copy of the Prometheus rules with every
                                           # window and `for` divided by 60 (the drills);
                                           # never the committed file

Generates two things from the one SLO file:
  * infra/prometheus/alert_rules.yml - the whole file (recording rules and alerts);
  * infra/template.yaml - only the alarm block between the BEGIN/END marker lines; every
    other resource of the template stays hand-written.

Only the Python standard library and PyYAML. The CloudWatch block is emitted as YAML text
with CloudFormation short tags (!Ref, !Sub, ...), so the template is never parsed here.
"""
from __future__ import annotations

import argparse
import difflib
import pathlib
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("gen_alerts.py: PyYAML is missing - run `python3 -m pip install pyyaml`")

INFRA = pathlib.Path(__file__).resolve().parent
SLO_FILE = INFRA / "slo.yaml"
TEMPLATE = INFRA / "template.yaml"
RULES = INFRA / "prometheus" / "alert_rules.yml"

BEGIN = "  # >>> BEGIN GENERATED ALARMS - python3 infra/gen_alerts.py renders infra/slo.yaml here; edit that file, not this block"
END = "  # <<< END GENERATED ALARMS"

# Names the generated alarms share with the hand-written part of the template.
TOPIC = "AlarmTopic"
API = "HttpApi"
STAGE = "$default"
RECOMMEND_ROUTE = "GET /recommend/{user_id}"
MIN_REQUESTS_PARAM = "AlarmMinRequests"
DRIFT_PERIOD = ["DriftSchedules", {"Ref": "DriftScheduleHours"}, "Seconds"]   # Mappings lookup
CANARY = "HealthCanary"

KINDS = {"latency", "error_ratio", "availability", "burn_rate", "error_count", "drift_psi",
         "service_down", "lambda", "apigw_5xx", "drift_missing"}
OPS = {">": "GreaterThanThreshold", "<": "LessThanThreshold"}
MISSING = {"breaching", "notBreaching", "ignore", "missing"}


class SloError(Exception):
    pass


# --------------------------------------------------------------------------- durations
_DUR = re.compile(r"^(\d+)(ms|[smhd])$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(d: str):
    """Seconds of a duration: an int for s|m|h|d, a float for ms (only scaled test copies)."""
    m = _DUR.match(str(d))
    if not m:
        raise SloError(f"duration {d!r} is not <n>s|m|h|d")
    if m.group(2) == "ms":
        return int(m.group(1)) / 1000
    return int(m.group(1)) * _UNIT[m.group(2)]


def scaled_duration(d: str, scale: float) -> str:
    """d / scale as a Prometheus duration, to the millisecond (0s stays 0s)."""
    ms = round(seconds(d) * 1000 / scale)
    if seconds(d) > 0 and ms < 1:
        raise SloError(f"--scale {scale}: {d} would become shorter than 1 ms")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scaled(doc: dict, scale: float) -> dict:
    """A copy of the SLO file with every Prometheus window and `for` divided by scale.

    Thresholds, min_requests and expressions stay as they are: only time shrinks, so a
    drill sees the same alert in seconds instead of minutes."""
    import copy
    if scale <= 0:
        raise SloError("--scale must be positive")
    out = copy.deepcopy(doc)
    for a in out["alerts"].values():
        for key in ("window", "for"):
            if key in a and a[key] != "drift_schedule":
                a[key] = scaled_duration(a[key], scale)
        for w in a.get("windows") or []:
            w["long"], w["short"] = scaled_duration(w["long"], scale), scaled_duration(w["short"], scale)
    return out


def num(x):
    """A threshold as written in both outputs: 10 stays 10, 14.4 * 0.001 becomes 0.0144."""
    x = round(float(x), 12)
    return int(x) if x == int(x) else x


def fmt(x) -> str:
    return repr(num(x))


# --------------------------------------------------------------------------- the SLO file
def load(path: pathlib.Path = SLO_FILE) -> dict:
    doc = yaml.safe_load(path.read_text())
    for key in ("service", "namespace", "prometheus_job", "runbook", "slo", "min_requests", "functions", "alerts"):
        if key not in doc:
            raise SloError(f"{path.name}: missing top-level key {key!r}")
    target = doc["slo"].get("availability")
    if not isinstance(target, (int, float)) or not 0 < target < 1:
        raise SloError(f"{path.name}: slo.availability must be a ratio in (0, 1), got {target!r}")
    if not isinstance(doc["min_requests"], int) or doc["min_requests"] < 1:
        raise SloError(f"{path.name}: min_requests must be a positive integer")
    for name, a in doc["alerts"].items():
        where = f"{path.name}: alert {name}"
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", name):
            raise SloError(f"{where}: names are alphanumeric CamelCase (they become alarm names)")
        for key in ("kind", "severity", "runbook", "metric", "statistic", "op", "summary", "description", "cloudwatch"):
            if key not in a:
                raise SloError(f"{where}: missing {key!r}")
        if a["kind"] not in KINDS:
            raise SloError(f"{where}: kind {a['kind']!r} is not one of {sorted(KINDS)}")
        if a["severity"] not in ("critical", "warning"):
            raise SloError(f"{where}: severity must be critical or warning")
        if a["op"] not in OPS:
            raise SloError(f"{where}: op must be '>' or '<'")
        a.setdefault("targets", ["cloudwatch", "prometheus"])
        if not set(a["targets"]) <= {"cloudwatch", "prometheus"} or not a["targets"]:
            raise SloError(f"{where}: targets must be a subset of [cloudwatch, prometheus]")
        if a["kind"] == "burn_rate":
            if not a.get("windows"):
                raise SloError(f"{where}: burn_rate needs windows: [{{long, short, factor}}]")
            for w in a["windows"]:
                if seconds(w["short"]) >= seconds(w["long"]) or float(w["factor"]) <= 0:
                    raise SloError(f"{where}: window {w}: short < long and factor > 0")
        elif not isinstance(a.get("threshold"), (int, float)) or isinstance(a.get("threshold"), bool):
            raise SloError(f"{where}: threshold must be a number")
        if a["kind"] not in ("burn_rate", "drift_missing"):
            seconds(a.get("window", ""))
        if "prometheus" in a["targets"] and a["kind"] not in ("burn_rate",):
            seconds(a.get("for", ""))
        cw = a["cloudwatch"]
        if cw.get("missing") not in MISSING:
            raise SloError(f"{where}: cloudwatch.missing must be one of {sorted(MISSING)}")
        if not isinstance(cw.get("evaluations"), int) or cw["evaluations"] < 1:
            raise SloError(f"{where}: cloudwatch.evaluations must be a positive integer")
        if "period" in cw and seconds(cw["period"]) % 60:
            raise SloError(f"{where}: cloudwatch.period must be a multiple of 60 s")
        if a["kind"] in ("latency",) and not re.fullmatch(r"p\d{1,2}(\.\d+)?", a["statistic"]):
            raise SloError(f"{where}: latency statistic must be a percentile like p95")
    return doc


def budget(doc) -> float:
    return 1 - doc["slo"]["availability"]


def burn_threshold(doc, factor) -> float:
    return num(float(factor) * budget(doc))


# --------------------------------------------------------------------------- YAML emission
class Tag:
    """A CloudFormation short-form intrinsic, emitted as `!Ref X`, `!Sub ...`, `!FindInMap [...]`.

    block=True writes a string as a `|-` block: one line, never folded (expressions)."""

    def __init__(self, tag: str, value, block: bool = False):
        self.tag, self.value, self.block = tag, value, block


def Ref(x):
    return Tag("!Ref", x)


def Sub(x, block=False):
    return Tag("!Sub", x, block)


def FindInMap(*xs):
    return Tag("!FindInMap", [x if not isinstance(x, dict) else Ref(x["Ref"]) for x in xs])


class Flow(dict):
    """A mapping written on one line: {Name: service, Value: movie-recs}."""


class FlowList(list):
    """A list written on one line: [!Ref AlarmTopic]."""


class Literal(str):
    """A multi-line string written as a | block (PromQL expressions)."""


class Dumper(yaml.SafeDumper):
    fold = True         # long strings as folded `>-` blocks (alarm descriptions)

    def ignore_aliases(self, data):
        return True     # no &id001 anchors: each alarm reads on its own

    def increase_indent(self, flow=False, indentless=False):
        # indent block sequences under their key, like the hand-written template
        return super().increase_indent(flow, False)

    def choose_scalar_style(self):
        # `!Ref AlarmTopic`, not `!Ref 'AlarmTopic'`: PyYAML quotes every scalar with an
        # explicit tag; a tagged scalar that could be plain is written plain.
        if self.analysis is None:
            self.analysis = self.analyze_scalar(self.event.value)
        tag = self.event.tag or ""
        if tag.startswith("!") and not self.event.style and not self.analysis.multiline and (
                self.analysis.allow_flow_plain if self.flow_level else self.analysis.allow_block_plain):
            return ""
        return super().choose_scalar_style()


def _tag(d: Dumper, t: Tag):
    if isinstance(t.value, list):
        return d.represent_sequence(t.tag, t.value, flow_style=True)
    style = "|" if t.block else (">" if len(t.value) > 70 else None)
    return d.represent_scalar(t.tag, t.value, style=style)


def _str(d: Dumper, s: str):
    return d.represent_scalar("tag:yaml.org,2002:str", s, style=">" if d.fold and len(s) > 90 else None)


Dumper.add_representer(Tag, _tag)
Dumper.add_representer(str, _str)
Dumper.add_representer(Flow, lambda d, m: d.represent_mapping("tag:yaml.org,2002:map", m, flow_style=True))
Dumper.add_representer(FlowList, lambda d, s: d.represent_sequence("tag:yaml.org,2002:seq", s, flow_style=True))
Dumper.add_representer(Literal, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"))


class OneLineDumper(Dumper):
    fold = False        # Prometheus annotations stay on one line each


def dump(obj, one_line=False) -> str:
    return yaml.dump(obj, Dumper=OneLineDumper if one_line else Dumper, sort_keys=False,
                     default_flow_style=False, width=1000 if one_line else 92, allow_unicode=False)


# --------------------------------------------------------------------------- CloudWatch
def dims(**kv):
    return [Flow(Name=k, Value=v) for k, v in kv.items()]


def query(qid, namespace, metric, dimensions, period, stat):
    return {"Id": qid, "ReturnData": False,
            "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dimensions},
                           "Period": period, "Stat": stat}}


def expression(qid, label, expr):
    return {"Id": qid, "Label": label, "Expression": expr, "ReturnData": True}


def description(name, a, text=None):
    text = text or a["description"]
    return Sub(f"[{a['severity']}] {name}: {text}. Runbook: ${{RunbookBaseUrl}}#{a['runbook']}")


def alarm(name, a, body, actions=True, text=None):
    """AlarmName, description and actions first, then the signal, then the evaluation."""
    p = {"AlarmName": Sub(f"${{AWS::StackName}}-{name}"), "AlarmDescription": description(name, a, text)}
    threshold = body.pop("Threshold") if "Threshold" in body else num(a["threshold"])
    p.update(body)
    cw = a["cloudwatch"]
    p["EvaluationPeriods"] = cw["evaluations"]
    p["DatapointsToAlarm"] = cw.get("datapoints", cw["evaluations"])
    p["Threshold"] = threshold
    p["ComparisonOperator"] = OPS[a["op"]]
    p["TreatMissingData"] = cw["missing"]
    if actions:
        p["AlarmActions"] = FlowList([Ref(TOPIC)])
        p["OKActions"] = FlowList([Ref(TOPIC)])
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": p}


def cw_period(a) -> int:
    return seconds(a["cloudwatch"].get("period", a["window"]))


def emf(doc, **kv):
    return dims(service=doc["service"], **kv)


def guard(ids: str) -> str:
    return f"{ids} >= ${{{MIN_REQUESTS_PARAM}}}"


def recommend_ratio(doc, period, availability=False):
    """Queries and the guarded expression of GET /recommend's 5xx ratio (or 1 - it)."""
    ns = doc["namespace"]
    metrics = [
        query("requests", ns, "recommend_requests_total", emf(doc, endpoint="recommend"), period, "Sum"),
        query("errors", ns, "recommend_requests_total", emf(doc, endpoint="recommend", status_class="5xx"), period, "Sum"),
    ]
    if availability:
        expr = f"IF({guard('FILL(requests, 0)')}, 1 - FILL(errors, 0) / requests, 1)"
    else:
        expr = f"IF({guard('FILL(requests, 0)')}, FILL(errors, 0) / requests, 0)"
    return metrics, Sub(expr, block=True)


def gateway_route():
    return dims(ApiId=Ref(API), Stage=STAGE, Route=RECOMMEND_ROUTE)


def render_cloudwatch(doc) -> list[tuple[str, str, dict]]:
    """[(comment, logical id, resource)] in slo.yaml order."""
    out = []
    ns = doc["namespace"]
    for name, a in doc["alerts"].items():
        if "cloudwatch" not in a["targets"]:
            continue
        k = a["kind"]
        sig = f"{a['op']} {fmt(a['threshold'])}" if "threshold" in a else ""
        cw = a["cloudwatch"]
        if k == "latency":
            period = cw_period(a)
            stat = a["statistic"]
            metrics = [
                query("requests", ns, "recommend_requests_total", emf(doc, endpoint="recommend"), period, "Sum"),
                query("gwrequests", "AWS/ApiGateway", "Count", gateway_route(), period, "Sum"),
                query("handler", ns, a["metric"], emf(doc, endpoint="recommend"), period, stat),
                query("gateway", "AWS/ApiGateway", "Latency", gateway_route(), period, stat),
                expression("latency", f"{stat} latency (s), the larger of handler and API Gateway",
                           Sub(f"IF({guard('MAX([FILL(requests, 0), FILL(gwrequests, 0)])')}, "
                               "MAX([FILL(handler, 0), FILL(gateway, 0) / 1000]), 0)", block=True)),
            ]
            out.append((f"{name}: {stat} of GET /recommend {sig} s, handler (EMF) or API Gateway (ms / 1000), "
                        f"{period} s x {cw['evaluations']}, with >= {MIN_REQUESTS_PARAM} requests",
                        f"{name}Alarm", alarm(name, a, {"Metrics": metrics})))
        elif k in ("error_ratio", "availability"):
            period = cw_period(a)
            metrics, expr = recommend_ratio(doc, period, availability=(k == "availability"))
            label = "availability" if k == "availability" else "5xx ratio"
            metrics.append(expression("ratio", f"{label} of GET /recommend ({period // 60} min)", expr))
            out.append((f"{name}: {label} of GET /recommend {sig} over {period} s, with >= {MIN_REQUESTS_PARAM} requests",
                        f"{name}Alarm", alarm(name, a, {"Metrics": metrics})))
        elif k == "burn_rate":
            parts = []
            for w in a["windows"]:
                thr = burn_threshold(doc, w["factor"])
                pair = []
                for win in (w["long"], w["short"]):
                    wname = f"{name}{win}"
                    metrics, expr = recommend_ratio(doc, seconds(win))
                    metrics.append(expression("ratio", f"5xx ratio of GET /recommend ({win})", expr))
                    text = (f"5xx ratio of GET /recommend over {win} above {num(w['factor'])}x the error budget "
                            f"({fmt(thr)}); one condition of {name}, which notifies")
                    body = {"Metrics": metrics, "Threshold": thr}
                    out.append((f"{wname}: one window of {name} ({num(w['factor'])}x budget = {fmt(thr)}), "
                                "no actions of its own", f"{wname}Alarm", alarm(wname, a, body, actions=False, text=text)))
                    pair.append(f'ALARM("${{{wname}Alarm}}")')
                parts.append("(" + " AND ".join(pair) + ")")
            composite = {
                "AlarmName": Sub(f"${{AWS::StackName}}-{name}"),
                "AlarmDescription": description(name, a),
                "AlarmRule": Sub(" OR ".join(parts), block=True),
                "AlarmActions": FlowList([Ref(TOPIC)]),
                "OKActions": FlowList([Ref(TOPIC)]),
            }
            out.append((f"{name}: " + " or ".join(f"{num(w['factor'])}x over {w['long']} and {w['short']}" for w in a["windows"]),
                        f"{name}Alarm", {"Type": "AWS::CloudWatch::CompositeAlarm", "Properties": composite}))
        elif k == "error_count":
            period = cw_period(a)
            body = {"Namespace": ns, "MetricName": a["metric"], "Dimensions": emf(doc, error_type=a["error_type"]),
                    "Statistic": a["statistic"], "Period": period}
            out.append((f"{name}: {a['metric']}{{error_type={a['error_type']}}} {a['statistic']} {sig} in {period} s",
                        f"{name}Alarm", alarm(name, a, body)))
        elif k == "drift_psi":
            period = cw_period(a)
            metrics = [query(f"psi_{f}", ns, a["metric"], emf(doc, feature=f), period, a["statistic"]) for f in a["features"]]
            ids = ", ".join(f"psi_{f}" for f in a["features"])
            metrics.append(expression("max_psi", "max PSI over features", f"MAX([{ids}])"))
            out.append((f"{name}: the largest {a['metric']} of the {len(a['features'])} features {sig} "
                        f"({a['statistic']} over {period} s); keeps its state between drift runs",
                        f"{name}Alarm", alarm(name, a, {"Metrics": metrics})))
        elif k == "service_down":
            period = cw_period(a)
            body = {"Namespace": "CloudWatchSynthetics", "MetricName": "SuccessPercent",
                    "Dimensions": dims(CanaryName=Ref(CANARY)), "Statistic": a["statistic"], "Period": period}
            out.append((f"{name}: health canary SuccessPercent {sig} for {cw['evaluations']} x {period} s; "
                        "a canary that stops reporting breaches too", f"{name}Alarm", alarm(name, a, body)))
        elif k == "lambda":
            period = cw_period(a)
            for short, logical in doc["functions"].items():
                fname = f"{short}{name}"
                body = {"Namespace": "AWS/Lambda", "MetricName": a["metric"], "Dimensions": dims(FunctionName=Ref(logical)),
                        "Statistic": a["statistic"], "Period": period}
                text = f"{logical}: {a['description']}"
                out.append((f"{fname}: AWS/Lambda {a['metric']} of {logical} {sig} in {period} s",
                            f"{fname}Alarm", alarm(fname, a, body, text=text)))
        elif k == "apigw_5xx":
            period = cw_period(a)
            api = dims(ApiId=Ref(API), Stage=STAGE)
            metrics = [
                query("requests", "AWS/ApiGateway", "Count", api, period, "Sum"),
                query("errors", "AWS/ApiGateway", a["metric"], api, period, a["statistic"]),
                expression("ratio", f"API Gateway 5xx ratio ({period // 60} min)",
                           Sub(f"IF({guard('FILL(requests, 0)')}, FILL(errors, 0) / requests, 0)", block=True)),
            ]
            out.append((f"{name}: AWS/ApiGateway 5xx / Count of the API {sig} over {period} s, "
                        f"with >= {MIN_REQUESTS_PARAM} requests", f"{name}Alarm", alarm(name, a, {"Metrics": metrics})))
        elif k == "drift_missing":
            period = FindInMap(*DRIFT_PERIOD)
            metrics = [query(f"n_{f}", ns, a["metric"], emf(doc, feature=f), period, a["statistic"]) for f in a["features"]]
            ids = ", ".join(f"n_{f}" for f in a["features"])
            metrics.append(expression("samples", "PSI samples, the most of any feature", f"MAX([{ids}])"))
            out.append((f"{name}: no {a['metric']} sample in {cw['evaluations']} consecutive drift schedule periods "
                        "(missing data breaches)", f"{name}Alarm", alarm(name, a, {"Metrics": metrics})))
    return out


def render_cloudwatch_block(doc) -> str:
    lines = [BEGIN,
             "  # One alarm per alert of infra/slo.yaml (metric names, dimensions: infra/METRICS.md).",
             "  # CloudWatch evaluates every minute over a sliding window, so Period is the measurement",
             "  # window (PromQL's range); it has no `for`: N consecutive periods instead. Ratio and",
             "  # percentile alarms only look at windows with >= AlarmMinRequests GET /recommend",
             "  # requests (IF(...) in the expression), and only GET /recommend counts, so the health",
             "  # canary's /healthz traffic stays out of the SLO numbers."]
    for comment, logical, resource in render_cloudwatch(doc):
        lines.append("")
        lines.append(f"  # {comment}")
        for ln in dump({logical: resource}).rstrip("\n").split("\n"):
            lines.append("  " + ln if ln else ln)
    lines.append(END)
    return "\n".join(lines) + "\n"


def splice(template_text: str, block: str) -> str:
    begin = template_text.find(BEGIN + "\n")
    end = template_text.find(END + "\n")
    if begin < 0 or end < begin:
        raise SloError(f"{TEMPLATE.name}: marker lines not found (they must be exactly:\n{BEGIN}\n{END})")
    return template_text[:begin] + block + template_text[end + len(END) + 1:]


# --------------------------------------------------------------------------- Prometheus
def rec_requests(w):
    return f"movie_recs:slo_requests:increase{w}"


def rec_ratio(w):
    return f"movie_recs:slo_errors_per_request:ratio_rate{w}"


def prom_guard(doc, w):
    return f"and on() {rec_requests(w)} >= {doc['min_requests']}"


def recording_windows(doc) -> list[str]:
    ws = set()
    for a in doc["alerts"].values():
        if "prometheus" not in a["targets"]:
            continue
        if a["kind"] in ("latency", "error_ratio", "availability"):
            ws.add(a["window"])
        elif a["kind"] == "burn_rate":
            for w in a["windows"]:
                ws |= {w["long"], w["short"]}
    return sorted(ws, key=seconds)


def prom_expr(doc, name, a) -> str:
    k, thr = a["kind"], a.get("threshold")
    w = a.get("window")
    sel = 'endpoint="recommend"'
    if k == "latency":
        q = fmt(float(a["statistic"][1:]) / 100)
        return (f"histogram_quantile({q},\n"
                f"  sum by (le) (rate({a['metric']}_bucket{{{sel}}}[{w}]))\n"
                f") {a['op']} {fmt(thr)}\n{prom_guard(doc, w)}\n")
    if k == "error_ratio":
        return f"{rec_ratio(w)} {a['op']} {fmt(thr)}\n{prom_guard(doc, w)}\n"
    if k == "availability":
        return f"(1 - {rec_ratio(w)}) {a['op']} {fmt(thr)}\n{prom_guard(doc, w)}\n"
    if k == "burn_rate":
        branches = []
        for p in a["windows"]:
            t = fmt(burn_threshold(doc, p["factor"]))
            branches.append(f"(\n  {rec_ratio(p['long'])} > {t}\n  and {rec_ratio(p['short'])} > {t}\n"
                            f"  {prom_guard(doc, p['long'])}\n)")
        return "\nor\n".join(branches) + "\n"
    if k == "error_count":
        return f"sum(increase({a['metric']}{{error_type=\"{a['error_type']}\"}}[{w}])) {a['op']} {fmt(thr)}\n"
    if k == "drift_psi":
        return f"{a['metric']} {a['op']} {fmt(thr)}\n"
    if k == "service_down":
        job = doc["prometheus_job"]
        return (f'up{{job="{job}"}} == 0\nor service_health_status{{job="{job}"}} == 0\n'
                f'or absent(up{{job="{job}"}})\n')
    raise SloError(f"alert {name}: kind {k} has no Prometheus rendering (set targets: [cloudwatch])")


# Recording rules by the version that answered and the user's rollout variant.
BY_VERSION_RULES = {
    "movie_recs:by_version:requests_rate5m":
        'sum by (version, variant, status) (rate(recommend_requests_total{endpoint="recommend",version!=""}[5m]))',
    "movie_recs:by_version:latency_p95_5m":
        'histogram_quantile(0.95, sum by (le, version) '
        '(rate(recommend_latency_seconds_bucket{endpoint="recommend",version!=""}[5m])))',
}


def render_prometheus(doc) -> str:
    recording = []
    for w in recording_windows(doc):
        recording.append({"record": rec_requests(w),
                          "expr": f'sum(increase(recommend_requests_total{{endpoint="recommend"}}[{w}]))'})
        recording.append({"record": rec_ratio(w), "expr": Literal(
            f'sum(rate(recommend_requests_total{{endpoint="recommend",status=~"5.."}}[{w}]))\n/\n'
            f'sum(rate(recommend_requests_total{{endpoint="recommend"}}[{w}]))\n')})
    # Per-version views (dashboards, comparing a canary with its primary); no alert
    # reads them: the alerts aggregate over versions.
    for record, expr in BY_VERSION_RULES.items():
        recording.append({"record": record, "expr": expr})
    alerts, comments = [], {}
    for name, a in doc["alerts"].items():
        if "prometheus" not in a["targets"]:
            continue
        rule = {"alert": name, "expr": Literal(prom_expr(doc, name, a)), "for": a["for"],
                "labels": {"severity": a["severity"], "service": doc["service"], **a.get("labels", {})},
                "annotations": {"summary": a["summary"],
                                "description": a.get("description_prometheus", a["description"]),
                                "runbook_url": f"{doc['runbook']}#{a['runbook']}"}}
        alerts.append(rule)
        comments[name] = f"{a['severity']}: {a['summary']}"
    # One group: its rules run in order, so every alert reads recordings of the same
    # evaluation (two groups run in no fixed order, and an alert could read the last round's).
    groups = {"groups": [{"name": "movie_recs_slo", "rules": recording + alerts}]}
    header = [
        "# GENERATED by `python3 infra/gen_alerts.py` from infra/slo.yaml - edit that file, not this one",
        "# (`python3 infra/gen_alerts.py --check` fails when this file is stale).",
        "#",
        "# Rules for `recs serve` scraped by infra/prometheus/prometheus.yml (or infra/observe.sh).",
        "# Each alert has a CloudWatch twin in infra/template.yaml with the same meaning;",
        "# infra/prometheus/alert_rules_test.yml shows each one quiet just below its threshold and",
        "# firing just above it.",
        "#",
        "# Conventions:",
        "#  * The SLO numbers count GET /recommend only (endpoint=\"recommend\"): scrapes, /healthz",
        "#    pollers and admin calls are not the product's traffic.",
        "#  * Error ratio = 5xx / all; availability = 1 - error ratio = non-5xx / all. 4xx are the",
        "#    client's error (bad input is a 4xx by contract) and do not burn the budget.",
        "#  * Ratio and percentile alerts need at least min_requests requests in their window",
        f"#    (`and on() movie_recs:slo_requests:increase<w> >= {doc['min_requests']}`); no traffic is not an outage.",
        "#  * movie_recs:slo_errors_per_request:ratio_rate<w> and movie_recs:slo_requests:increase<w>",
        "#    are the recording rules every ratio alert and the burn-rate alerts read.",
        "#  * No group sets `interval`: the global evaluation_interval (30s in prometheus.yml)",
        "#    applies, so the promtool tests can evaluate the multi-day burn-rate alerts coarser.",
    ]
    body = dump(groups, one_line=True)
    out = []
    for ln in body.split("\n"):
        m = re.match(r"^(\s*)- (alert|record): (\S+)$", ln)
        if m and m.group(2) == "alert":
            out.append("")
            out.append(f"{m.group(1)}# {m.group(3)} ({comments[m.group(3)]})")
        out.append(ln)
    return "\n".join(header) + "\n" + "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- main
def generate(doc) -> dict[pathlib.Path, str]:
    return {TEMPLATE: splice(TEMPLATE.read_text(), render_cloudwatch_block(doc)), RULES: render_prometheus(doc)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff when a file is stale")
    ap.add_argument("--scale", type=float, help="divide every Prometheus window and `for` by this (needs --out)")
    ap.add_argument("--out", type=pathlib.Path, help="with --scale: where the test copy of the rules goes")
    args = ap.parse_args(argv)
    if args.scale is not None or args.out is not None:
        if args.scale is None or args.out is None or args.check:
            ap.error("--scale and --out go together, without --check")
        if args.out.resolve() == RULES.resolve():
            ap.error(f"--out {args.out}: a scaled copy never replaces the committed {RULES.name}")
        try:
            text = render_prometheus(scaled(load(), args.scale))
        except (SloError, KeyError, TypeError, ValueError) as e:
            print(f"gen_alerts.py: {e}", file=sys.stderr)
            return 2
        header = f"# TEST COPY: every window and `for` of infra/slo.yaml divided by {num(args.scale)}\n"
        args.out.write_text(header + text)
        print(f"gen_alerts.py: wrote {args.out} (windows / {num(args.scale)})")
        return 0
    try:
        outputs = generate(load())
    except (SloError, KeyError, TypeError, ValueError) as e:
        print(f"gen_alerts.py: {e}", file=sys.stderr)
        return 2
    stale = []
    for path, text in outputs.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        stale.append(path)
        if args.check:
            rel = path.relative_to(INFRA.parent)
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                       f"{rel} (committed)", f"{rel} (generated)"))
        else:
            path.write_text(text)
    names = ", ".join(str(p.relative_to(INFRA.parent)) for p in outputs)
    if args.check:
        if stale:
            print(f"gen_alerts.py --check: {len(stale)} file(s) differ from infra/slo.yaml; "
                  "run `python3 infra/gen_alerts.py`", file=sys.stderr)
            return 1
        print(f"gen_alerts.py --check: {names} match infra/slo.yaml")
        return 0
    print(f"gen_alerts.py: {'wrote ' + ', '.join(p.name for p in stale) if stale else 'up to date'} ({names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

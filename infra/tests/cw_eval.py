#!/usr/bin/env python3
"""A small CloudWatch alarm evaluator for the drills: EMF lines in, alarm states out.

    python3 infra/tests/cw_eval.py SCENARIOS.json [--template infra/template.yaml]

SCENARIOS.json: {"alarm": "HighErrorRate",
                 "scenarios": {"healthy": {"start_ms": T0, "at_ms": [300000, ...],
                                           "lines": ["<EMF JSON>", ...],
                                           "canary": [[t_ms, success_percent], ...]}, ...}}

The alarm is found in the template by its AlarmName (`${AWS::StackName}-<alarm>`); its
metrics, statistics, periods, dimensions, expression, threshold, comparison, evaluation
periods, datapoints to alarm and TreatMissingData are all read from there, and a composite
alarm's AlarmRule (ALARM("${X}") AND / OR) is evaluated over the alarms it names. Every
EMF line becomes datapoints the way CloudWatch Logs extracts them: one metric per name
and dimension set of `_aws.CloudWatchMetrics`, at `_aws.Timestamp`.

The state is evaluated at each time start_ms + at_ms (in order, so `ignore` can keep the
previous state), over the windows [T - (i+1) x Period, T - i x Period) for i < EvaluationPeriods, and
printed as JSON: {"healthy": ["OK", "OK", ...], ...}.

Limits (this is test code, not CloudWatch):
  * percentiles are exact (nearest rank over every sample); CloudWatch's are approximate
    (it keeps a sketch of the distribution), so results within about 1% of a threshold
    may differ from AWS;
  * metric math: only what the generated alarms use - IF, FILL(x, v), MAX([...]),
    + - * /, comparisons, AND/OR, ${Parameter} substituted with the parameter's default;
  * windows slide with the evaluation time and are not aligned to the period, and a
    period longer than the drill (1 h, 1 d, 3 d) sees only the drill's samples;
  * missing data: with every datapoint of the evaluation range missing, breaching -> ALARM,
    notBreaching -> OK, ignore -> the previous state, missing -> INSUFFICIENT_DATA; otherwise
    missing datapoints count as TreatMissingData says and the others are compared (AWS
    also looks further back for `ignore`/`missing`, which this does not);
  * metrics no EMF line writes (AWS/ApiGateway, AWS/Lambda) are missing data, and the
    canary's CloudWatchSynthetics SuccessPercent comes from the scenario's "canary" list
    (the drill derives it from the health handler's status).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys

import yaml

INFRA = pathlib.Path(__file__).resolve().parents[1]


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from emf_contract import CfnLoader  # noqa: E402  (the same reading of !Ref, !Sub, ...)


def text(v) -> str:
    return v["Fn::Sub"] if isinstance(v, dict) and "Fn::Sub" in v else str(v)


def plain_dims(dims) -> dict | None:
    """{name: value}, or None when a value is a CloudFormation reference (an AWS metric)."""
    out = {}
    for d in dims or []:
        if not isinstance(d["Value"], str):
            return None
        out[d["Name"]] = d["Value"]
    return out


# ------------------------------------------------------------------ EMF -> datapoints
def datapoints(lines, canary) -> dict:
    """{(namespace, metric, frozenset(dims)): [(t_ms, value), ...]}"""
    out: dict = {}
    for line in lines:
        doc = json.loads(line)
        aws = doc["_aws"]
        t = aws["Timestamp"]
        for directive in aws["CloudWatchMetrics"]:
            for dimset in directive["Dimensions"]:
                dims = frozenset((k, str(doc[k])) for k in dimset)
                for m in directive["Metrics"]:
                    v = doc[m["Name"]]
                    for x in (v if isinstance(v, list) else [v]):
                        out.setdefault((directive["Namespace"], m["Name"], dims), []).append((t, float(x)))
    for t, v in canary or []:
        out.setdefault(("CloudWatchSynthetics", "SuccessPercent", None), []).append((t, float(v)))
    return out


def statistic(stat: str, xs: list[float]):
    if not xs:
        return None
    if stat == "Sum":
        return sum(xs)
    if stat == "Maximum":
        return max(xs)
    if stat == "Minimum":
        return min(xs)
    if stat == "SampleCount":
        return float(len(xs))
    if stat == "Average":
        return sum(xs) / len(xs)
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
    if m:
        s = sorted(xs)
        return s[max(0, math.ceil(float(m.group(1)) / 100 * len(s)) - 1)]
    raise ValueError(f"statistic {stat} not supported")


def metric_value(points, namespace, name, dims, stat, lo, hi):
    if namespace == "CloudWatchSynthetics":
        key = (namespace, name, None)
    elif dims is None:
        return None                     # an AWS metric with a referenced dimension: no EMF writes it
    else:
        key = (namespace, name, frozenset(dims.items()))
    return statistic(stat, [v for t, v in points.get(key, []) if lo <= t < hi])


# ------------------------------------------------------------------ metric math (a subset)
def fill(x, v):
    return v if x is None else x


def cw_max(xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


def cw_if(c, a, b):
    if c is None:
        return None
    return a if c else b


class N:
    """A number that may be missing (None): arithmetic on a missing value is missing."""

    def __init__(self, v):
        self.v = v.v if isinstance(v, N) else v

    def _op(self, o, f):
        o = o.v if isinstance(o, N) else o
        return N(None if self.v is None or o is None else f(self.v, o))

    __add__ = lambda s, o: s._op(o, lambda a, b: a + b)  # noqa: E731
    __radd__ = lambda s, o: N(o)._op(s, lambda a, b: a + b)  # noqa: E731
    __sub__ = lambda s, o: s._op(o, lambda a, b: a - b)  # noqa: E731
    __rsub__ = lambda s, o: N(o)._op(s, lambda a, b: a - b)  # noqa: E731
    __mul__ = lambda s, o: s._op(o, lambda a, b: a * b)  # noqa: E731
    __rmul__ = lambda s, o: N(o)._op(s, lambda a, b: a * b)  # noqa: E731
    __truediv__ = lambda s, o: s._op(o, lambda a, b: a / b if b else None)  # noqa: E731
    __rtruediv__ = lambda s, o: N(o)._op(s, lambda a, b: a / b if b else None)  # noqa: E731
    __ge__ = lambda s, o: s._op(o, lambda a, b: a >= b)  # noqa: E731
    __gt__ = lambda s, o: s._op(o, lambda a, b: a > b)  # noqa: E731
    __le__ = lambda s, o: s._op(o, lambda a, b: a <= b)  # noqa: E731
    __lt__ = lambda s, o: s._op(o, lambda a, b: a < b)  # noqa: E731


def math_eval(expr: str, values: dict, params: dict):
    expr = re.sub(r"\$\{(\w+)\}", lambda m: repr(float(params[m.group(1)])), expr)
    if re.search(r"[^\w\s\[\](),.+\-*/<>=!]", expr):
        raise ValueError(f"expression {expr!r}: outside the supported subset")
    names = {k: N(v) for k, v in values.items()}
    env = {"FILL": lambda x, v: N(fill(N(x).v, v)), "MAX": lambda xs: N(cw_max([N(x).v for x in xs])),
           "IF": lambda c, a, b: N(cw_if(N(c).v, N(a).v, N(b).v)), "__builtins__": {}}
    return N(eval(expr, env, names)).v  # noqa: S307 - the template's own expression, subset-checked


# ------------------------------------------------------------------ alarms
class Evaluator:
    def __init__(self, template: dict):
        self.res = template["Resources"]
        self.params = {k: v.get("Default") for k, v in (template.get("Parameters") or {}).items()}
        self.params["AWS::StackName"] = "drill"

    def find(self, name: str) -> str:
        for logical, r in self.res.items():
            if r.get("Type", "").startswith("AWS::CloudWatch::") and "Alarm" in r["Type"]:
                if text(r["Properties"].get("AlarmName")).endswith("-" + name):
                    return logical
        raise KeyError(f"no alarm named ${{AWS::StackName}}-{name} in the template")

    def datapoint(self, p: dict, points, lo, hi):
        if "Metrics" in p:
            values, out = {}, None
            for q in p["Metrics"]:
                if "MetricStat" in q:
                    ms = q["MetricStat"]
                    m = ms["Metric"]
                    values[q["Id"]] = metric_value(points, m["Namespace"], m["MetricName"], plain_dims(m.get("Dimensions")),
                                                   ms["Stat"], hi - ms["Period"] * 1000, hi)
            for q in p["Metrics"]:
                if "Expression" in q:
                    values[q["Id"]] = math_eval(text(q["Expression"]), values, self.params)
                    if q.get("ReturnData", True):
                        out = values[q["Id"]]
            return out
        return metric_value(points, p["Namespace"], p["MetricName"], plain_dims(p.get("Dimensions")),
                            p["Statistic"], lo, hi)

    def period(self, p: dict) -> int:
        if "Period" in p:
            return int(p["Period"])
        return max(int(q["MetricStat"]["Period"]) for q in p["Metrics"] if "MetricStat" in q)

    def state(self, logical: str, points, t: int, prev: dict) -> str:
        r = self.res[logical]
        p = r["Properties"]
        if r["Type"] == "AWS::CloudWatch::CompositeAlarm":
            rule = text(p["AlarmRule"])
            rule = re.sub(r'ALARM\("\$\{(\w+)\}"\)',
                          lambda m: repr(self.state(m.group(1), points, t, prev) == "ALARM"), rule)
            rule = rule.replace(" AND ", " and ").replace(" OR ", " or ")
            if re.search(r"[^\w\s()]", rule):
                raise ValueError(f"AlarmRule {rule!r}: outside the supported subset")
            s = "ALARM" if eval(rule, {"__builtins__": {}}) else "OK"  # noqa: S307
            prev[logical] = s
            return s
        period = self.period(p) * 1000
        n, m = int(p["EvaluationPeriods"]), int(p.get("DatapointsToAlarm", p["EvaluationPeriods"]))
        thr, op, missing = float(p["Threshold"]), p["ComparisonOperator"], p.get("TreatMissingData", "missing")
        cmp = {"GreaterThanThreshold": lambda x: x > thr, "GreaterThanOrEqualToThreshold": lambda x: x >= thr,
               "LessThanThreshold": lambda x: x < thr, "LessThanOrEqualToThreshold": lambda x: x <= thr}[op]
        dps = [self.datapoint(p, points, t - (i + 1) * period, t - i * period) for i in range(n)]
        if all(d is None for d in dps):
            s = {"breaching": "ALARM", "notBreaching": "OK", "missing": "INSUFFICIENT_DATA"}.get(
                missing, prev.get(logical, "INSUFFICIENT_DATA"))
        else:
            breaching = sum(1 for d in dps if (missing == "breaching") if d is None) + sum(1 for d in dps if d is not None and cmp(d))
            s = "ALARM" if breaching >= m else "OK"
        prev[logical] = s
        return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenarios", type=pathlib.Path)
    ap.add_argument("--template", type=pathlib.Path, default=INFRA / "template.yaml")
    args = ap.parse_args(argv)
    spec = json.loads(args.scenarios.read_text())
    ev = Evaluator(yaml.load(args.template.read_text(), Loader=CfnLoader))
    logical = ev.find(spec["alarm"])
    out = {}
    for name, sc in spec["scenarios"].items():
        points = datapoints(sc.get("lines", []), sc.get("canary"))
        prev: dict = {}
        out[name] = [ev.state(logical, points, sc["start_ms"] + int(at), prev) for at in sc["at_ms"]]
    print(json.dumps({"alarm": spec["alarm"], "logical_id": logical, "states": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

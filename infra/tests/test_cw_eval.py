#!/usr/bin/env python3
"""Checks of the drills' CloudWatch evaluator (cw_eval.py) on hand-made alarms and EMF
lines whose states are worked out by hand here (CloudWatch's documented semantics:
N evaluation periods, M datapoints to alarm, TreatMissingData, composite AND/OR).

    python3 infra/tests/test_cw_eval.py
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cw_eval  # noqa: E402

T0 = 1_767_225_600_000
MIN = 60_000


def line(t, **values):
    dims = {"service": "movie-recs", "endpoint": "recommend"}
    doc = {"_aws": {"Timestamp": t, "CloudWatchMetrics": [{
        "Namespace": "MovieRecs", "Dimensions": [list(dims)],
        "Metrics": [{"Name": k, "Unit": "None"} for k in values]}]}, **dims, **values}
    return json.dumps(doc)


def dim(**kv):
    return [{"Name": k, "Value": v} for k, v in kv.items()]


TEMPLATE = {
    "Parameters": {"MinReq": {"Default": 3}},
    "Resources": {
        "Simple": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmName": {"Fn::Sub": "${AWS::StackName}-Simple"}, "Namespace": "MovieRecs", "MetricName": "lat",
            "Dimensions": dim(service="movie-recs", endpoint="recommend"), "Statistic": "p90", "Period": 60,
            "EvaluationPeriods": 2, "DatapointsToAlarm": 2, "Threshold": 0.5,
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching"}},
        "Ratio": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmName": {"Fn::Sub": "${AWS::StackName}-Ratio"},
            "Metrics": [
                {"Id": "n", "MetricStat": {"Metric": {"Namespace": "MovieRecs", "MetricName": "req",
                                                      "Dimensions": dim(service="movie-recs", endpoint="recommend")},
                                           "Period": 300, "Stat": "Sum"}, "ReturnData": False},
                {"Id": "e", "MetricStat": {"Metric": {"Namespace": "MovieRecs", "MetricName": "err",
                                                      "Dimensions": dim(service="movie-recs", endpoint="recommend")},
                                           "Period": 300, "Stat": "Sum"}, "ReturnData": False},
                {"Id": "r", "Expression": {"Fn::Sub": "IF(FILL(n, 0) >= ${MinReq}, FILL(e, 0) / n, 0)"}}],
            "EvaluationPeriods": 1, "Threshold": 0.1, "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "breaching"}},
        "Both": {"Type": "AWS::CloudWatch::CompositeAlarm", "Properties": {
            "AlarmName": {"Fn::Sub": "${AWS::StackName}-Both"},
            "AlarmRule": {"Fn::Sub": 'ALARM("${Simple}") AND ALARM("${Ratio}")'}}},
    },
}


def states(alarm, lines, at):
    ev = cw_eval.Evaluator(TEMPLATE)
    pts = cw_eval.datapoints(lines, None)
    prev = {}
    return [ev.state(ev.find(alarm), pts, T0 + a, prev) for a in at]


def main():
    failures = []

    def check(what, got, want):
        if got != want:
            failures.append(f"{what}: got {got}, want {want}")

    # p90 of 10 samples, nearest rank: the 9th smallest.
    slow = [line(T0 + m * MIN + i, lat=0.1 * (i + 1)) for m in range(2) for i in range(10)]   # p90 = 0.9
    fast = [line(T0 + m * MIN + i, lat=0.05 * (i + 1)) for m in range(2) for i in range(10)]  # p90 = 0.45
    check("p90 0.9 in 2 of 2 minutes", states("Simple", slow, [2 * MIN]), ["ALARM"])
    check("p90 0.45", states("Simple", fast, [2 * MIN]), ["OK"])
    check("one slow minute of two", states("Simple", slow[:10] + fast[10:], [2 * MIN]), ["OK"])
    check("no data, notBreaching", states("Simple", [], [2 * MIN]), ["OK"])
    # 1 error in 10 requests is 0.1 (not > 0.1); 2 in 10 is 0.2.
    reqs = [line(T0 + i, req=1) for i in range(10)]
    check("ratio 0.1", states("Ratio", reqs + [line(T0 + 20, err=1)], [5 * MIN]), ["OK"])
    check("ratio 0.2", states("Ratio", reqs + [line(T0 + 20, err=2)], [5 * MIN]), ["ALARM"])
    check("2 requests, guard", states("Ratio", reqs[:2] + [line(T0 + 20, err=2)], [5 * MIN]), ["OK"])
    # no sample in the window: FILL(n, 0) makes the expression 0, a datapoint, not missing
    check("out of the window", states("Ratio", reqs + [line(T0 + 20, err=2)], [11 * MIN]), ["OK"])
    check("composite AND", states("Both", slow + reqs + [line(T0 + 20, err=2)], [2 * MIN]), ["ALARM"])
    check("composite AND, one side", states("Both", fast + reqs + [line(T0 + 20, err=2)], [2 * MIN]), ["OK"])
    if failures:
        print("test_cw_eval: FAILED\n  " + "\n  ".join(failures))
        return 1
    print("test_cw_eval: 10 checks OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""EMF contract: every MovieRecs metric that template.yaml's alarms and dashboard read
is written by a function, with the same name, dimension set and values.

    python3 infra/tests/emf_contract.py LINES.jsonl [--template infra/template.yaml]

LINES.jsonl holds the EMF lines the functions' handlers printed (the e2e test
`tests/emf_contract.rs` writes it by running each handler over events/). The
template is read here, not copied: an alarm or widget added there without a
producer fails this check. Dimension values that are CloudFormation substitutions
(`${...}`) only need the key to match. Exit status 1 lists what nobody writes.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

NAMESPACE = "MovieRecs"


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that keeps CloudFormation short forms (!Ref, !Sub, ...) as data."""


def _cfn_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {"Fn::" + suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {"Fn::" + suffix: loader.construct_sequence(node, deep=True)}
    return {"Fn::" + suffix: loader.construct_mapping(node, deep=True)}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def alarm_refs(node, where="Resources"):
    """(metric, {dimension: value}, where) for every MovieRecs metric in alarms."""
    if isinstance(node, dict):
        if node.get("Namespace") == NAMESPACE and isinstance(node.get("MetricName"), str):
            dims = {}
            for d in node.get("Dimensions") or []:
                value = d.get("Value")
                dims[d["Name"]] = value if isinstance(value, str) else "${substituted}"
            yield node["MetricName"], dims, where
        for key, value in node.items():
            yield from alarm_refs(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from alarm_refs(value, f"{where}[{i}]")


def dashboard_refs(template):
    """The same for CloudWatch dashboard widgets: ["MovieRecs", name, k, v, ..., {opts}]."""
    for name, res in (template.get("Resources") or {}).items():
        if res.get("Type") != "AWS::CloudWatch::Dashboard":
            continue
        body = res["Properties"]["DashboardBody"]
        if isinstance(body, dict):  # !Sub "..." or !Sub ["...", {...}]
            body = body.get("Fn::Sub", "")
            if isinstance(body, list):
                body = body[0]
        for m in re.finditer(r'\[\s*"MovieRecs"\s*,([^\[\]{}]*)', body):
            parts = [p.strip().strip('"') for p in m.group(1).split(",") if p.strip()]
            metric, rest = parts[0], parts[1:]
            dims = dict(zip(rest[0::2], rest[1::2]))
            yield metric, dims, f"{name} (dashboard)"


def emitted(lines):
    """(metric, {dimension: value}) for every metric and dimension set the lines carry."""
    out = set()
    for line in lines:
        doc = json.loads(line)
        for d in doc["_aws"]["CloudWatchMetrics"]:
            if d["Namespace"] != NAMESPACE:
                continue
            for metric in d["Metrics"]:
                for keys in d["Dimensions"]:
                    dims = tuple(sorted((k, str(doc.get(k))) for k in keys))
                    out.add((metric["Name"], dims))
    return out


def satisfied(ref_metric, ref_dims, produced):
    for metric, dims in produced:
        if metric != ref_metric or {k for k, _ in dims} != set(ref_dims):
            continue
        values = dict(dims)
        if all("${" in v or values[k] == v for k, v in ref_dims.items()):
            return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lines")
    ap.add_argument("--template", default=str(Path(__file__).resolve().parents[1] / "template.yaml"))
    a = ap.parse_args()
    template = yaml.load(Path(a.template).read_text(), Loader=CfnLoader)
    lines = [l for l in Path(a.lines).read_text().splitlines() if l.strip()]
    produced = emitted(lines)
    refs = list(alarm_refs(template.get("Resources") or {})) + list(dashboard_refs(template))
    if not refs:
        print("emf_contract: the template references no MovieRecs metric (parser broken?)")
        return 1
    missing = []
    seen = set()
    for metric, dims, where in refs:
        key = (metric, tuple(sorted(dims.items())))
        if key in seen:
            continue
        seen.add(key)
        if not satisfied(metric, dims, produced):
            missing.append(f"  {metric} {dims}  (read by {where})")
    if missing:
        print(f"emf_contract: {len(missing)} metric references that no function writes:")
        print("\n".join(missing))
        print("produced:", sorted(produced))
        return 1
    print(f"emf_contract: OK - {len(seen)} distinct metric references in the template, all written "
          f"by the functions ({len(lines)} EMF lines checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

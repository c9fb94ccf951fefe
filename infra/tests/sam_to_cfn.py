#!/usr/bin/env python3
"""Translates infra/template.yaml (SAM) into plain CloudFormation JSON, offline.

    AWS_DEFAULT_REGION=us-east-1 python3 infra/tests/sam_to_cfn.py [--template T] --out FILE

What `sam deploy` does with the `AWS::Serverless-2016-10-31` transform, without AWS:
aws-sam-translator (installed with cfn-lint) turns each AWS::Serverless::Function into
the AWS::Lambda::Function, permissions, EventBridge rules and EventInvokeConfig it stands
for, so that checkov (infra/lint.sh) checks the resources CloudFormation will create.

* No credentials: SAM's ManagedPolicyLoader lists AWS managed policies through IAM to
  resolve policy names; this template names none (every function has an explicit Role),
  so a loader that returns an empty map replaces it. A managed policy named by name would
  make the translation fail here rather than call AWS.
* Metadata is passed through (passthrough_metadata): the `checkov: skip:` entries written
  on a SAM function land on every resource generated from it, which is where checkov reads
  them.
* Parameters without a default get placeholder values, and each local CodeUri
  (../target/lambda/<name>/) becomes s3://<placeholder>/<name>.zip, what `sam deploy`
  uploads it as (cfn-lint does the same): only the translation sees these.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

INFRA = pathlib.Path(__file__).resolve().parent.parent

# Values for the parameters that have no Default, so the transform can run.
PLACEHOLDERS = {"RegistryBucket": "example-registry-bucket", "AlarmEmail": "none"}


class NoAwsPolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader (which calls iam:ListPolicies)."""

    def load(self) -> dict:
        return {}


def translate(template_path: pathlib.Path) -> dict:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        from cfnlint.decode import cfn_yaml
        from samtranslator.translator.transform import transform
    except ImportError as e:  # pragma: no cover
        sys.exit(f"sam_to_cfn.py: {e} - install cfn-lint (it brings aws-sam-translator)")
    tpl = cfn_yaml.load(str(template_path))
    # cfn-lint's loader returns str/dict subclasses that carry line numbers; plain JSON
    # types keep the translator and json.dump simple.
    tpl = json.loads(json.dumps(tpl))
    for res in (tpl.get("Resources") or {}).values():
        props = res.get("Properties") or {}
        uri = props.get("CodeUri")
        if res.get("Type") == "AWS::Serverless::Function" and isinstance(uri, str) and not uri.startswith("s3://"):
            props["CodeUri"] = f"s3://example-artifacts-bucket/{pathlib.PurePosixPath(uri).name}.zip"
    params = {k: v for k, v in PLACEHOLDERS.items()
              if "Default" not in (tpl.get("Parameters", {}).get(k) or {})}
    return transform(tpl, params, NoAwsPolicyLoader(), passthrough_metadata=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", type=pathlib.Path, default=INFRA / "template.yaml")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args(argv)
    try:
        cfn = translate(args.template)
    except Exception as e:  # the translator's InvalidDocumentException lists every cause
        causes = getattr(e, "causes", None) or []
        print(f"sam_to_cfn.py: the SAM transform failed: {e}", file=sys.stderr)
        for c in causes:
            print(f"  - {getattr(c, 'message', c)}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(cfn, indent=1, sort_keys=True))
    print(f"sam_to_cfn.py: {len(cfn.get('Resources', {}))} CloudFormation resources -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

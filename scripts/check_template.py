#!/usr/bin/env python3
"""Offline template checks.

1. Translates the SAM template to plain CloudFormation with aws-sam-translator (no AWS
   account: a fixed region, a stand-in managed-policy loader, s3:// placeholders for the
   local CodeUri), because cfn-lint alone no longer applies the SAM transform and lets broken
   AWS::Serverless properties through.
2. Writes the translation to the given output path for cfn-lint to check.
"""
import copy
import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class StandInPolicyLoader:
    """The translator only asks for AWS managed policy ARNs by name; o2c uses inline statements."""

    def load(self):
        return {}


def main(template_path: str, out_path: str) -> int:
    with open(template_path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    t = copy.deepcopy(template)
    # Local CodeUri (`..`) → an S3 placeholder, as `sam package` would produce.
    globals_fn = t.get("Globals", {}).get("Function", {})
    if "CodeUri" in globals_fn:
        globals_fn["CodeUri"] = "s3://o2c-placeholder-bucket/o2c.zip"
    for res in t["Resources"].values():
        if res.get("Type") == "AWS::Serverless::Function" and "CodeUri" in res.get("Properties", {}):
            res["Properties"]["CodeUri"] = "s3://o2c-placeholder-bucket/o2c.zip"
    params = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
    # The translator reads the region from a boto3 session: fix it so no AWS config is needed.
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    translated = transform(t, params, StandInPolicyLoader())
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(translated, f, indent=1)
    functions = [k for k, v in translated["Resources"].items() if v["Type"] == "AWS::Lambda::Function"]
    mappings = [k for k, v in translated["Resources"].items() if v["Type"] == "AWS::Lambda::EventSourceMapping"]
    print(f"translated {template_path}: {len(translated['Resources'])} resources, {len(functions)} functions, {len(mappings)} event source mappings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

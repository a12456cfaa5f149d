#!/usr/bin/env python3
"""Expand template.yaml with the SAM translator, lint the result with cfn-lint, check invariants.

cfn-lint only merges SAM Globals and validates SAM resources against SAM's own schema; it never
sees the CloudFormation that SAM generates (roles, permissions, the REST API body, event source
mappings). This script runs the real transform offline and lints that output, so mistakes inside
SAM resources (a bad policy-template argument, a broken generated integration) fail CI too.

Offline by construction:
- local CodeUri/ContentUri/DefinitionUri paths become dummy s3:// URIs (the translator only
  accepts S3 locations; `sam build`/`sam package` normally do this rewrite);
- the managed-policy map is empty and no AWS call is made: the template uses only SAM policy
  templates, and the translator's bundled map covers well-known AWS managed policies;
- the region (pseudo parameters) comes from --region, not from an AWS profile.

Exit status: 0 clean; 1 translation error, invariant violation, or cfn-lint errors/warnings.

Usage: .venv/bin/python tools/expand_template.py [--template template.yaml]
       [--output build/template.expanded.json] [--region us-east-1] [--no-lint]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Which property of which SAM resource type may point at a local path.
LOCAL_URI_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::Api": "DefinitionUri",
    "AWS::Serverless::HttpApi": "DefinitionUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}
GLOBALS_URI_PROPERTIES = {"Function": "CodeUri", "Api": "DefinitionUri", "HttpApi": "DefinitionUri"}

# Linter skips declared on a SAM resource (Metadata.checkov / Metadata.cfn-lint, each with its
# justification in template.yaml). SAM passes a resource's Metadata to at most one of the resources
# it generates (the API's goes to the RestApi, not the Stage), so the expanded template carries them
# onto every resource generated from it: generated logical ids start with the SAM logical id.
LINTER_METADATA_KEYS = ("checkov", "cfn-lint")
CFN_LINT_SERVERLESS_RULES = "cfn_lint_serverless.rules"  # cfn-lint-serverless (requirements-dev.txt)

STREAMING_URI_MARKER = "/response-streaming-invocations"
INTEGRATION_KEY = "x-amazon-apigateway-integration"


class CheckFailed(Exception):
    pass


def load_sam_template(path: Path) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse  # handles !Ref, !Sub, !GetAtt short forms

    return yaml_parse(path.read_text())


def _is_local(value: Any) -> bool:
    return isinstance(value, str) and not value.startswith("s3://")


def rewrite_local_uris(template: dict[str, Any]) -> list[str]:
    """Replace local code/definition paths by dummy S3 URIs, in place. Returns what was rewritten."""
    rewritten = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        prop = LOCAL_URI_PROPERTIES.get(resource.get("Type", ""))
        props = resource.get("Properties") or {}
        if prop and _is_local(props.get(prop)):
            rewritten.append(f"{logical_id}.{prop}={props[prop]}")
            props[prop] = f"s3://dummy-bucket/{logical_id}.zip"
    for section, prop in GLOBALS_URI_PROPERTIES.items():
        glob = (template.get("Globals") or {}).get(section) or {}
        if _is_local(glob.get(prop)):
            rewritten.append(f"Globals.{section}.{prop}={glob[prop]}")
            glob[prop] = f"s3://dummy-bucket/globals-{section}.zip"
    return rewritten


def translate(template: dict[str, Any], region: str) -> dict[str, Any]:
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    session = boto3.session.Session(region_name=region)
    translator = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session)
    try:
        return translator.translate(template, parameter_values={})
    except InvalidDocumentException as exc:
        causes = "\n".join(f"  - {cause.message}" for cause in exc.causes)
        raise CheckFailed(f"SAM translation failed:\n{causes}") from exc


def carry_linter_metadata(sam: dict[str, Any], cfn: dict[str, Any]) -> list[str]:
    """Copy each SAM resource's linter skips onto the resources generated from it, in place."""
    sam_resources = sam.get("Resources") or {}
    owners = sorted(
        (lid for lid, res in sam_resources.items() if str(res.get("Type", "")).startswith("AWS::Serverless::")),
        key=len,
        reverse=True,
    )
    carried = []
    for logical_id, resource in cfn["Resources"].items():
        if logical_id in sam_resources:
            owner = logical_id if logical_id in owners else None
        else:
            owner = next((o for o in owners if logical_id.startswith(o)), None)
        if owner is None:
            continue
        meta = {k: v for k, v in (sam_resources[owner].get("Metadata") or {}).items() if k in LINTER_METADATA_KEYS}
        if meta:
            resource.setdefault("Metadata", {}).update(json.loads(json.dumps(meta)))
            carried.append(f"{owner}->{logical_id}")
    return carried


def _resources_of_type(cfn: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v.get("Type") == rtype}


def _function_timeouts(sam: dict[str, Any]) -> dict[str, int]:
    default = ((sam.get("Globals") or {}).get("Function") or {}).get("Timeout", 3)
    return {
        logical_id: int((res.get("Properties") or {}).get("Timeout", default))
        for logical_id, res in sam["Resources"].items()
        if res.get("Type") == "AWS::Serverless::Function"
    }


def check_invariants(sam: dict[str, Any], cfn: dict[str, Any]) -> list[str]:
    """Assert what the design depends on. Returns human-readable confirmations."""
    notes: list[str] = []
    timeouts = _function_timeouts(sam)

    # 1. Every REST API method is a Lambda proxy integration in response-streaming mode.
    rest_apis = _resources_of_type(cfn, "AWS::ApiGateway::RestApi")
    if not rest_apis:
        raise CheckFailed("no AWS::ApiGateway::RestApi in the expanded template")
    for api_id, api in rest_apis.items():
        paths = (api["Properties"].get("Body") or {}).get("paths") or {}
        if not paths:
            raise CheckFailed(f"{api_id}: generated OpenAPI body has no paths")
        for path, methods in paths.items():
            for method, op in methods.items():
                where = f"{api_id} {method.upper()} {path}"
                integ = op.get(INTEGRATION_KEY)
                if not integ:
                    raise CheckFailed(f"{where}: no {INTEGRATION_KEY}")
                uri = json.dumps(integ.get("uri"))
                if integ.get("type") != "aws_proxy" or STREAMING_URI_MARKER not in uri:
                    raise CheckFailed(f"{where}: not an aws_proxy {STREAMING_URI_MARKER} integration: {uri}")
                mode = integ.get("responseTransferMode")
                if mode != "STREAM":
                    raise CheckFailed(f"{where}: responseTransferMode is {mode!r}, expected 'STREAM'")
                timeout_ms = integ.get("timeoutInMillis")
                if timeout_ms is not None:
                    fn = next((f for f in timeouts if f in uri), None)
                    if not 50 <= int(timeout_ms) <= 900_000:
                        raise CheckFailed(f"{where}: timeoutInMillis {timeout_ms} outside 50..900000")
                    if fn and int(timeout_ms) > timeouts[fn] * 1000:
                        raise CheckFailed(
                            f"{where}: integration timeout {timeout_ms} ms exceeds {fn} Timeout {timeouts[fn]} s"
                        )
                notes.append(f"{where}: streaming integration, timeoutInMillis={timeout_ms}")

    # 2. SQS event sources: queue visibility timeout >= 6x the consuming function's timeout.
    queues = _resources_of_type(cfn, "AWS::SQS::Queue")
    mappings = _resources_of_type(cfn, "AWS::Lambda::EventSourceMapping")
    consumed = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
        for m in mappings.values()
        if isinstance(m["Properties"].get("EventSourceArn"), dict) and "Fn::GetAtt" in m["Properties"]["EventSourceArn"]
    }
    dead_letter_targets = {
        (q["Properties"].get("RedrivePolicy") or {}).get("deadLetterTargetArn", {}).get("Fn::GetAtt", [None])[0]
        for q in queues.values()
    } - {None}
    for queue_id in dead_letter_targets & set(queues):
        if queue_id not in consumed and (queues[queue_id]["Properties"].get("RedrivePolicy") or None) is not None:
            raise CheckFailed(f"{queue_id}: a dead-letter queue with a redrive policy but no consumer")
    if not dead_letter_targets & consumed:
        raise CheckFailed("no dead-letter consumer: a job SQS gave up on would stay queued/running")
    for esm_id, esm in mappings.items():
        props = esm["Properties"]
        source = props.get("EventSourceArn")
        if not (isinstance(source, dict) and "Fn::GetAtt" in source):
            continue
        queue_id = source["Fn::GetAtt"][0]
        if queue_id not in queues:
            continue
        fn_id = props["FunctionName"]["Ref"]
        visibility = int(queues[queue_id]["Properties"].get("VisibilityTimeout", 30))
        needed = 6 * timeouts[fn_id]
        if visibility < needed:
            raise CheckFailed(f"{queue_id}: VisibilityTimeout {visibility} s < 6 x {fn_id} Timeout ({needed} s)")
        if "ReportBatchItemFailures" not in (props.get("FunctionResponseTypes") or []):
            raise CheckFailed(f"{esm_id}: FunctionResponseTypes lacks ReportBatchItemFailures")
        notes.append(f"{queue_id}: VisibilityTimeout {visibility} s >= 6 x {fn_id} ({needed} s)")

        redrive = queues[queue_id]["Properties"].get("RedrivePolicy") or {}
        if not redrive:
            raise CheckFailed(f"{queue_id}: consumed by {fn_id} but has no RedrivePolicy (a poison message would loop)")
        if queue_id in dead_letter_targets:
            # 4. Nothing strands: the jobs DLQ has a consumer, which parks what it handled in the DLQ's
            #    own dead-letter queue; that one is consumed by nobody (it waits for a redrive).
            parked = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            if parked in consumed:
                raise CheckFailed(f"{parked}: the parked queue must not be consumed (messages wait for a redrive)")
            fn_env = (sam["Resources"][fn_id]["Properties"].get("Environment") or {}).get("Variables") or {}
            if fn_env.get("JOBS_PARKED_QUEUE_URL") != {"Ref": parked}:
                raise CheckFailed(f"{fn_id}: JOBS_PARKED_QUEUE_URL is not {parked}")
            notes.append(f"{queue_id}: dead letters consumed by {fn_id}, parked in {parked} (unconsumed)")
            continue

        # 3. The redrive policy parks a failing job after 3..5 receives, and the worker knows the count.
        max_receives = int(redrive.get("maxReceiveCount", 0))
        if not 3 <= max_receives <= 5:
            raise CheckFailed(f"{queue_id}: RedrivePolicy maxReceiveCount {max_receives} not in 3..5")
        fn_env = (sam["Resources"][fn_id]["Properties"].get("Environment") or {}).get("Variables") or {}
        if str(fn_env.get("JOBS_MAX_RECEIVE_COUNT")) != str(max_receives):
            raise CheckFailed(
                f"{fn_id}: JOBS_MAX_RECEIVE_COUNT {fn_env.get('JOBS_MAX_RECEIVE_COUNT')!r} != "
                f"{queue_id} maxReceiveCount {max_receives}"
            )
        notes.append(f"{queue_id}: maxReceiveCount {max_receives} == {fn_id} JOBS_MAX_RECEIVE_COUNT")
    return notes


def run_cfn_lint(path: Path, region: str) -> int:
    exe = Path(sys.executable).parent / "cfn-lint"
    cmd = [str(exe) if exe.exists() else (shutil.which("cfn-lint") or "cfn-lint")]
    cmd += ["--regions", region, "--append-rules", CFN_LINT_SERVERLESS_RULES, "--", str(path)]
    proc = subprocess.run(cmd, check=False)
    # cfn-lint exit code is a bit mask: 1 crash, 2 error, 4 warning, 8 informational.
    return proc.returncode & (1 | 2 | 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "template.expanded.json")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--no-lint", action="store_true", help="expand and check, skip cfn-lint")
    args = parser.parse_args(argv)

    # The translator resolves partition/region helpers through boto3 defaults as well.
    os.environ.setdefault("AWS_DEFAULT_REGION", args.region)
    # Quiet the translator's feature-toggle chatter; real problems surface as exceptions.
    logging.getLogger("samtranslator").setLevel(logging.ERROR)

    try:
        sam = load_sam_template(args.template)
        original = json.loads(json.dumps(sam))  # pristine copy for the invariant checks
        rewritten = rewrite_local_uris(sam)
        cfn = translate(sam, args.region)
        carry_linter_metadata(original, cfn)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(cfn, indent=2, sort_keys=False) + "\n")
        print(
            f"expanded {args.template.name} -> {args.output} ({len(cfn['Resources'])} resources; "
            f"dummy S3 URIs for: {', '.join(rewritten) or 'none'})"
        )
        for note in check_invariants(original, cfn):
            print(f"  ok: {note}")
    except CheckFailed as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1

    if args.no_lint:
        return 0
    status = run_cfn_lint(args.output, args.region)
    if status:
        print(f"FAIL: cfn-lint found problems in {args.output}", file=sys.stderr)
        return 1
    print(f"cfn-lint: {args.output.name} clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Least privilege and edge controls, read from the expanded template (SAM translated offline).

The SAM translator runs in-process (tools/expand_template.py, no AWS call), so these assertions
hold for the CloudFormation that a deployment creates: the generated roles, stage and event source
mapping, not only the SAM shorthand.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from llm_gateway.chat.streaming import STREAM_OUTCOMES
from llm_gateway.conversations.store import DynamoConversationStore, conversation_pk
from llm_gateway.jobs.store import job_pk
from llm_gateway.jobs.worker import IDEMPOTENCY_PREFIX
from llm_gateway.responses.store import response_pk
from llm_gateway.security.api_keys import ApiKeyStore
from local.resources import _resources, create_table, load_template
from tools import expand_template

# Stream outcomes that are not failures of ours: everything else must page someone.
BENIGN_STREAM_OUTCOMES = {"complete", "client_disconnect"}


@pytest.fixture(scope="module")
def expanded() -> tuple[dict[str, Any], dict[str, Any]]:
    sam = expand_template.load_sam_template(expand_template.ROOT / "template.yaml")
    original = json.loads(json.dumps(sam))
    expand_template.rewrite_local_uris(sam)
    cfn = expand_template.translate(sam, "us-east-1")
    expand_template.carry_linter_metadata(original, cfn)
    return original, cfn


@pytest.fixture(scope="module")
def cfn(expanded):
    return expanded[1]


def of_type(cfn: dict, rtype: str) -> dict[str, dict]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == rtype}


def default(cfn: dict, ref: Any) -> Any:
    """The default value of the parameter a {"Ref": name} points at."""
    assert isinstance(ref, dict) and set(ref) == {"Ref"}, ref
    return cfn["Parameters"][ref["Ref"]]["Default"]


def conditional_param(cfn: dict, value: Any) -> tuple[str, dict]:
    """{"Fn::If": [cond, {"Ref": P}, {"Ref": "AWS::NoValue"}]} -> (cond, {"Ref": P})."""
    cond, yes, no = value["Fn::If"]
    assert no == {"Ref": "AWS::NoValue"}
    return cond, yes


def statements(role: dict) -> list[dict]:
    out = []
    for policy in role["Properties"].get("Policies", []):
        # A conditional SAM policy becomes an Fn::If around the whole policy.
        policy = policy["Fn::If"][1] if "Fn::If" in policy else policy
        out += policy["PolicyDocument"]["Statement"]
    return out


def actions(stmt: dict) -> list[str]:
    a = stmt["Action"]
    return [a] if isinstance(a, str) else a


def dynamodb_statements(role: dict) -> list[dict]:
    return [s for s in statements(role) if any(a.startswith("dynamodb:") for a in actions(s))]


def leading_key_patterns(stmt: dict) -> list[str]:
    return stmt["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]


def covered(key: str, patterns: list[str]) -> bool:
    # IAM StringLike: * matches any run of characters, like fnmatch without [] classes.
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def test_stage_throttling_and_json_access_logs(cfn):
    (stage,) = of_type(cfn, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    (settings,) = props["MethodSettings"]
    assert settings["ResourcePath"] == "/*" and settings["HttpMethod"] == "*"
    assert default(cfn, settings["ThrottlingRateLimit"]) > 0
    assert default(cfn, settings["ThrottlingBurstLimit"]) >= default(cfn, settings["ThrottlingRateLimit"])

    logs = props["AccessLogSetting"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert of_type(cfn, "AWS::Logs::LogGroup")["ApiAccessLogGroup"]["Properties"]["RetentionInDays"]
    line = json.loads(logs["Format"])  # one JSON object per request
    assert {"requestId", "status", "ip", "responseLatency", "integrationStatus", "wafStatus"} <= set(line)
    variables = " ".join(line.values())
    # Nothing that can carry a key, a cursor or a prompt.
    for secret in ("header", "querystring", "requestOverride", "authorizer"):
        assert secret not in variables.lower()


def test_reserved_concurrency_for_both_functions_and_event_source_maximum_concurrency(cfn):
    functions = of_type(cfn, "AWS::Lambda::Function")
    reserved = {}
    for name in ("ApiFunction", "WorkerFunction"):
        cond, ref = conditional_param(cfn, functions[name]["Properties"]["ReservedConcurrentExecutions"])
        # -1 (and only -1) means unreserved; the default reserves capacity.
        assert cfn["Conditions"][cond] == {"Fn::Not": [{"Fn::Equals": [ref, -1]}]}
        assert cfn["Parameters"][ref["Ref"]]["MinValue"] == -1
        reserved[name] = default(cfn, ref)
        assert reserved[name] >= 1

    (esm,) = [
        m
        for m in of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "WorkerFunction"}
    ]
    maximum = default(cfn, esm["Properties"]["ScalingConfig"]["MaximumConcurrency"])
    assert 2 <= maximum <= reserved["WorkerFunction"]  # above the reservation the mapping is throttled


def test_bedrock_is_limited_to_the_configured_model_arns(cfn):
    roles = of_type(cfn, "AWS::IAM::Role")
    for name in ("ApiFunctionRole", "WorkerFunctionRole"):
        bedrock = [s for s in statements(roles[name]) if any(a.startswith("bedrock:") for a in actions(s))]
        assert bedrock, name
        for stmt in bedrock:
            assert stmt["Resource"] == {"Ref": "BedrockModelArns"}
            assert set(actions(stmt)) == {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
        # Present only when some ARNs are configured: no Bedrock permission by default.
        (policy,) = [p for p in roles[name]["Properties"]["Policies"] if "bedrock:" in json.dumps(p)]
        assert policy["Fn::If"][0] == "HasBedrockModels" and policy["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    assert cfn["Parameters"]["BedrockModelArns"]["Type"] == "CommaDelimitedList"
    assert "bedrock:*" not in json.dumps(cfn) and "foundation-model/*" not in json.dumps(cfn)


def test_dynamodb_actions_and_leading_keys_per_function(cfn):
    roles = of_type(cfn, "AWS::IAM::Role")
    api, worker = (dynamodb_statements(roles[n]) for n in ("ApiFunctionRole", "WorkerFunctionRole"))
    for stmts in (api, worker):
        assert stmts
        for stmt in stmts:
            assert "dynamodb:Scan" not in actions(stmt) and "dynamodb:*" not in actions(stmt)
            assert not {"dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:CreateTable"} & set(actions(stmt))
            assert leading_key_patterns(stmt)  # every DynamoDB grant is scoped by key prefix

    api_patterns = [p for s in api for p in leading_key_patterns(s)]
    worker_patterns = [p for s in worker for p in leading_key_patterns(s)]
    tenant_keys = [
        conversation_pk("acme", "conv_1"),
        job_pk("acme", "job_1"),
        response_pk("acme", "resp_1"),
        "T#acme#IK#0123abcd",
    ]
    api_key_item = "APIKEY#" + "ab" * 32
    for key in tenant_keys + [api_key_item, "APIKEYS", "T#acme#CONV"]:
        assert covered(key, api_patterns), key
    for key in tenant_keys + [IDEMPOTENCY_PREFIX + "jobs#0123abcd"]:
        assert covered(key, worker_patterns), key
    # The worker can neither read nor rewrite API-key items, nor list them through GSI1.
    assert not covered(api_key_item, worker_patterns) and not covered("APIKEYS", worker_patterns)
    assert not any("index" in json.dumps(s["Resource"]) for s in worker)
    assert not any("dynamodb:BatchWriteItem" in actions(s) for s in worker)


def test_worker_may_change_the_visibility_of_jobs_queue_messages_only(cfn):
    roles = of_type(cfn, "AWS::IAM::Role")
    worker = [s for s in statements(roles["WorkerFunctionRole"]) if "sqs:ChangeMessageVisibility" in actions(s)]
    assert [s["Resource"] for s in worker] == [{"Fn::GetAtt": ["JobsQueue", "Arn"]}]
    api = [s for s in statements(roles["ApiFunctionRole"]) if "sqs:ChangeMessageVisibility" in actions(s)]
    assert api == []


def test_optional_waf_association_targets_the_stage(cfn):
    assoc = of_type(cfn, "AWS::WAFv2::WebACLAssociation")["ApiWebAclAssociation"]
    assert assoc["Condition"] == "HasWebAcl"
    assert cfn["Conditions"]["HasWebAcl"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "WebAclArn"}, ""]}]}
    assert assoc["Properties"]["WebACLArn"] == {"Ref": "WebAclArn"}
    assert "/stages/" in json.dumps(assoc["Properties"]["ResourceArn"])
    assert default(cfn, {"Ref": "WebAclArn"}) == ""


def test_alarms_cover_in_stream_failures_upstream_errors_throttles_and_dead_letter_age(cfn):
    alarms = of_type(cfn, "AWS::CloudWatch::Alarm")
    filters = of_type(cfn, "AWS::Logs::MetricFilter")
    by_metric: dict[str, list[str]] = {}
    for f in filters.values():
        (transform,) = f["Properties"]["MetricTransformations"]
        by_metric.setdefault(transform["MetricName"], []).append(f["Properties"]["FilterPattern"])

    failures = set(STREAM_OUTCOMES) - BENIGN_STREAM_OUTCOMES
    assert failures
    (stream_pattern,) = by_metric["StreamFailures"]
    for outcome in failures:  # a new failure outcome in the code must be alarmed too
        assert f"$.StreamOutcome_{outcome} = 1" in stream_pattern, outcome
    for outcome in BENIGN_STREAM_OUTCOMES:
        assert f"StreamOutcome_{outcome}" not in stream_pattern
    assert alarms["StreamFailuresAlarm"]["Properties"]["MetricName"] == "StreamFailures"

    assert len(by_metric["RequestsWithUpstreamErrors"]) == 2 and len(by_metric["RequestsCallingUpstream"]) == 2
    for pattern in by_metric["RequestsWithUpstreamErrors"]:
        for error_class in ("server_error", "timeout", "connection", "rate_limited", "auth", "other"):
            assert f"$.UpstreamErrors_{error_class} > 0" in pattern
    rate = json.dumps(alarms["UpstreamErrorRateAlarm"]["Properties"]["Metrics"])
    assert "RequestsWithUpstreamErrors" in rate and "RequestsCallingUpstream" in rate

    throttles = json.dumps(alarms["FunctionThrottlesAlarm"]["Properties"]["Metrics"])
    assert '"Throttles"' in throttles and '"ApiFunction"' in throttles and '"WorkerFunction"' in throttles
    dlq_age = alarms["JobsDeadLetterAgeAlarm"]["Properties"]
    assert dlq_age["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert dlq_age["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["JobsParkedQueue", "QueueName"]}


def test_dead_letter_consumer_is_subscribed_least_privileged_and_alarmed(expanded):
    sam, cfn = expanded
    (esm,) = [
        m
        for m in of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "DeadLetterFunction"}
    ]
    assert esm["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    assert esm["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queues = of_type(cfn, "AWS::SQS::Queue")
    assert queues["JobsQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]
    }
    assert queues["JobsDeadLetterQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["JobsParkedQueue", "Arn"]
    }
    assert "RedrivePolicy" not in queues["JobsParkedQueue"]["Properties"]  # the last stop: waits for a redrive

    role = of_type(cfn, "AWS::IAM::Role")["DeadLetterFunctionRole"]
    stmts = statements(role)
    granted = sorted(a for st in stmts for a in actions(st))
    # (the SQS event source's receive/delete come with the managed execution policy SAM attaches)
    assert granted == ["dynamodb:GetItem", "dynamodb:UpdateItem", "sqs:SendMessage"]
    (ddb,) = dynamodb_statements(role)
    patterns = leading_key_patterns(ddb)
    assert covered(job_pk("acme", "job_1"), patterns)
    for other in (conversation_pk("acme", "conv_1"), response_pk("acme", "resp_1"), "APIKEY#" + "ab" * 32):
        assert not covered(other, patterns), other
    (send,) = [st for st in stmts if "sqs:SendMessage" in actions(st)]
    assert send["Resource"] == {"Fn::GetAtt": ["JobsParkedQueue", "Arn"]}

    alarm = of_type(cfn, "AWS::CloudWatch::Alarm")["DeadLetterFunctionErrorsAlarm"]["Properties"]
    assert alarm["MetricName"] == "Errors" and alarm["Dimensions"][0]["Value"] == {"Ref": "DeadLetterFunction"}
    assert expand_template.check_invariants(sam, cfn)  # the expanded-template invariants hold (DLQ consumer included)


def test_every_linter_skip_is_justified(expanded):
    original, cfn = expanded
    text = (expand_template.ROOT / "template.yaml").read_text().splitlines()
    for resource in list(original["Resources"].values()) + list(cfn["Resources"].values()):
        meta = resource.get("Metadata") or {}
        for skip in (meta.get("checkov") or {}).get("skip", []):
            assert len(skip.get("comment", "")) > 20, skip
        for rule in ((meta.get("cfn-lint") or {}).get("config") or {}).get("ignore_checks", []):
            # cfn-lint takes no comment field: the justification is the YAML comment on the line.
            lines = [line for line in text if line.strip().startswith(f"- {rule} #")]
            assert lines and len(lines[0].split("#", 1)[1].strip()) > 20, rule
    # The stage and event source mapping SAM generates carry their SAM resource's skips.
    (stage,) = of_type(cfn, "AWS::ApiGateway::Stage").values()
    assert {"CKV_AWS_120", "CKV_AWS_73"} <= {s["id"] for s in stage["Metadata"]["checkov"]["skip"]}
    mappings = of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
    assert len(mappings) == 2  # the worker's and the dead-letter consumer's
    for esm in mappings:
        assert "ES1001" in esm["Metadata"]["cfn-lint"]["config"]["ignore_checks"]


def test_gsi1_projects_what_its_queries_read_and_not_the_system_prompt():
    """moto applies the template's projection; both GSI1 queries still return whole records."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        (props,) = _resources(load_template(), "AWS::DynamoDB::Table").values()
        (gsi,) = props["GlobalSecondaryIndexes"]
        assert gsi["Projection"]["ProjectionType"] == "INCLUDE"
        assert "system" not in gsi["Projection"]["NonKeyAttributes"]
        create_table(client, "gsi-test", props)

        store = DynamoConversationStore("gsi-test", client=client)
        made = store.create("acme", model="default", system="S" * 5000, system_tokens=1200, metadata={"k": "v"})
        # Every counter the listing shows, non-zero, so a counter left out of the projection shows.
        client.update_item(
            TableName="gsi-test",
            Key={"PK": {"S": conversation_pk("acme", made.id)}, "SK": {"S": "META"}},
            UpdateExpression="SET message_count = :m, deleted_messages = :d, prompt_tokens = :p, "
            "completion_tokens = :c, cost_usd = :u, updated_at = :t",
            ExpressionAttributeValues={
                ":m": {"N": "7"},
                ":d": {"N": "2"},
                ":p": {"N": "120"},
                ":c": {"N": "45"},
                ":u": {"N": "0.0125"},
                ":t": {"N": str(made.created_at + 5000)},
            },
        )
        (listed,), _ = store.list_conversations("acme", limit=10, after=None)
        expected = {k: v for k, v in store.get("acme", made.id).public().items() if k != "system"}
        assert {k: v for k, v in listed.public().items() if k != "system"} == expected
        raw = client.query(
            TableName="gsi-test",
            IndexName="GSI1",
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues={":pk": {"S": "T#acme#CONV"}},
        )["Items"]
        assert "system" not in raw[0] and "version" not in raw[0]  # the prompt is written once

        keys = ApiKeyStore("gsi-test", client=client)
        _, record = keys.create("acme", "ci", admin=True)  # every field of the record survives the index
        assert keys.list("acme") == [record] and record.admin
        assert keys.revoke(record.key_id).revoked
